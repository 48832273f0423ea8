"""Reconciliation's decisions with in-memory doubles: what is queued, what is left alone,
and that a queued call and its late Post-Call are one event for register-call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.intake.service import event_key
from callpipe.messages import CallReceived
from callpipe.reconcile import ReconcileError, Reconciler
from callpipe.registration import RegisterCall
from callpipe.tenancy import CompanyMapping, TenantRecord
from tests.unit.conftest import (
    ACCOUNT_ID,
    COMPANY_ID,
    OFFICE_ID,
    TENANT_ID,
    InMemoryArchive,
    InMemoryEventLedger,
    RecordingPublisher,
    make_call_received,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OTHER_COMPANY = "COM00000000000000000000000000000001"


def tenant(status: str = "active", companies: Sequence[str] = (COMPANY_ID,)) -> TenantRecord:
    return TenantRecord(
        tenant_id=TENANT_ID,
        name="Acme Dental",
        status=status,
        callrail_account_id=ACCOUNT_ID,
        api_key_secret="callrail-api-key-acme-dental",
        created_at=NOW,
        companies=tuple(
            CompanyMapping(company, None, TENANT_ID, OFFICE_ID, ACCOUNT_ID) for company in companies
        ),
    )


class CallRail:
    """The account's calls, listed per company as CallRail's calls.json does."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls
        self.asked: list[dict[str, Any]] = []

    def iter_calls(
        self,
        account_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
        per_page: int = 250,
        fields: Sequence[str] = (),
        on_page: Callable[[int, int], None] | None = None,
        company_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        self.asked.append({"account": account_id, "company": company_id, "fields": fields})
        yield from (c for c in self.calls if company_id in (None, c["company_id"]))


class Known:
    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def known(self, tenant_id: str, call_ids: Sequence[str]) -> set[str]:
        return self.ids & set(call_ids)


def call(call_id: str, ago: timedelta, **fields: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "company_id": COMPANY_ID,
        "start_time": (NOW - ago).isoformat(),
        "direction": "inbound",
        **fields,
    }


def reconciler(
    callrail: CallRail,
    known: set[str] | None = None,
    record: TenantRecord | None = None,
    publisher: RecordingPublisher | None = None,
    api_key: Callable[[str], str] = lambda tenant_id: "api-key",
) -> Reconciler:
    return Reconciler(
        lambda tenant_id: record or tenant(),
        api_key,
        lambda key: callrail,
        Known(known or set()),
        publisher or RecordingPublisher(),
        "calls.received",
        clock=lambda: NOW,
    )


def test_known_recent_and_missing_calls_each_get_their_outcome() -> None:
    callrail = CallRail(
        [
            call("CALknown", timedelta(hours=5)),
            call("CALlost", timedelta(hours=2)),
            call("CALrecent", timedelta(minutes=10)),
            call("CALnotime", timedelta(hours=1), start_time="yesterday"),
        ]
    )
    publisher = RecordingPublisher()
    results = list(reconciler(callrail, {"CALknown"}, publisher=publisher).run(TENANT_ID, NOW))

    assert {r.call_id: r.outcome for r in results} == {
        "CALknown": "known",
        "CALlost": "queued",
        "CALrecent": "too_recent",  # its Post-Call may still come
        "CALnotime": "too_recent",  # when unsure, a later run decides
    }
    assert [CallReceived.from_data(m.data).call_id for m in publisher.messages] == ["CALlost"]
    assert (
        callrail.asked[0]["company"] == COMPANY_ID and "company_id" in callrail.asked[0]["fields"]
    )


def test_a_dry_run_queues_nothing() -> None:
    publisher = RecordingPublisher()
    callrail = CallRail([call("CALlost", timedelta(hours=2))])
    results = list(reconciler(callrail, publisher=publisher).run(TENANT_ID, NOW, dry_run=True))
    assert [r.outcome for r in results] == ["missing"]
    assert publisher.messages == []


def test_every_company_of_the_tenant_is_listed_and_only_its_calls() -> None:
    callrail = CallRail(
        [
            call("CALmine", timedelta(hours=2)),
            call("CALtheirs", timedelta(hours=2), company_id=OTHER_COMPANY),
        ]
    )
    results = list(reconciler(callrail).run(TENANT_ID, NOW))
    assert [r.call_id for r in results] == ["CALmine"]

    both = tenant(companies=(COMPANY_ID, OTHER_COMPANY))
    results = list(reconciler(CallRail(callrail.calls), record=both).run(TENANT_ID, NOW))
    assert {r.call_id: r.company_id for r in results} == {
        "CALmine": COMPANY_ID,
        "CALtheirs": OTHER_COMPANY,
    }


def test_the_queued_message_is_the_post_call_intake_would_have_queued() -> None:
    publisher = RecordingPublisher()
    listed = call("CALout", timedelta(hours=2), direction="outbound", duration=42)
    list(reconciler(CallRail([listed]), publisher=publisher).run(TENANT_ID, NOW))

    (published,) = publisher.messages
    message = CallReceived.from_data(published.data)
    assert published.topic == "calls.received"
    assert (message.tenant_id, message.office_id, message.company_id) == (
        TENANT_ID,
        OFFICE_ID,
        COMPANY_ID,
    )
    assert message.callrail_account_id == ACCOUNT_ID
    assert message.event_type is EventType.OUTBOUND_POST_CALL
    assert message.event_key == "completion:CALout"
    body = json.loads(message.webhook.body)
    assert body["resource_id"] == "CALout" and body["duration"] == 42
    assert message.webhook.received_at == NOW


def test_a_reconciled_call_and_its_late_post_call_are_one_event() -> None:
    """register-call takes whichever comes first; the other is a duplicate."""
    publisher = RecordingPublisher()
    listed = call("CALlate", timedelta(hours=2))
    list(reconciler(CallRail([listed]), publisher=publisher).run(TENANT_ID, NOW))
    queued = CallReceived.from_data(publisher.messages[0].data)
    body = json.dumps({"resource_id": "CALlate", "company_resource_id": COMPANY_ID}).encode()
    webhook = make_call_received(
        body=body,
        call_id="CALlate",
        event_key=event_key(EventType.POST_CALL, "CALlate", body),
    )

    register = RegisterCall(
        InMemoryArchive(), InMemoryEventLedger(), RecordingPublisher(), "calls.registered"
    )
    assert register(queued)["outcome"] == "registered"
    assert register(webhook)["outcome"] == "duplicate"


@pytest.mark.parametrize(
    ("record", "api_key", "problem"),
    [
        (tenant(status="suspended"), None, "is suspended, not active"),
        (tenant(companies=()), None, "no active CallRail company"),
        (tenant(), "missing", "set-api-key"),
    ],
)
def test_a_tenant_that_cannot_be_reconciled_says_why(
    record: TenantRecord, api_key: str | None, problem: str
) -> None:
    def key(tenant_id: str) -> str:
        if api_key == "missing":
            raise LookupError("no secret")
        return "api-key"

    with pytest.raises(ReconcileError, match=problem):
        list(reconciler(CallRail([]), record=record, api_key=key).run(TENANT_ID, NOW))
