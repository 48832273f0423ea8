"""RegisterCall: archive, record the event once, start the call, publish CallRegistered."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from callpipe.archive import archive_object_name
from callpipe.callrail.webhook import EventType
from callpipe.messages import CallReceived, CallRegistered
from callpipe.publishing import PublishFailed
from callpipe.registration import EventState, RegisterCall
from callpipe.steps import PermanentError, run_step
from tests.unit.conftest import (
    ACCOUNT_ID,
    COMPANY_ID,
    NOW,
    OFFICE_ID,
    POST_CALL_ID,
    TENANT_ID,
    FailingPublisher,
    InMemoryArchive,
    InMemoryEventLedger,
    RecordingPublisher,
    event_body,
    load_event,
    make_call_received,
)

OUTPUT = "calls.registered"
REGISTERED_AT = datetime(2025, 3, 14, 23, 0, 5, tzinfo=UTC)


class World:
    def __init__(self, publisher: RecordingPublisher | FailingPublisher | None = None) -> None:
        self.journal: list[str] = []
        self.archive = InMemoryArchive(self.journal)
        self.ledger = InMemoryEventLedger(self.journal)
        self.publisher = publisher if publisher is not None else RecordingPublisher(self.journal)
        self.register = RegisterCall(
            self.archive, self.ledger, self.publisher, OUTPUT, clock=lambda: REGISTERED_AT
        )

    def published(self) -> list[CallRegistered]:
        assert isinstance(self.publisher, RecordingPublisher)
        return [CallRegistered.from_data(m.data) for m in self.publisher.on(OUTPUT)]


@pytest.fixture
def world() -> World:
    return World()


def test_new_post_call_is_archived_claimed_started_published_and_marked(world: World) -> None:
    message = make_call_received()
    result = world.register(message)

    assert world.journal == [
        "archive",
        "claim",
        "start_call",
        f"publish:{OUTPUT}",
        "mark:forwarded",
    ]
    expected_uri = f"gs://test-archive/{archive_object_name(message)}"
    assert result == {
        "event_type": "post_call",
        "archive_uri": expected_uri,
        "outcome": "registered",
        "published_message_id": "msg-1",
        "retried_after_crash": False,
    }
    assert world.archive.objects == {archive_object_name(message): event_body("post_call")}
    assert world.ledger.state_of(message) is EventState.FORWARDED
    assert world.ledger.calls[(TENANT_ID, POST_CALL_ID)] == load_event("post_call")


def test_call_registered_fields_and_attributes(world: World) -> None:
    message = make_call_received()
    world.register(message)

    (registered,) = world.published()
    assert registered.tenant_id == TENANT_ID
    assert registered.office_id == OFFICE_ID
    assert registered.company_id == COMPANY_ID
    assert registered.callrail_account_id == ACCOUNT_ID
    assert registered.call_id == POST_CALL_ID
    assert registered.event_type is EventType.POST_CALL
    assert registered.event_key == f"post_call:{POST_CALL_ID}"
    assert registered.correlation_id == message.correlation_id
    assert registered.received_at == NOW
    assert registered.registered_at == REGISTERED_AT
    assert registered.webhook_archive_uri == f"gs://test-archive/{archive_object_name(message)}"
    assert registered.webhook == load_event("post_call")  # unknown fields kept
    assert registered.webhook["lead_score_breakdown"]["urgency"] == "high"

    assert isinstance(world.publisher, RecordingPublisher)
    assert world.publisher.messages[0].attributes == {
        "kind": "call.registered",
        "schema_version": "1",
        "tenant_id": TENANT_ID,
        "office_id": OFFICE_ID,
        "call_id": POST_CALL_ID,
        "event_type": "post_call",
        "event_key": f"post_call:{POST_CALL_ID}",
        "correlation_id": message.correlation_id,
    }


def test_duplicate_of_a_forwarded_event_is_not_published_again(world: World) -> None:
    message = make_call_received()
    world.register(message)
    result = world.register(message)

    assert result["outcome"] == "duplicate"
    assert result["previous_state"] == "forwarded"
    assert len(world.published()) == 1
    assert world.journal.count("start_call") == 1


def test_redelivery_with_a_new_correlation_id_is_still_a_duplicate(world: World) -> None:
    first = make_call_received()
    world.register(first)
    again = first.model_copy(update={"correlation_id": "f" * 32})
    assert world.register(again)["outcome"] == "duplicate"
    assert len(world.published()) == 1


def test_registered_but_not_forwarded_is_published_again(world: World) -> None:
    """A crash between the ledger write and the publish must not lose the call."""
    message = make_call_received()
    world.ledger.states[(TENANT_ID, message.event_key)] = EventState.REGISTERED

    result = world.register(message)

    assert result["outcome"] == "registered"
    assert result["retried_after_crash"] is True
    assert len(world.published()) == 1
    assert world.ledger.state_of(message) is EventState.FORWARDED


def test_publish_failure_releases_the_event_and_a_retry_forwards_it() -> None:
    world = World(publisher=FailingPublisher())
    message = make_call_received()
    with pytest.raises(PublishFailed):
        world.register(message)
    assert world.ledger.state_of(message) is EventState.RELEASED

    # Pub/Sub redelivers; this time the output topic accepts the message
    working = RecordingPublisher()
    retry = RegisterCall(world.archive, world.ledger, working, OUTPUT, clock=lambda: REGISTERED_AT)
    result = retry(message)
    assert result["retried_after_crash"] is True
    assert len(working.on(OUTPUT)) == 1
    assert world.ledger.state_of(message) is EventState.FORWARDED


def test_call_modified_is_registered_as_its_own_event(world: World) -> None:
    world.register(make_call_received())
    modified = make_call_received(
        "call_modified",
        EventType.CALL_MODIFIED,
        event_key=f"call_modified:{POST_CALL_ID}:{'a' * 40}",
    )
    result = world.register(modified)
    assert result["outcome"] == "registered"
    assert [r.event_type for r in world.published()] == [
        EventType.POST_CALL,
        EventType.CALL_MODIFIED,
    ]
    # the call row is refreshed with the latest payload
    assert world.ledger.calls[(TENANT_ID, POST_CALL_ID)]["changes"] == ["tags", "note", "value"]


@pytest.mark.parametrize(
    ("event", "event_type"),
    [
        ("text_message", EventType.TEXT_MESSAGE_RECEIVED),
        ("form_submission", EventType.FORM_SUBMISSION),
        ("pre_call", EventType.PRE_CALL),
    ],
)
def test_non_pipeline_events_are_archived_and_ignored(
    world: World, event: str, event_type: EventType
) -> None:
    payload = load_event(event)
    call_id = payload.get("resource_id") or payload["id"]
    message = make_call_received(event, event_type, call_id=call_id)
    result = world.register(message)

    assert result["outcome"] == "ignored_event_type"
    assert world.ledger.state_of(message) is EventState.IGNORED
    assert world.published() == []
    assert world.ledger.calls == {}
    assert len(world.archive.objects) == 1
    # and a redelivery of it is a duplicate, still not published
    assert world.register(message)["outcome"] == "duplicate"
    assert world.published() == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_non_json_or_non_object_webhook_body_is_a_permanent_error(
    world: World, body: bytes
) -> None:
    message = make_call_received(body=body)
    with pytest.raises(PermanentError) as caught:
        world.register(message)
    assert caught.value.reason == "invalid_webhook_body"
    assert world.journal == []  # nothing archived, claimed or published


UNUSABLE_BODIES = {
    "lone surrogate": b'{"resource_id": "CAL1", "x": "\\ud800"}',
    "NaN": b'{"resource_id": "CAL1", "x": NaN}',
    "too large a number": b'{"resource_id": "CAL1", "x": [1e400]}',
    "nested 500 levels": b'{"resource_id": "CAL1", "x": ' + b"[" * 499 + b"]" * 499 + b"}",
}


@pytest.mark.parametrize("body", UNUSABLE_BODIES.values(), ids=UNUSABLE_BODIES.keys())
def test_a_body_the_pipeline_cannot_store_is_dead_lettered_at_once_not_retried(
    body: bytes,
) -> None:
    """Queued before intake refused such bodies, or replayed: a permanent failure, found
    before anything is written, rather than five transient ones after the call's row."""
    world = World()
    message = make_call_received(body=body)

    result = run_step(
        "register-call",
        {"message": {"data": base64.b64encode(message.to_data()).decode(), "messageId": "7"}},
        CallReceived,
        world.register,
        world.publisher,
        "calls.received.dlq",
    )

    assert result == {"outcome": "dead_lettered", "reason": "invalid_webhook_body"}
    assert world.journal == ["publish:calls.received.dlq"]  # nothing archived or claimed
    assert world.ledger.calls == {}


