"""Operator replays over an in-memory hold: DLQ back to its topic, quarantine through intake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.messages import CallReceived
from callpipe.publishing import PublishFailed
from callpipe.replay import (
    Pulled,
    PullSubscription,
    ReplayAckFailed,
    described,
    peek,
    replay_dead_letters,
    replay_quarantine,
)
from callpipe.secrets import signing_token_secret_name
from tests.unit.conftest import (
    CALLS_TOPIC,
    NOW,
    QUARANTINE_TOPIC,
    FailingPublisher,
    FakeMonotonic,
    IntakeHarness,
    LogCapture,
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
        self._back: list[Pulled] = []

    def pull(
        self,
        limit: int,
        wait_seconds: float = 2.0,
        wanted: Callable[[Pulled], bool] | None = None,
    ) -> Iterator[Pulled]:
        # passed over or released: back in the hold when the pull ends, however it ends
        self._back: list[Pulled] = []
        try:
            while self.waiting and limit > 0:
                item = self.waiting.pop(0)
                if wanted is not None and not wanted(item):
                    self._back.append(item)
                    continue
                limit -= 1
                yield item
        finally:
            self.waiting[:0] = self._back
            self._back = []

    def ack(self, pulled: Pulled) -> None:
        self.acked.append(pulled.message_id)

    def release(self, pulled: Pulled) -> None:
        self.released.append(pulled.message_id)
        self._back.append(pulled)


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


class RecirculatingHold(InMemoryHold):
    """A hold whose replays fail again at once: every republished message comes back, with
    the attributes it was republished with (as a step's dead-letter publish or Pub/Sub's
    dead-letter policy keeps them)."""

    def __init__(self, messages: list[Pulled], publisher: RecordingPublisher) -> None:
        super().__init__(messages)
        self.publisher = publisher

    def ack(self, pulled: Pulled) -> None:
        super().ack(pulled)
        again = self.publisher.messages[-1]
        self.waiting.append(
            Pulled(
                f"ack-{again.message_id}",
                f"dlq-{again.message_id}",
                again.data,
                {**again.attributes, "dlq_reason": "unknown_tenant"},
                NOW,
            )
        )


def test_a_replay_does_not_replay_again_what_failed_again_during_it() -> None:
    publisher = RecordingPublisher()
    earlier = {"replayed_at": "2026-01-01T00:00:00+00:00", "replay_count": "1"}
    hold = RecirculatingHold([pulled("1", b"{}", {}), pulled("2", b"{}", dict(earlier))], publisher)
    results = list(replay_dead_letters(hold, publisher, "calls.received", limit=1000))  # type: ignore[arg-type]

    # each replayed once (an earlier run's replay is replayed again); their second failure
    # waits in the hold for the operator
    assert [r.message_id for r in results] == ["1", "2"]
    assert [m.attributes["replay_count"] for m in publisher.messages] == ["1", "2"]
    assert [m.message_id for m in hold.waiting] == ["dlq-msg-1", "dlq-msg-2"]


class AckRefusingHold(InMemoryHold):
    def ack(self, pulled: Pulled) -> None:
        raise ConnectionError("Pub/Sub did not answer the acknowledge")


def test_a_replay_whose_acknowledgement_fails_stops_and_says_it_was_sent() -> None:
    publisher = RecordingPublisher()
    hold = AckRefusingHold([pulled("1", b"{}", {}), pulled("2", b"{}", {})])
    with pytest.raises(ReplayAckFailed, match=r"republished to calls\.received as msg-1"):
        list(replay_dead_letters(hold, publisher, "calls.received", limit=10))  # type: ignore[arg-type]
    assert len(publisher.messages) == 1  # stopped: the second was not sent
    assert [m.message_id for m in hold.waiting] == ["2"]


def test_a_company_filter_reads_the_routing_attribute_not_the_body(
    harness: IntakeHarness,
    quarantine: Callable[..., InMemoryHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import callpipe.replay

    hold = quarantine(new_company_body())
    other = quarantine(new_company_body()).waiting[0]  # a readable webhook...
    other.message_id = "2"
    other.attributes = {**other.attributes, "company_key": "COMsomeoneelse"}  # ...of another
    hold.waiting.append(other)
    decoded: list[str] = []
    read = callpipe.replay.read_quarantined

    def counting(pulled: Pulled) -> Any:
        decoded.append(pulled.message_id)
        return read(pulled)

    monkeypatch.setattr(callpipe.replay, "read_quarantined", counting)
    onboard_new_company(harness)
    results = list(replay_quarantine(hold, harness.intake, limit=10, company=NEW_COMPANY))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["accepted"]
    assert [m.message_id for m in hold.waiting] == ["2"]  # passed over
    assert "2" not in decoded  # by its attribute: a hold anyone can fill is not decoded


def test_a_quarantine_replay_whose_acknowledgement_fails_stops_and_says_so(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    accepted = quarantine(new_company_body())
    hold = AckRefusingHold(accepted.waiting)
    onboard_new_company(harness)
    with pytest.raises(ReplayAckFailed, match=r"final answer \(accepted\)"):
        list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert len(harness.publisher.messages) == 1  # it was queued


def test_pubsubs_dead_letter_attributes_do_not_travel_back() -> None:
    attributes = {
        "tenant_id": "acme-dental",
        "CloudPubSubDeadLetterSourceDeliveryCount": "10",
        "CloudPubSubDeadLetterSourceSubscription": "calls.received.register-call",
    }
    publisher = RecordingPublisher()
    list(replay_dead_letters(InMemoryHold([pulled("1", b"{}", attributes)]), publisher, "t", 5))  # type: ignore[arg-type]
    assert not any(k.startswith("CloudPubSub") for k in publisher.messages[0].attributes)
    assert publisher.messages[0].attributes["tenant_id"] == "acme-dental"


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


def test_a_webhook_no_token_of_its_company_matches_stays_unless_dropped(
    harness: IntakeHarness, quarantine: Callable[..., InMemoryHold]
) -> None:
    # forged, or the company was onboarded with a mistyped token: CallRail never sends an
    # authentic one again, so only the operator may decide it goes
    hold = quarantine(new_company_body(), token="not-the-onboarded-token")
    onboard_new_company(harness)
    results = list(replay_quarantine(hold, harness.intake, limit=10))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["kept (invalid_signature)"]
    assert hold.acked == [] and hold.released == ["1"]

    dropped = list(replay_quarantine(hold, harness.intake, limit=10, drop_forged=True))  # type: ignore[arg-type]
    assert [r.outcome for r in dropped] == ["invalid_signature"]
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


# -- PullSubscription over a subscriber with Pub/Sub's leases ----------------------------------


class LeasingSubscriber:
    """SubscriberClient's pull / acknowledge / modify_ack_deadline over in-memory messages,
    with leases as Pub/Sub keeps them: a delivered message is not delivered again before
    its ack deadline passes or is set to 0, and each delivery has a new ack id (an older
    one no longer changes the lease). Each pull takes ``pull_seconds`` of the clock."""

    def __init__(self, clock: FakeMonotonic, pull_seconds: float = 0.5) -> None:
        self.clock = clock
        self.pull_seconds = pull_seconds
        self.order: list[str] = []
        self.attributes: dict[str, dict[str, str]] = {}
        self.leased_until: dict[str, float] = {}
        self.latest_ack_id: dict[str, str] = {}
        self.acked: set[str] = set()
        self.deliveries = 0
        self.modify_fails = False

    def add(self, message_id: str, **attributes: str) -> None:
        self.order.append(message_id)
        self.attributes[message_id] = attributes

    def available(self) -> list[str]:
        now = self.clock()
        return [m for m in self.order if m not in self.acked and self.leased_until.get(m, 0) <= now]

    def subscription_path(self, project: str, subscription: str) -> str:
        return f"projects/{project}/subscriptions/{subscription}"

    def pull(self, request: dict[str, Any], timeout: float, retry: Any = None) -> Any:
        from types import SimpleNamespace

        batch = []
        for message_id in self.available()[: request["max_messages"]]:
            self.deliveries += 1
            ack_id = f"{message_id}#{self.deliveries}"
            self.latest_ack_id[message_id] = ack_id
            self.leased_until[message_id] = self.clock() + 60
            message = SimpleNamespace(
                message_id=message_id,
                data=b"{}",
                attributes=self.attributes[message_id],
                publish_time=None,
            )
            batch.append(SimpleNamespace(ack_id=ack_id, message=message))
        self.clock.advance(self.pull_seconds)
        return SimpleNamespace(received_messages=batch)

    def _current(self, ack_ids: list[str]) -> list[str]:
        return [a.split("#")[0] for a in ack_ids if self.latest_ack_id[a.split("#")[0]] == a]

    def acknowledge(self, request: dict[str, Any]) -> None:
        self.acked.update(self._current(request["ack_ids"]))

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        if self.modify_fails:
            raise ConnectionError("pubsub went away")
        for message_id in self._current(request["ack_ids"]):
            self.leased_until[message_id] = self.clock() + request["ack_deadline_seconds"]


def leasing_hold(subscriber: LeasingSubscriber) -> PullSubscription:
    return PullSubscription("p", "calls.received.dlq.hold", subscriber, clock=subscriber.clock)


def test_a_scan_longer_than_a_lease_still_reaches_every_match() -> None:
    clock = FakeMonotonic()
    subscriber = LeasingSubscriber(clock, pull_seconds=5.0)  # 16 pulls: past the 60 s lease
    for i in range(1500):
        subscriber.add(f"other{i}", tenant_id="someone-else")
    for i in range(3):
        subscriber.add(f"mine{i}", tenant_id="acme")
    publisher = RecordingPublisher()

    results = list(
        replay_dead_letters(
            leasing_hold(subscriber), publisher, "t", limit=10, match={"tenant_id": "acme"}
        )
    )

    assert [r.message_id for r in results] == ["mine0", "mine1", "mine2"]
    assert subscriber.acked == {"mine0", "mine1", "mine2"}
    assert len(subscriber.available()) == 1500  # all given back the moment it ended
    assert subscriber.deliveries == 1503  # and none was delivered twice meanwhile


def test_a_replay_stopped_mid_batch_gives_back_everything_it_had_pulled() -> None:
    clock = FakeMonotonic()
    subscriber = LeasingSubscriber(clock)
    for i in range(10):
        subscriber.add(f"m{i}")
    with pytest.raises(PublishFailed):
        list(replay_dead_letters(leasing_hold(subscriber), FailingPublisher(), "t", limit=10))  # type: ignore[arg-type]
    assert subscriber.acked == set()
    assert len(subscriber.available()) == 10


def test_a_failure_to_give_leases_back_is_logged_not_raised(
    capture_logs: Callable[[str], LogCapture],
) -> None:
    logs = capture_logs("callpipe.replay")
    clock = FakeMonotonic()
    subscriber = LeasingSubscriber(clock)
    for i in range(3):
        subscriber.add(f"m{i}", tenant_id="someone-else")
    subscriber.modify_fails = True
    hold = leasing_hold(subscriber)
    assert list(replay_dead_letters(hold, RecordingPublisher(), "t", 10, {"tenant_id": "x"})) == []
    (entry,) = logs.records()
    assert entry["severity"] == "WARNING" and "3 held message(s)" in entry["message"]


def test_a_quarantine_replay_stops_when_pubsub_takes_nothing(
    harness: IntakeHarness,
    quarantine: Callable[..., InMemoryHold],
    make_intake: Callable[..., IntakeHarness],
) -> None:
    hold = quarantine(new_company_body(), new_company_body())
    onboard_new_company(harness)
    pubsub_down = make_intake(publisher=FailingPublisher())

    with pytest.raises(PublishFailed):
        list(replay_quarantine(hold, pubsub_down.intake, limit=10))  # type: ignore[arg-type]

    assert hold.acked == []
    assert [p.message_id for p in hold.waiting] == ["1", "2"]  # the second was not tried
