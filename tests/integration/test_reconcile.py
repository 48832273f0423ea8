"""Reconciliation against the CallRail simulator, Spanner and Pub/Sub emulators, and the
running functions: a call whose Post-Call never came is queued and goes through the whole
pipeline; known and too recent calls are left alone; a second run queues nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from callpipe.callrail.client import CallRailClient, ClientSettings
from callpipe.devstack.stack import LocalStack
from callpipe.publishing import PubSubPublisher
from callpipe.reconcile import Reconciled, Reconciler, SpannerKnownCalls
from callpipe.tenancy import TenantRepository
from tests.conftest import TEST_API_KEY, Tap, Tenant
from tests.integration.test_fetch_and_download import add_call, call_row, send, wait_for
from tests.integration.test_intake_to_registered import wait_for_log_line


def started(stack: LocalStack, call: dict[str, Any], ago: timedelta) -> None:
    """Move the simulator's call to ``ago`` before now."""
    call["start_time"] = (datetime.now(UTC) - ago).isoformat()
    path = stack.simulator_data_dir / "calls" / f"{call['id']}.json"
    path.write_text(json.dumps(call))


def reconciler(stack: LocalStack, database: Any) -> Reconciler:
    settings = ClientSettings(base_url=f"{stack.simulator_url}/v3")
    repository = TenantRepository(database)
    return Reconciler(
        repository.get_tenant,
        repository.find_company,
        lambda tenant_id: TEST_API_KEY,
        lambda key: CallRailClient(key, settings),
        SpannerKnownCalls(database),
        PubSubPublisher(stack.config.project),
        "calls.received",
    )


def outcomes(results: list[Reconciled]) -> dict[str, str]:
    return {r.call_id: r.outcome for r in results}


def test_a_call_whose_post_call_never_came_is_queued_once_and_completes(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    stack = functions_running
    tenant = make_tenant()
    delivered = add_call(stack, tenant, "kitchen")
    lost = add_call(stack, tenant, "bathroom")
    recent = add_call(stack, tenant, "missed")
    started(stack, delivered, timedelta(hours=3))
    started(stack, lost, timedelta(hours=2))
    started(stack, recent, timedelta(minutes=5))
    send(stack, tenant, delivered)
    wait_for(lambda: call_row(database, tenant, delivered["id"]), what="the delivered call")
    since = datetime.now(UTC) - timedelta(days=1)

    looked = list(reconciler(stack, database).run(tenant.tenant_id, since, dry_run=True))
    assert outcomes(looked) == {
        delivered["id"]: "known",
        lost["id"]: "missing",
        recent["id"]: "too_recent",
    }
    assert call_row(database, tenant, lost["id"]) is None  # a dry run queues nothing

    done = list(reconciler(stack, database).run(tenant.tenant_id, since))
    assert outcomes(done)[lost["id"]] == "queued"

    def completed() -> dict[str, Any] | None:
        row = call_row(database, tenant, lost["id"])
        return row if row and row["stage"] == "persist" and row["status"] == "ok" else None

    row = wait_for(completed, timeout=240, what="the reconciled call to complete")
    assert row["recording_status"] == "stored"  # fetched and downloaded like any call

    # The Post-Call arrives after all (CallRail's delivery was late, not lost): accepted,
    # and taken for the event the reconciliation queued, so the call is not done twice.
    correlation_id = send(stack, tenant, lost)
    line = wait_for_log_line(stack.log_dir / "function-register-call.log", correlation_id)
    assert (line["outcome"], line["call_id"]) == ("duplicate", lost["id"])
    assert call_row(database, tenant, lost["id"]) == row

    again = list(reconciler(stack, database).run(tenant.tenant_id, since))
    assert outcomes(again)[lost["id"]] == "known"


def test_the_cli_lists_what_it_would_queue(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    from tests.integration.test_cli_and_stack import run_cli

    tenant = make_tenant()
    lost = add_call(stack, tenant, "bathroom")
    started(stack, lost, timedelta(hours=2))

    result = run_cli("reconcile", tenant.tenant_id, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"missing  {lost['id']}" in result.stdout
    assert "1 call since" in result.stderr and "1 missing" in result.stderr
    assert call_row(database, tenant, lost["id"]) is None

    unknown = run_cli("reconcile", "no-such-tenant")
    assert unknown.returncode == 1 and "no tenant no-such-tenant" in unknown.stderr
    bad = run_cli("reconcile", tenant.tenant_id, "--since", "last week")
    assert bad.returncode == 1 and "--since 'last week'" in bad.stderr


def test_the_reconcile_function_queues_a_tenants_lost_call_and_dead_letters_what_it_cannot(
    functions_running: LocalStack,
    make_tenant: Callable[..., Tenant],
    database: Any,
    tap: Callable[[str], Tap],
) -> None:
    """What the hourly schedule leads to, for one tenant: a ReconcileRequested on its topic
    reaches the running reconcile step, whose queued call goes through every step."""
    from callpipe.config import Settings
    from callpipe.messages import ReconcileRequested
    from callpipe.wiring import build_publisher

    stack = functions_running
    tenant = make_tenant()
    lost = add_call(stack, tenant, "bathroom")
    started(stack, lost, timedelta(hours=2))
    dead = tap("reconcile.requested.dlq")
    publisher = build_publisher(Settings())

    request = ReconcileRequested(
        tenant_id=tenant.tenant_id, since=datetime.now(UTC) - timedelta(days=1)
    )
    publisher.publish("reconcile.requested", request.to_data(), request.attributes())

    def completed() -> dict[str, Any] | None:
        row = call_row(database, tenant, lost["id"])
        return row if row and row["stage"] == "persist" and row["status"] == "ok" else None

    row = wait_for(completed, timeout=240, what="the call the reconcile step queued")
    assert row["recording_status"] == "stored"

    gone = f"gone-{uuid.uuid4().hex[:8]}"
    unknown = ReconcileRequested(tenant_id=gone)
    publisher.publish("reconcile.requested", unknown.to_data(), unknown.attributes())
    letters = [m for m in dead.drain(expect=1) if m.attributes.get("tenant_id") == gone]
    assert len(letters) == 1
    assert letters[0].attributes["dlq_reason"] == "not_reconcilable"
    assert letters[0].attributes["dlq_step"] == "reconcile"
    assert f"no tenant {gone}" in letters[0].attributes["dlq_error"]


def test_the_scheduled_request_asks_for_each_onboarded_tenant_read_from_spanner(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """The fan-out over the real tenant rows (the running step is left out: it would
    reconcile every tenant other tests made)."""
    from callpipe.messages import ReconcileRequested
    from callpipe.reconciling import ReconcileStep
    from tests.unit.conftest import RecordingPublisher

    first, second = make_tenant(), make_tenant()
    publisher = RecordingPublisher()
    now = datetime.now(UTC)
    result = ReconcileStep(
        TenantRepository(database).list_tenants,
        reconciler(stack, database),
        publisher,
        "reconcile.requested",
        lookback=timedelta(hours=48),
        max_calls=200,
        clock=lambda: now,
    )(ReconcileRequested())

    asked = {
        request.tenant_id: request
        for request in (ReconcileRequested.from_data(m.data) for m in publisher.messages)
    }
    assert {first.tenant_id, second.tenant_id} <= set(asked)
    assert asked[first.tenant_id].since == now - timedelta(hours=48)
    assert result["tenants"] == len(asked)
    assert {m.topic for m in publisher.messages} == {"reconcile.requested"}
