"""End to end on the emulators: intake and register-call served by functions-framework
(gunicorn) and wired by the emulator's push subscriptions, exactly as `make run` does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from callpipe.devstack.stack import LocalStack
from tests.conftest import Tap, Tenant, post_call_body


def sign(token: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha1).digest()).decode()


def deliver(stack: LocalStack, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Signature"] = signature
    return httpx.post(
        f"{stack.function_url('intake')}/api/v1/callrail/webhook",
        content=body,
        headers=headers,
        timeout=15,
    )


def mine(messages: list[Any], tenant: Tenant) -> list[Any]:
    return [m for m in messages if m.attributes.get("tenant_id") == tenant.tenant_id]


def test_signed_webhook_reaches_calls_received_with_attributes(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    tenant = make_tenant()
    received = tap("calls.received")
    body = post_call_body(tenant)
    response = deliver(functions_running, body, sign(tenant.token, body))
    assert response.status_code == 202
    messages = mine(received.drain(expect=1), tenant)
    assert len(messages) == 1
    attrs = dict(messages[0].attributes)
    assert attrs["kind"] == "call.received"
    assert attrs["call_id"] == json.loads(body)["resource_id"]
    assert attrs["office_id"] == tenant.office_id
    assert attrs["event_type"] == "post_call"
    assert attrs["correlation_id"] == response.json()["correlation_id"]

    # the one structured line of the request, written by the gunicorn worker's log writer
    line = wait_for_log_line(
        functions_running.log_dir / "function-intake.log", response.json()["correlation_id"]
    )
    assert line["outcome"] == "accepted"
    assert line["call_id"] == attrs["call_id"]
    assert line["tenant_id"] == tenant.tenant_id


def wait_for_log_line(path: Path, correlation_id: str, seconds: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if correlation_id in text and text.startswith("{"):
                entry: dict[str, Any] = json.loads(text)
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no log line with correlation id {correlation_id} in {path}")


def test_duplicate_delivery_yields_one_call_downstream(
    functions_running: LocalStack,
    make_tenant: Callable[..., Tenant],
    tap: Callable[[str], Tap],
    database: Any,
) -> None:
    from google.cloud.spanner_v1 import param_types

    tenant = make_tenant()
    registered = tap("calls.registered")
    body = post_call_body(tenant)
    for _ in range(3):
        assert deliver(functions_running, body, sign(tenant.token, body)).status_code == 202
    out = mine(registered.drain(expect=1, settle=3.0), tenant)
    assert len(out) == 1
    assert out[0].attributes["kind"] == "call.registered"
    with database.snapshot() as snapshot:
        calls = list(
            snapshot.execute_sql(
                "SELECT c.CallId, (SELECT COUNT(*) FROM WebhookEvents e "
                "WHERE e.TenantId = c.TenantId AND e.CallId = c.CallId) FROM Calls c WHERE c.TenantId = @t",
                params={"t": tenant.tenant_id},
                param_types={"t": param_types.STRING},
            )
        )
    assert calls == [[json.loads(body)["resource_id"], 1]]


def test_rejected_webhooks_publish_nothing(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    tenant = make_tenant()
    received = tap("calls.received")
    body = post_call_body(tenant)
    stale = post_call_body(tenant, timestamp=(datetime.now(UTC) - timedelta(days=3)).isoformat())
    assert deliver(functions_running, body, sign("wrong-token-000", body)).status_code == 401
    assert deliver(functions_running, body, None).status_code == 401
    assert deliver(functions_running, stale, sign(tenant.token, stale)).status_code == 401
    assert (
        deliver(functions_running, b"{not json", sign(tenant.token, b"{not json")).status_code
        == 400
    )
    assert mine(received.drain(settle=2.0), tenant) == []


def test_quarantined_webhook_is_replayed_after_onboarding(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    from callpipe.config import Settings
    from callpipe.intake.wiring import build_intake_runtime
    from callpipe.replay import PullSubscription, replay_quarantine

    future = Tenant(
        "later",
        "COM" + uuid.uuid4().hex,
        "123456789",
        "700000001",
        "main",
        "token-for-later-onboarding",
        "",
    )
    body = post_call_body(future)
    response = deliver(functions_running, body, sign(future.token, body))
    assert response.status_code == 404

    tenant = make_tenant(
        callrail_company_id=future.company_id, token=future.token, legacy_company_id=None
    )
    registered = tap("calls.registered")
    intake = build_intake_runtime(Settings()).intake
    hold = PullSubscription(functions_running.config.project, "webhooks.quarantine.hold")
    results = [r for r in replay_quarantine(hold, intake, limit=100, company=future.company_id)]
    assert [r.outcome for r in results] == ["accepted"]
    out = mine(registered.drain(expect=1), tenant)
    assert [m.attributes["call_id"] for m in out] == [json.loads(body)["resource_id"]]
    # The quarantine no longer holds it: a second replay finds nothing for this company.
    assert list(replay_quarantine(hold, intake, limit=100, company=future.company_id)) == []


def test_dead_letter_replay_reaches_the_step_again(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    """A message dead-lettered earlier (say during an outage) is processed once replayed."""
    from callpipe.config import Settings
    from callpipe.replay import PullSubscription, replay_dead_letters
    from callpipe.wiring import build_publisher
    from tests.functional.test_register_call_function import received as make_received

    tenant = make_tenant()
    registered = tap("calls.registered")
    message = make_received(tenant, post_call_body(tenant))
    publisher = build_publisher(Settings())
    publisher.publish(
        "calls.received.dlq",
        message.to_data(),
        {**message.attributes(), "dlq_reason": "outage", "dlq_step": "register-call"},
    )
    hold = PullSubscription(functions_running.config.project, "calls.received.dlq.hold")
    results = list(
        replay_dead_letters(
            hold, publisher, "calls.received", limit=1000, match={"tenant_id": tenant.tenant_id}
        )
    )
    assert [r.attributes["call_id"] for r in results] == [message.call_id]
    out = mine(registered.drain(expect=1), tenant)
    assert len(out) == 1 and out[0].attributes["call_id"] == message.call_id


def test_queue_unavailable_is_503_not_500(
    stack: LocalStack, make_tenant: Callable[..., Tenant]
) -> None:
    """Pub/Sub refusing the message (here: the topic is missing) gives a clear 503."""
    from datetime import timedelta as td

    from callpipe.config import Settings
    from callpipe.intake.ratelimit import QuarantineBudgets, TokenBucket
    from callpipe.intake.service import IntakeConfig, IntakeRequest, WebhookIntake
    from callpipe.publishing import PubSubPublisher
    from callpipe.spanner_db import open_database
    from callpipe.tenancy import CompanyDirectory, TenantRepository
    from callpipe.wiring import build_secret_store

    settings = Settings()
    tenant = make_tenant()
    intake = WebhookIntake(
        IntakeConfig("topic-that-does-not-exist", "webhooks.quarantine", 1_048_576, td(hours=24)),
        CompanyDirectory(
            TenantRepository(open_database(settings)).find_company,
            build_secret_store(settings),
            60,
            10,
        ),
        PubSubPublisher(settings.google_cloud_project, timeout_seconds=5),
        QuarantineBudgets(TokenBucket(10), TokenBucket(10), TokenBucket(10)),
    )
    body = post_call_body(tenant)
    outcome = intake.handle(
        IntakeRequest(
            "POST",
            "/api/v1/callrail/webhook",
            {"Content-Type": "application/json", "Signature": sign(tenant.token, body)},
            body,
        )
    )
    assert outcome.status == 503
    assert outcome.body["error"] == "queue_unavailable"


def test_signing_token_rotation(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    from callpipe.secrets import LocalSecretStore
    from callpipe.tenancy import CompanyDirectory, RevokeOutcome, TenantRepository

    tenant = make_tenant()
    repo = TenantRepository(database)
    store = LocalSecretStore(stack.secrets_dir)
    new_id = repo.add_signing_token(tenant.company_id, "the-rotated-token-1", store)
    directory = CompanyDirectory(repo.find_company, store, ttl_seconds=60, negative_ttl_seconds=5)
    resolved = directory.resolve([tenant.company_id])
    assert resolved is not None
    assert {t.token_id for t in resolved.tokens} == {tenant.token_id, new_id}

    revocation = repo.revoke_signing_token(tenant.company_id, tenant.token_id)
    assert revocation.outcome is RevokeOutcome.REVOKED
    assert directory.resolve([tenant.company_id]) == resolved  # cached until the TTL
    directory.invalidate()
    after = directory.resolve([tenant.company_id])
    assert after is not None and [t.token_id for t in after.tokens] == [new_id]
    assert directory.resolve([tenant.legacy_company_id]) == after