def test_a_message_that_cannot_be_serialised_is_a_permanent_error_before_the_call_row(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the checks before it miss, a serialisation error is never transient."""
    monkeypatch.setattr("callpipe.registration.unstorable", lambda payload: None)
    message = make_call_received(body=b'{"resource_id": "CAL1", "x": "\\ud800"}')

    with pytest.raises(PermanentError) as caught:
        world.register(message)

    assert caught.value.reason == "unserializable_message"
    assert "surrogate" in caught.value.detail
    assert "start_call" not in world.journal
    assert world.ledger.calls == {}
    assert world.published() == []


def test_archive_object_name_is_under_the_tenant_prefix() -> None:
    message = make_call_received()
    name = archive_object_name(message)
    assert name.startswith(f"tenants/{TENANT_ID}/webhooks/{POST_CALL_ID}/20250314-post_call-")
    assert name.endswith(".json")
    other_body = make_call_received(body=json.dumps({**load_event("post_call"), "x": 1}).encode())
    assert archive_object_name(other_body) != name
    assert archive_object_name(make_call_received()) == name


def test_an_attempt_that_took_half_the_claims_lease_does_not_release_it() -> None:
    """Another delivery may have taken the claim over meanwhile: releasing it would let a
    third one forward the event at the same time as that one."""
    from callpipe.registration import CLAIM_LEASE

    now = [0.0]

    class Slow(FailingPublisher):
        def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
            now[0] += CLAIM_LEASE.total_seconds() / 2
            return super().publish(topic, data, attributes)

    world = World()
    message = make_call_received()
    step = RegisterCall(
        world.archive, world.ledger, Slow(), OUTPUT, clock=lambda: REGISTERED_AT,
        monotonic=lambda: now[0],
    )  # fmt: skip
    with pytest.raises(PublishFailed):
        step(message)
    assert world.ledger.state_of(message) is EventState.REGISTERED


@pytest.mark.parametrize(
    ("event_type", "recorded"),
    [("post_call", True), ("call_modified", True), ("pre_call", False), ("", False)],
)
def test_only_a_dead_letter_of_an_event_the_call_goes_through_is_recorded_on_it(
    event_type: str, recorded: bool
) -> None:
    """A Pre-Call or routing event is only archived: its dead letter would mark a call
    (perhaps complete) dead-lettered at register, and nothing would clear it."""
    from callpipe.pipeline_wiring import StepRuntime
    from callpipe.progress import Stage
    from callpipe.registration import feeds_the_pipeline
    from callpipe.steps import PermanentError
    from tests.unit.doubles import Progress

    progress = Progress()
    runtime = StepRuntime(lambda m: {}, None, progress)  # type: ignore[arg-type]
    record = runtime.dead_letter_recorder(Stage.REGISTER, feeds_the_pipeline)
    attributes = {"tenant_id": TENANT_ID, "call_id": POST_CALL_ID, "event_type": event_type}
    record(attributes, PermanentError("retries_exhausted", "Spanner did not answer"))
    assert bool(progress.records) is recorded
