"""Session fixtures: one local stack (emulators on free ports) for the tests that need it.

Tests that use ``stack`` talk to the real Pub/Sub emulator, Spanner emulator and
fake-gcs-server through the real google-cloud clients. The stack starts on first use and
stops (whole process groups) at the end of the session, pass or fail.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from callpipe.devstack.emulators import EmulatorPorts
from callpipe.devstack.processes import free_port
from callpipe.devstack.stack import LocalStack, StackConfig
from callpipe.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
EVENTS = Path(__file__).resolve().parent / "events"

# The CallRail account the test stack's simulator serves, and its API key.
TEST_ACCOUNT = "700000001"
TEST_API_KEY = "test-api-key-" + secrets.token_hex(8)


def fast_retry_topology() -> Any:
    """The real topology with Pub/Sub's retry backoff at 1-2 s, so tests that go through
    several redeliveries finish in seconds (everything else is unchanged)."""
    from callpipe.topology import RetrySettings, load_topology

    topology = load_topology()
    defaults = topology.defaults.model_copy(
        update={"retry": RetrySettings(minimum_backoff_seconds=1, maximum_backoff_seconds=2)}
    )
    return topology.model_copy(update={"defaults": defaults})


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    ports = EmulatorPorts(
        pubsub=free_port(), spanner_grpc=free_port(), spanner_rest=free_port(), gcs=free_port()
    )
    state_dir = tmp_path_factory.mktemp("stack")
    data_dir = state_dir / "callrail-data"
    (data_dir / "calls").mkdir(parents=True)
    config = StackConfig(
        project="callpipe-test",
        ports=ports,
        state_dir=state_dir,
        function_ports={step: free_port() for step in load_topology().steps},
        push=True,
        simulator_port=free_port(),
        simulator_data_dir=data_dir,
        simulator_rate_limit_per_minute=600,
        simulator_accounts={TEST_ACCOUNT: TEST_API_KEY},
        # The smallest packaged Whisper model keeps the CPU free for the other steps.
        function_env={"LOCAL_WHISPER_MODEL": "tiny.en"},
    )
    local = LocalStack(config, fast_retry_topology())
    saved = dict(os.environ)
    try:
        local.start_emulators()
        local.provision()  # also exports the stack's environment to this process
        local.start_simulator()
        os.environ["ENVIRONMENT"] = "test"
        from callpipe.config import get_settings

        get_settings.cache_clear()
        yield local
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def functions_running(stack: LocalStack) -> LocalStack:
    """Every step served by functions-framework (gunicorn), wired by push subscriptions."""
    stack.start_functions()
    return stack


@pytest.fixture(scope="session")
def database(stack: LocalStack) -> Any:
    from callpipe.config import Settings
    from callpipe.spanner_db import open_database

    return open_database(Settings())


@dataclass
class Tenant:
    tenant_id: str
    company_id: str
    legacy_company_id: str
    account_id: str
    office_id: str
    token: str
    token_id: str


@pytest.fixture
def make_tenant(stack: LocalStack, database: Any) -> Callable[..., Tenant]:
    """Onboard a fresh tenant (unique ids, so tests never see each other's data)."""
    from callpipe.secrets import LocalSecretStore
    from callpipe.tenancy import OnboardingRequest, TenantRepository

    def make(**overrides: Any) -> Tenant:
        suffix = uuid.uuid4().hex[:10]
        token = overrides.pop("token", secrets.token_urlsafe(24))
        request = OnboardingRequest(
            tenant_id=overrides.pop("tenant_id", f"t-{suffix}"),
            name=overrides.pop("name", f"Tenant {suffix}"),
            callrail_account_id=overrides.pop("callrail_account_id", TEST_ACCOUNT),
            callrail_company_id=overrides.pop("callrail_company_id", f"COM{uuid.uuid4().hex}"),
            legacy_company_id=overrides.pop(
                "legacy_company_id", str(100000000 + int(suffix[:7], 16) % 100000000)
            ),
            office_id=overrides.pop("office_id", "main"),
            time_zone=overrides.pop("time_zone", None),
            signing_tokens=[token],
            api_key=overrides.pop("api_key", TEST_API_KEY),
        )
        assert not overrides, f"unknown overrides {overrides}"
        token_ids = TenantRepository(database).onboard(request, LocalSecretStore(stack.secrets_dir))
        return Tenant(
            tenant_id=request.tenant_id,
            company_id=request.callrail_company_id,
            legacy_company_id=request.legacy_company_id or "",
            account_id=request.callrail_account_id,
            office_id=request.office_id,
            token=token,
            token_id=token_ids[0],
        )

    return make


def register_in_spanner(database: Any, message: Any, payload: dict[str, Any]) -> None:
    """The rows register-call leaves for a forwarded event (a CallReceived ``message``):
    the event's, the call's and its register stage."""
    from callpipe.registration import EventState, SpannerEventLedger

    ledger = SpannerEventLedger(database)
    ledger.claim(message, "gs://webhook-archive/test.json")
    ledger.start_call(message, payload)
    ledger.mark(message, EventState.FORWARDED)


def post_call_body(tenant: Tenant, call_id: str | None = None, **changes: Any) -> bytes:
    from callpipe.demo import sample_post_call

    payload = sample_post_call(
        company_id=tenant.company_id,
        legacy_company_id=tenant.legacy_company_id,
        account_id=tenant.account_id,
        call_id=call_id,
    )
    payload.update(changes)
    return json.dumps(payload).encode("utf-8")


class Tap:
    """A pull subscription created by a test on a topic, to see what was published."""

    def __init__(self, project: str, topic: str) -> None:
        from google.cloud import pubsub_v1

        self.subscriber = pubsub_v1.SubscriberClient()
        self.name = f"tap-{topic}-{uuid.uuid4().hex[:8]}"
        self.path = self.subscriber.subscription_path(project, self.name)
        self.subscriber.create_subscription(
            request={"name": self.path, "topic": f"projects/{project}/topics/{topic}"}
        )

    def drain(self, expect: int = 0, settle: float = 1.5, timeout: float = 20.0) -> list[Any]:
        """Pull until ``expect`` messages came, then ``settle`` s more to catch extras."""
        from google.api_core import exceptions

        received: list[Any] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and len(received) >= expect:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.path, "max_messages": 100}, timeout=1
                )
                batch = list(response.received_messages)
            except exceptions.DeadlineExceeded:
                batch = []
            if batch:
                self.subscriber.acknowledge(
                    request={"subscription": self.path, "ack_ids": [m.ack_id for m in batch]}
                )
                received.extend(m.message for m in batch)
            else:
                time.sleep(0.1)
        return received


@pytest.fixture
def tap(stack: LocalStack) -> Callable[[str], Tap]:
    def make(topic: str) -> Tap:
        return Tap(stack.config.project, topic)

    return make
