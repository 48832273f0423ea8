"""Operator replays over an in-memory hold: DLQ back to its topic, quarantine through intake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.messages import CallReceived
from callpipe.publishing import PublishFailed
from callpipe.replay import Pulled, described, peek, replay_dead_letters, replay_quarantine
from callpipe.secrets import signing_token_secret_name
from tests.unit.conftest import (
    CALLS_TOPIC,
    NOW,
    QUARANTINE_TOPIC,
    FailingPublisher,
    IntakeHarness,
    RecordingPublisher,
    company_mapping,
    event_body,
    sign,
    token_ref,
)

NEW_COMPANY = "COM11111111111111111111111111111111"
NEW_TOKEN = "new-company-token"


class InMemoryHold:
    """The operator side of a hold subscription (pull / ack / release), in memory."""

    def __init__(self, messages: list[Pulled]) -> None:
        self.waiting = list(messages)
        self.acked: list[str] = []
        self.released: list[str] = []

    def pull(
        self,
        limit: int,
        wait_seconds: float = 2.0,
        wanted: Callable[[Pulled], bool] | None = None,
    ) -> Iterator[Pulled]:
        passed: list[Pulled] = []  # stay in the hold, as PullSubscription leaves them
        while self.waiting and limit > 0:
            item = self.waiting.pop(0)
            if wanted is not None and not wanted(item):
                passed.append(item)
                continue
            limit -= 1
            yield item
        self.waiting[:0] = passed

    def ack(self, pulled: Pulled) -> None:
        self.acked.append(pulled.message_id)

    def release(self, pulled: Pulled) -> None:
        self.released.append(pulled.message_id)


def pulled(message_id: str, data: bytes, attributes: dict[str, str]) -> Pulled:
    return Pulled(f"ack-{message_id}", message_id, data, attributes, NOW)


# -- dead letters --------------------------------------------------------------------------------


def test_dead_letters_are_republished_without_dlq_attributes() -> None:
    attributes = {
        "tenant_id": "acme-dental",
        "event_key": "post_call:CAL1",
        "dlq_step": "register-call",
        "dlq_reason": "unknown_tenant",
        "dlq_error": "gone",
        "dlq_at": "2025-03-14T18:00:00+00:00",
        "dlq_message_id": "41",
    }
    hold = InMemoryHold(
        [pulled("1", b'{"a": 1}', attributes), pulled("2", b"x", {"replay_count": "2"})]
    )
    publisher = RecordingPublisher()

    results = list(replay_dead_letters(hold, publisher, "calls.received", limit=10))  # type: ignore[arg-type]

    assert [r.outcome for r in results] == ["replayed", "replayed"]
    assert hold.acked == ["1", "2"]
    first, second = publisher.messages
    assert first.topic == second.topic == "calls.received"
    assert first.data == b'{"a": 1}'
    assert not any(k.startswith("dlq_") for k in first.attributes)
    assert first.attributes["tenant_id"] == "acme-dental"
    assert first.attributes["replay_count"] == "1"
    assert "replayed_at" in first.attributes
    assert second.attributes["replay_count"] == "3"


def test_dead_letter_replay_respects_the_limit() -> None:
    hold = InMemoryHold([pulled(str(i), b"{}", {}) for i in range(5)])
    results = list(replay_dead_letters(hold, RecordingPublisher(), "t", limit=2))  # type: ignore[arg-type]
    assert len(results) == 2
    assert len(hold.waiting) == 3


def test_interrupted_dead_letter_replay_leaves_the_message_in_the_hold() -> None:
    hold = InMemoryHold([pulled("1", b"{}", {})])
    with pytest.raises(PublishFailed):
        list(replay_dead_letters(hold, FailingPublisher(), "t", limit=10))  # type: ignore[arg-type]
    assert hold.acked == []


def test_peek_releases_everything_it_pulled() -> None:
    hold = InMemoryHold([pulled("1", b"{}", {}), pulled("2", b"{}", {})])
    assert [p.message_id for p in peek(hold, 10)] == ["1", "2"]  # type: ignore[arg-type]
    assert hold.released == ["1", "2"]
    assert hold.acked == []


# -- quarantine ------------------------------------------------------------------------------------


@pytest.fixture
def quarantine(
    harness: IntakeHarness,
) -> Callable[..., InMemoryHold]:
    """Post webhooks of a not-yet-onboarded company; return the quarantine as a hold."""

    def make(*bodies: bytes, hint: str | None = None, token: str = NEW_TOKEN) -> InMemoryHold:
        for body in bodies:
            outcome = harness.post(body, signature=sign(token, body), hint=hint)
            assert outcome.status == 404 and outcome.fields["quarantined"] is True
        messages = harness.publisher.on(QUARANTINE_TOPIC)
        harness.publisher.messages.clear()
        return InMemoryHold(
            [pulled(str(i), m.data, m.attributes) for i, m in enumerate(messages, 1)]
        )

    return make


def onboard_new_company(harness: IntakeHarness, token: str = NEW_TOKEN) -> None:
    harness.companies.mappings.append(
        company_mapping(
            (token_ref("toknew0001", NEW_COMPANY),),
            company_id=NEW_COMPANY,
            legacy_company_id="999000111",
            tenant_id="new-tenant",
            office_id="main",
        )
    )
    harness.secrets.put(signing_token_secret_name(NEW_COMPANY, "toknew0001"), token)
    harness.limiter_clock.advance(10)  # past the directory's negative cache


def new_company_body(event: str = "post_call", **changes: object) -> bytes:
    return event_body(event, company_resource_id=NEW_COMPANY, company_id=999000111, **changes)


def test_quarantined_webhook_is_accepted_once_the_company_is_onboarded(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    body = new_company_body()
    hold = quarantine(body)
    onboard_new_company(harness)
    harness.wall.now = NOW + timedelta(days=3)  # replayed days later: judged at receipt time
    live = harness.post(body, signature=sign(NEW_TOKEN, body))
    assert live.outcome == "stale_webhook"  # the same request sent live now would be refused
    harness.publisher.messages.clear()

    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]

    assert [r.outcome for r in results] == ["accepted"]
    assert hold.acked == ["1"]
    (published,) = harness.publisher.on(CALLS_TOPIC)
    message = CallReceived.from_data(published.data)
    assert message.tenant_id == "new-tenant"
    assert message.webhook.body == body
    assert message.webhook.received_at == NOW


def test_still_unknown_company_stays_in_quarantine_and_is_not_requarantined(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    hold = quarantine(new_company_body())
    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["kept (unknown_company)"]
    assert hold.released == ["1"] and hold.acked == []
    assert harness.publisher.messages == []


def test_forged_quarantined_webhook_leaves_the_quarantine_as_invalid(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    hold = quarantine(new_company_body(), token="attackers-guess")
    onboard_new_company(harness)
    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["invalid_signature"]
    assert hold.acked == ["1"]
    assert harness.publisher.messages == []


def test_directory_outage_during_replay_keeps_the_webhook(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    hold = quarantine(new_company_body())
    harness.limiter_clock.advance(10)
    harness.companies.error = ConnectionError("spanner")
    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["kept (directory_unavailable)"]
    assert hold.released == ["1"]
    assert harness.publisher.messages == []


def test_company_filter_leaves_other_companies_alone(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    hold = quarantine(new_company_body())
    results = list(replay_quarantine(hold, harness.intake, limit=10, company="COMsomeoneelse"))  # type: ignore[arg-type]
    assert results == []
    assert [p.message_id for p in hold.waiting] == ["1"] and hold.acked == []


def test_an_undecodable_quarantine_message_is_kept_and_reported_without_its_content(
    harness: IntakeHarness,
) -> None:
    hold = InMemoryHold([pulled("1", b'{"company_key": "+15035550142 Jane Roe"}', {})])
    (result,) = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert result.outcome == "kept (undecodable)"
    assert "webhook" in result.detail and "Field required" in result.detail
    assert "5550142" not in result.detail and "Jane" not in result.detail
    assert hold.released == ["1"] and hold.acked == []


def test_an_authentic_webhook_intake_cannot_use_yet_stays_in_quarantine(
    harness: IntakeHarness,
) -> None:
    """Kept so that a release that can use it accepts it: a replay must not drop it."""
    body = event_body("post_call", resource_id=None, id=None)
    refused = harness.post(body)
    assert (refused.outcome, refused.fields["quarantined"]) == ("missing_call_id", True)
    (message,) = harness.publisher.on(QUARANTINE_TOPIC)
    harness.publisher.messages.clear()
    hold = InMemoryHold([pulled("1", message.data, message.attributes)])

    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]

    assert [r.outcome for r in results] == ["kept (missing_call_id)"]
    assert hold.released == ["1"] and hold.acked == []
    assert harness.publisher.messages == []  # nor quarantined a second time


def test_filters_and_limits_count_only_the_messages_asked_for() -> None:
    others = [pulled(f"o{i}", b"{}", {"tenant_id": "someone-else"}) for i in range(5)]
    mine = [pulled(f"m{i}", b"{}", {"tenant_id": "acme"}) for i in range(3)]
    hold = InMemoryHold([*others[:3], mine[0], *others[3:], mine[1], mine[2]])
    results = list(
        replay_dead_letters(hold, RecordingPublisher(), "t", limit=2, match={"tenant_id": "acme"})  # type: ignore[arg-type]
    )
    assert [r.message_id for r in results] == ["m0", "m1"]
    assert [p.message_id for p in hold.waiting] == [*(f"o{i}" for i in range(5)), "m2"]


def test_recording_notifications_are_told_apart_by_their_object_name() -> None:
    notification = {
        "objectId": "tenants/acme-dental/calls/CAL123/recording.mp3",
        "bucketId": "callpipe-recordings",
        "dlq_reason": "retries_exhausted",
    }
    other = {"objectId": "tenants/someone-else/calls/CAL9/recording.mp3"}
    hold = InMemoryHold([pulled("1", b"", other), pulled("2", b"", notification)])
    assert described(hold.waiting[1])["tenant_id"] == "acme-dental"
    assert described(hold.waiting[1])["call_id"] == "CAL123"
    publisher = RecordingPublisher()
    results = list(
        replay_dead_letters(
            hold,  # type: ignore[arg-type]
            publisher,
            "recordings.stored",
            limit=10,
            match={"tenant_id": "acme-dental", "call_id": "CAL123"},
        )
    )
    assert [r.message_id for r in results] == ["2"]
    (replayed,) = publisher.messages
    assert replayed.attributes["objectId"] == notification["objectId"]
    assert "tenant_id" not in replayed.attributes  # republished as it was, minus dlq_*


def test_replay_keeps_the_event_type_of_the_route_it_arrived_on(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    """A webhook received on /webhook/<event-type> replays as that type, not by its shape.

    A Call Routing Complete looks like a Pre-Call (no recording fields): only the route
    it was configured on tells them apart.
    """
    body = new_company_body("pre_call", business_phone_number="+15035550142")
    hold = quarantine(body, hint="call-routing-complete")
    stored = json.loads(hold.waiting[0].data)
    assert stored["webhook"]["path"].endswith("/call-routing-complete")
    onboard_new_company(harness)

    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]

    assert [r.outcome for r in results] == ["accepted"]
    (published,) = harness.publisher.on(CALLS_TOPIC)
    event_type = CallReceived.from_data(published.data).event_type
    assert event_type is EventType.CALL_ROUTING_COMPLETE
