"""The reconcile step with in-memory doubles: the scheduled request fans out to one request
per tenant that can be reconciled, and a tenant's request queues its missing calls within
the window and the per-run limit, with failures mapped to the step contract."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from callpipe.callrail.client import CallRailAuthError, CallRailUnavailable
from callpipe.messages import CallReceived, ReconcileRequested
from callpipe.ratelimit import RateLimited
from callpipe.reconciling import ReconcileStep
from callpipe.steps import PermanentError
from callpipe.tenancy import TenantRecord
from tests.unit.conftest import COMPANY_ID, TENANT_ID, RecordingPublisher
from tests.unit.test_reconcile import NOW, CallRail, call, reconciler, tenant

TOPIC = "reconcile.requested"


def step(
    callrail: CallRail | None = None,
    tenants: Sequence[TenantRecord] = (),
    publisher: RecordingPublisher | None = None,
    known: set[str] | None = None,
    max_calls: int = 200,
) -> ReconcileStep:
    publisher = publisher or RecordingPublisher()
    return ReconcileStep(
        lambda: list(tenants),
        reconciler(callrail or CallRail([]), known, publisher=publisher),
        publisher,
        TOPIC,
        lookback=timedelta(hours=48),
        max_calls=max_calls,
        clock=lambda: NOW,
    )


def other(tenant_id: str, **changes: Any) -> TenantRecord:
    return dataclasses.replace(tenant(), tenant_id=tenant_id, **changes)


def test_the_scheduled_request_asks_once_per_tenant_that_can_be_reconciled() -> None:
    publisher = RecordingPublisher()
    tenants = [
        tenant(),
        other("beta-roofing"),
        other("paused-co", status="suspended"),
        other("no-account", callrail_account_id=None),
        other("no-key", api_key_secret=None),
        other("no-company", companies=()),
    ]
    result = step(tenants=tenants, publisher=publisher)(ReconcileRequested(correlation_id="c1"))

    asked = [ReconcileRequested.from_data(m.data) for m in publisher.on(TOPIC)]
    assert [r.tenant_id for r in asked] == [TENANT_ID, "beta-roofing"]
    # the window's start is fixed now, so a retried tenant looks at the same calls
    assert {r.since for r in asked} == {NOW - timedelta(hours=48)}
    assert {r.correlation_id for r in asked} == {"c1"}
    assert publisher.on(TOPIC)[1].attributes["tenant_id"] == "beta-roofing"
    assert result["tenants"] == 2
    assert result["skipped_tenants"] == {
        "suspended": 1,
        "no_callrail_account": 1,
        "no_api_key": 1,
        "no_company": 1,
    }
    assert not publisher.on("calls.received")  # the fan-out itself lists no calls


def test_a_tenants_request_queues_its_missing_calls_within_its_window() -> None:
    callrail = CallRail([call("CALlost", timedelta(hours=2)), call("CALseen", timedelta(hours=3))])
    publisher = RecordingPublisher()
    since = NOW - timedelta(hours=12)
    until = NOW - timedelta(hours=1)
    result = step(callrail, publisher=publisher, known={"CALseen"})(
        ReconcileRequested(tenant_id=TENANT_ID, since=since, until=until)
    )

    assert callrail.asked[0]["window"] == (since, until)
    assert [CallReceived.from_data(m.data).call_id for m in publisher.on("calls.received")] == [
        "CALlost"
    ]
    assert result["outcome"] == "reconciled"
    assert (result["known"], result["queued"], result["missing"]) == (1, 1, 0)


def test_without_a_window_a_tenants_request_looks_back_the_configured_hours() -> None:
    callrail = CallRail([])
    step(callrail)(ReconcileRequested(tenant_id=TENANT_ID))
    assert callrail.asked[0]["window"] == (NOW - timedelta(hours=48), None)


def test_at_most_the_per_run_limit_is_queued_unless_the_request_says_otherwise() -> None:
    calls = [call(f"CAL{n}", timedelta(hours=2)) for n in range(5)]
    publisher = RecordingPublisher()
    result = step(CallRail(calls), publisher=publisher, max_calls=2)(
        ReconcileRequested(tenant_id=TENANT_ID)
    )
    assert (result["queued"], result["missing"]) == (2, 3)  # the rest wait for the next run

    publisher = RecordingPublisher()
    result = step(CallRail(calls), publisher=publisher, max_calls=2)(
        ReconcileRequested(tenant_id=TENANT_ID, limit=4)
    )
    assert (result["queued"], result["missing"]) == (4, 1)


def on(target: Any) -> ReconcileStep:
    return ReconcileStep(
        lambda: [],
        target,
        RecordingPublisher(),
        TOPIC,
        lookback=timedelta(hours=48),
        max_calls=200,
        clock=lambda: NOW,
    )


def test_a_tenant_that_cannot_be_reconciled_is_dead_lettered_with_the_reason() -> None:
    def no_key(tenant_id: str) -> str:
        raise LookupError("secret callrail-api-key-acme-dental not found")

    with pytest.raises(PermanentError) as raised:
        on(reconciler(CallRail([]), api_key=no_key))(ReconcileRequested(tenant_id=TENANT_ID))
    assert raised.value.reason == "not_reconcilable"
    assert "no CallRail API key" in raised.value.detail


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (reconciler(CallRail([]), record=other(TENANT_ID, status="suspended")), "suspended"),
        (reconciler(CallRail([]), inactive=[COMPANY_ID]), "no active CallRail company"),
    ],
)
def test_a_tenant_with_nothing_to_reconcile_is_done_not_dead_lettered(
    target: Any, why: str
) -> None:
    # asked every hour, a dead letter would fill the hold and keep its alert open for good
    result = on(target)(ReconcileRequested(tenant_id=TENANT_ID))
    assert result["outcome"] == "nothing_to_reconcile" and why in result["reason"]


def test_a_busy_rate_limit_ends_the_run_and_keeps_what_it_queued() -> None:
    lost = [call(f"CALlost{n:03}", timedelta(hours=2)) for n in range(100)]
    publisher = RecordingPublisher()
    result = step(Failing(lost, RateLimited("728790660", 30.0)), publisher=publisher)(
        ReconcileRequested(tenant_id=TENANT_ID)
    )
    assert result["outcome"] == "rate_limited" and result["queued"] == 100
    assert len(publisher.on("calls.received")) == 100


class Failing(CallRail):
    """Lists every call it was given, then fails the way ``error`` says."""

    def __init__(self, calls: list[dict[str, Any]], error: Exception) -> None:
        super().__init__(calls)
        self.error = error

    def iter_calls(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield from super().iter_calls(*args, **kwargs)
        raise self.error


def test_callrail_refusing_the_key_is_permanent_and_an_outage_is_retried() -> None:
    with pytest.raises(PermanentError) as raised:
        step(Failing([], CallRailAuthError("CallRail refused the API key (401)")))(
            ReconcileRequested(tenant_id=TENANT_ID)
        )
    assert raised.value.reason == "callrail_refused"

    with pytest.raises(CallRailUnavailable):
        step(Failing([], CallRailUnavailable("CallRail answered 503")))(
            ReconcileRequested(tenant_id=TENANT_ID)
        )


def test_calls_queued_before_a_failure_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    # a full page of calls is judged and queued before the listing fails
    lost = [call(f"CALlost{n:03}", timedelta(hours=2)) for n in range(100)]
    publisher = RecordingPublisher()
    with (
        caplog.at_level(logging.WARNING, logger="callpipe.reconciling"),
        pytest.raises(CallRailUnavailable),
    ):
        step(Failing(lost, CallRailUnavailable("503")), publisher=publisher)(
            ReconcileRequested(tenant_id=TENANT_ID)
        )

    assert len(publisher.on("calls.received")) == 100
    [record] = caplog.records
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["queued"] == 100 and fields["tenant_id"] == TENANT_ID
    assert fields["call_ids"] == [c["id"] for c in lost[:20]]  # the count says the rest


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(PermanentError) as raised:
        step()(
            ReconcileRequested(
                tenant_id=TENANT_ID, since=NOW - timedelta(hours=1), until=NOW - timedelta(hours=2)
            )
        )
    assert raised.value.reason == "invalid_window"


def test_a_request_with_a_time_without_zone_is_invalid() -> None:
    with pytest.raises(ValueError, match="timezone"):
        ReconcileRequested.from_data(b'{"tenant_id": "acme", "since": "2026-11-01T00:00:00"}')


def test_what_cloud_scheduler_sends_is_a_request_for_every_tenant() -> None:
    request = ReconcileRequested.from_data(b"{}")
    assert request.tenant_id is None and request.since is None
