"""Reconciliation's decisions with in-memory doubles: what is queued, what is left alone,
and that a queued call and its late Post-Call are one event for register-call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.messages import CallReceived
from callpipe.reconcile import ReconcileError, Reconciler
from callpipe.registration import RegisterCall
from callpipe.tenancy import CompanyMapping, TenantRecord
from tests.unit.conftest import (
    ACCOUNT_ID,
    CALLS_TOPIC,
    COMPANY_ID,
    OFFICE_ID,
    TENANT_ID,
    InMemoryArchive,
    InMemoryEventLedger,
    IntakeHarness,
    RecordingPublisher,
    event_body,
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
        self.asked.append(
            {"account": account_id, "company": company_id, "fields": fields, "window": (start, end)}
        )
        yield from (c for c in self.calls if company_id in (None, c["company_id"]))


class Known:
    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def known(self, tenant_id: str, call_ids: Sequence[str]) -> set[str]:
        return self.ids & set(call_ids)


def call(call_id: str, ago: timedelta, **fields: Any) -> dict[str, Any]:
    """A call that started ``ago`` and lasted 2 minutes (unless ``duration`` says)."""
    return {
        "id": call_id,
        "company_id": COMPANY_ID,
        "start_time": (NOW - ago).isoformat(),
        "duration": 120,
        "direction": "inbound",
        **fields,
    }


def reconciler(
    callrail: CallRail,
    known: set[str] | None = None,
    record: TenantRecord | None = None,
    publisher: RecordingPublisher | None = None,
    api_key: Callable[[str], str] = lambda tenant_id: "api-key",
    inactive: Sequence[str] = (),
) -> Reconciler:
    chosen = record or tenant()
    active = {c.company_id: c for c in chosen.companies if c.company_id not in inactive}
    return Reconciler(
        lambda tenant_id: chosen,
        active.get,
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
            # started 40 minutes ago, ended 15 minutes ago: its Post-Call may still come
            call("CALlong", timedelta(minutes=40), duration="1500"),
            call("CALgoing", timedelta(hours=1), duration=None),  # not ended
        ]
    )
    publisher = RecordingPublisher()
    results = list(reconciler(callrail, {"CALknown"}, publisher=publisher).run(TENANT_ID, NOW))

    assert {r.call_id: r.outcome for r in results} == {
        "CALknown": "known",
        "CALlost": "queued",
        "CALrecent": "too_recent",  # its Post-Call may still come
        "CALnotime": "too_recent",  # when unsure, a later run decides
        "CALlong": "too_recent",
        "CALgoing": "too_recent",
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


def test_a_reconciled_call_and_its_late_post_call_are_one_event(harness: IntakeHarness) -> None:
    """register-call takes whichever comes first; the other is a duplicate. The webhook
    goes through intake as CallRail would send it."""
    publisher = RecordingPublisher()
    listed = call("CALf3a91c2e7b5d4a08e6c1b9d7a2e4f530", timedelta(hours=2))
    list(reconciler(CallRail([listed]), publisher=publisher).run(TENANT_ID, NOW))
    queued = CallReceived.from_data(publisher.messages[0].data)
    assert harness.post(event_body("post_call", resource_id=listed["id"])).status == 202
    (webhook,) = [CallReceived.from_data(m.data) for m in harness.publisher.on(CALLS_TOPIC)]
    assert queued.event_key == webhook.event_key  # what makes them one event

    register = RegisterCall(
        InMemoryArchive(), InMemoryEventLedger(), RecordingPublisher(), "calls.registered"
    )
    assert register(queued)["outcome"] == "registered"
    assert register(webhook)["outcome"] == "duplicate"


def test_at_most_the_limit_is_queued_and_the_rest_listed() -> None:
    publisher = RecordingPublisher()
    calls = [call(f"CAL{i}", timedelta(hours=2)) for i in range(5)]
    results = list(reconciler(CallRail(calls), publisher=publisher).run(TENANT_ID, NOW, limit=2))
    assert [r.outcome for r in results] == ["queued", "queued", "missing", "missing", "missing"]
    assert len(publisher.messages) == 2


def test_the_limit_is_shared_so_one_companys_backlog_does_not_starve_the_others() -> None:
    backlog = [call(f"CALa{i}", timedelta(hours=2)) for i in range(10)]
    few = [call(f"CALb{i}", timedelta(hours=2), company_id=OTHER_COMPANY) for i in range(2)]
    both = tenant(companies=(COMPANY_ID, OTHER_COMPANY))
    results = list(reconciler(CallRail(backlog + few), record=both).run(TENANT_ID, NOW, limit=6))
    queued = [r.company_id for r in results if r.outcome == "queued"]
    # half the budget each; what the second left over goes back to the first's backlog
    assert queued == [COMPANY_ID] * 3 + [OTHER_COMPANY] * 2 + [COMPANY_ID]
    assert sum(r.outcome == "missing" for r in results) == 6  # the rest, for the next run
    assert len(results) == 12  # every call once


def test_a_lone_backlog_gets_the_whole_limit_and_backlogs_take_turns() -> None:
    companies = [f"COM{i:032d}" for i in range(10)]
    calls = [call(f"CALlone{i:03}", timedelta(hours=2)) for i in range(50)]
    lone = tenant(companies=(COMPANY_ID, *companies[1:]))
    results = list(reconciler(CallRail(calls), record=lone).run(TENANT_ID, NOW, limit=20))
    assert sum(r.outcome == "queued" for r in results) == 20  # not 20 / 10 companies

    two = [call(f"CALx{i}", timedelta(hours=2)) for i in range(5)]
    two += [call(f"CALy{i}", timedelta(hours=2), company_id=OTHER_COMPANY) for i in range(5)]
    both = tenant(companies=(COMPANY_ID, OTHER_COMPANY))
    results = list(reconciler(CallRail(two), record=both).run(TENANT_ID, NOW, limit=3))
    assert sorted(r.company_id for r in results if r.outcome == "queued") == sorted(
        [COMPANY_ID, COMPANY_ID, OTHER_COMPANY]
    )


def test_deactivated_companies_and_calls_of_other_companies_are_left_alone() -> None:
    both = tenant(companies=(COMPANY_ID, OTHER_COMPANY))
    calls = [
        call("CALmine", timedelta(hours=2)),
        call("CALtheirs", timedelta(hours=2), company_id=OTHER_COMPANY),
    ]
    callrail = CallRail(calls)
    results = list(reconciler(callrail, record=both, inactive=(OTHER_COMPANY,)).run(TENANT_ID, NOW))
    assert [r.call_id for r in results] == ["CALmine"]
    assert [a["company"] for a in callrail.asked] == [COMPANY_ID]

    class Unfiltered(CallRail):
        """An API that ignored the company filter."""

        def iter_calls(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            yield from self.calls

    results = list(reconciler(Unfiltered(calls)).run(TENANT_ID, NOW))
    assert [r.call_id for r in results] == ["CALmine"]


@pytest.mark.parametrize(
    ("record", "api_key", "problem"),
    [
        (tenant(status="suspended"), None, "is suspended, not active"),
        (tenant(companies=()), None, "no active CallRail company"),
        (tenant(status="active"), "inactive", "no active CallRail company"),
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

    inactive = [COMPANY_ID] if api_key == "inactive" else []
    with pytest.raises(ReconcileError, match=problem):
        list(
            reconciler(CallRail([]), record=record, api_key=key, inactive=inactive).run(
                TENANT_ID, NOW
            )
        )
