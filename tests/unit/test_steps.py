"""Pub/Sub push envelopes and the error contract of every Pub/Sub-triggered step."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import pytest

from callpipe.envelopes import EnvelopeError, decode_pubsub_envelope
from callpipe.messages import CallReceived
from callpipe.publishing import PublishFailed
from callpipe.steps import PermanentError, run_step
from tests.unit.conftest import FailingPublisher, RecordingPublisher, make_call_received

STEP = "register-call"
DLQ = "calls.received.dlq"
SUBSCRIPTION = "projects/callpipe-test/subscriptions/calls.received.register-call"


def push_body(
    data: bytes, attributes: dict[str, str] | None = None, message_id: str = "1234567890"
) -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes or {},
            "messageId": message_id,
            "publishTime": "2025-03-14T17:27:42.120Z",
        },
        "subscription": SUBSCRIPTION,
    }


# -- envelopes ---------------------------------------------------------------------------------


def test_decode_valid_push_body() -> None:
    envelope = decode_pubsub_envelope(
        {**push_body(b'{"x": 1}', {"tenant_id": "acme-dental"}), "deliveryAttempt": 3}
    )
    assert envelope.data == b'{"x": 1}'
    assert envelope.attributes == {"tenant_id": "acme-dental"}
    assert envelope.message_id == "1234567890"
    assert envelope.subscription == SUBSCRIPTION
    assert envelope.delivery_attempt == 3


def test_decode_snake_case_message_id_and_attempt_inside_the_message() -> None:
    body = push_body(b"{}")
    body["message"].pop("messageId")
    body["message"]["message_id"] = "77"
    body["message"]["deliveryAttempt"] = "2"
    envelope = decode_pubsub_envelope(body)
    assert envelope.message_id == "77"
    assert envelope.delivery_attempt == 2


def test_decode_without_data_attributes_or_attempt() -> None:
    envelope = decode_pubsub_envelope({"message": {"messageId": "9"}})
    assert envelope.data == b""
    assert envelope.attributes == {}
    assert envelope.subscription is None
    assert envelope.delivery_attempt is None


def test_attribute_values_are_strings() -> None:
    envelope = decode_pubsub_envelope(push_body(b"{}", {"replay_count": 2}))  # type: ignore[dict-item]
    assert envelope.attributes == {"replay_count": "2"}


@pytest.mark.parametrize(
    "data",
    [
        None,
        "a string",
        [],
        {},
        {"subscription": SUBSCRIPTION},
        {"message": "not an object"},
    ],
)
def test_missing_message_is_an_envelope_error(data: Any) -> None:
    with pytest.raises(EnvelopeError, match="message"):
        decode_pubsub_envelope(data)


@pytest.mark.parametrize(
    "encoded", ["!!!not base64!!!", "abc", "ZGF0YQ=!", "ZGF0YQ==!!", "ZGF0 YQ==", 12345]
)
def test_bad_base64_is_an_envelope_error(encoded: Any) -> None:
    with pytest.raises(EnvelopeError, match="base64"):
        decode_pubsub_envelope({"message": {"data": encoded}})


def test_non_object_attributes_are_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="attributes"):
        decode_pubsub_envelope({"message": {"data": "", "attributes": ["a", "b"]}})


@pytest.mark.parametrize("attempt", ["x", -1, True, 2.5])
def test_odd_delivery_attempts_are_ignored(attempt: Any) -> None:
    assert (
        decode_pubsub_envelope({**push_body(b""), "deliveryAttempt": attempt}).delivery_attempt
        is None
    )


# -- run_step ----------------------------------------------------------------------------------


class Handler:
    def __init__(
        self, result: dict[str, Any] | None = None, error: Exception | None = None
    ) -> None:
        self.received: list[CallReceived] = []
        self.result = result if result is not None else {"outcome": "registered"}
        self.error = error

    def __call__(self, message: CallReceived) -> dict[str, Any]:
        self.received.append(message)
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def message() -> CallReceived:
    return make_call_received()


def test_valid_message_reaches_the_handler(message: CallReceived) -> None:
    publisher = RecordingPublisher()
    handler = Handler({"outcome": "registered", "published_message_id": "m-1"})
    result = run_step(
        STEP,
        push_body(message.to_data(), message.attributes()),
        CallReceived,
        handler,
        publisher,
        DLQ,
    )
    assert result == {"outcome": "registered", "published_message_id": "m-1"}
    assert handler.received == [message]
    assert publisher.messages == []


@pytest.mark.parametrize(
    "data",
    [b"not json at all", b"[]", b'{"tenant_id": "acme-dental"}', b'{"schema_version": 2}'],
)
def test_invalid_message_is_dead_lettered_and_acknowledged(data: bytes) -> None:
    publisher = RecordingPublisher()
    handler = Handler()
    attributes = {"tenant_id": "acme-dental", "call_id": "CAL1", "correlation_id": "c" * 32}
    result = run_step(
        STEP, push_body(data, attributes, "42"), CallReceived, handler, publisher, DLQ
    )

    assert result == {"outcome": "dead_lettered", "reason": "invalid_message"}
    assert handler.received == []
    (dead,) = publisher.messages
    assert dead.topic == DLQ
    assert dead.data == data  # the original bytes, for a later replay
    assert dead.attributes["dlq_reason"] == "invalid_message"
    assert dead.attributes["dlq_step"] == STEP
    assert dead.attributes["dlq_message_id"] == "42"
    assert dead.attributes["dlq_error"]
    datetime.fromisoformat(dead.attributes["dlq_at"])
    for key, value in attributes.items():
        assert dead.attributes[key] == value


def test_permanent_error_is_dead_lettered_with_its_reason(message: CallReceived) -> None:
    publisher = RecordingPublisher()
    handler = Handler(error=PermanentError("unknown_tenant", "tenant acme-dental was deleted"))
    result = run_step(
        STEP,
        push_body(message.to_data(), message.attributes()),
        CallReceived,
        handler,
        publisher,
        DLQ,
    )
    assert result == {"outcome": "dead_lettered", "reason": "unknown_tenant"}
    (dead,) = publisher.messages
    assert dead.topic == DLQ
    assert dead.data == message.to_data()
    assert dead.attributes["dlq_reason"] == "unknown_tenant"
    assert dead.attributes["dlq_error"] == "tenant acme-dental was deleted"
    assert dead.attributes["event_key"] == message.event_key
    assert dead.attributes["kind"] == "call.received"


def test_old_dlq_attributes_are_replaced_not_accumulated(message: CallReceived) -> None:
    publisher = RecordingPublisher()
    attributes = {**message.attributes(), "dlq_reason": "old", "dlq_step": "old-step"}
    handler = Handler(error=PermanentError("invalid_webhook_body", "x"))
    run_step(STEP, push_body(message.to_data(), attributes), CallReceived, handler, publisher, DLQ)
    (dead,) = publisher.messages
    assert dead.attributes["dlq_reason"] == "invalid_webhook_body"
    assert dead.attributes["dlq_step"] == STEP


def test_dlq_error_detail_is_bounded(message: CallReceived) -> None:
    publisher = RecordingPublisher()
    handler = Handler(error=PermanentError("too_long", "x" * 5000))
    run_step(STEP, push_body(message.to_data()), CallReceived, handler, publisher, DLQ)
    assert len(publisher.messages[0].attributes["dlq_error"]) == 1000


@pytest.mark.parametrize("error", [ConnectionError("reset"), TimeoutError(), ValueError("boom")])
def test_transient_failure_is_reraised_and_nothing_published(
    message: CallReceived, error: Exception
) -> None:
    publisher = RecordingPublisher()
    with pytest.raises(type(error)):
        run_step(
            STEP, push_body(message.to_data()), CallReceived, Handler(error=error), publisher, DLQ
        )
    assert publisher.messages == []


def test_dead_letter_publish_failure_is_reraised_so_pubsub_redelivers(
    message: CallReceived,
) -> None:
    handler = Handler(error=PermanentError("unknown_tenant", "gone"))
    with pytest.raises(PublishFailed):
        run_step(STEP, push_body(message.to_data()), CallReceived, handler, FailingPublisher(), DLQ)


def test_undecodable_delivery_is_dropped_without_calling_the_handler() -> None:
    publisher = RecordingPublisher()
    handler = Handler()
    result = run_step(STEP, {"nothing": "here"}, CallReceived, handler, publisher, DLQ)
    assert result == {"outcome": "bad_envelope"}
    assert handler.received == []
    assert publisher.messages == []


# -- the last attempt ----------------------------------------------------------------------------


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[dict[str, str], PermanentError]] = []
        self.error = error

    def __call__(self, attributes: dict[str, str], error: PermanentError) -> None:
        self.calls.append((attributes, error))
        if self.error is not None:
            raise self.error


def run_attempt(
    message: CallReceived, attempt: int | None, recorder: Recorder, max_attempts: int | None = 5
) -> None:
    body = push_body(message.to_data(), message.attributes())
    if attempt is not None:
        body["deliveryAttempt"] = attempt
    run_step(
        STEP,
        body,
        CallReceived,
        Handler(error=ConnectionError("spanner: deadline exceeded")),
        RecordingPublisher(),
        DLQ,
        on_dead_letter=recorder,
        max_delivery_attempts=max_attempts,
    )


def test_a_transient_failure_on_the_last_attempt_is_recorded_then_raised(
    message: CallReceived,
) -> None:
    recorder = Recorder()
    with pytest.raises(ConnectionError):
        run_attempt(message, 5, recorder)
    ((attributes, error),) = recorder.calls
    assert attributes["call_id"] == message.call_id
    assert error.reason == "retries_exhausted"
    assert error.detail == "attempt 5 of 5: ConnectionError: spanner: deadline exceeded"


@pytest.mark.parametrize(("attempt", "max_attempts"), [(4, 5), (None, 5), (9, None)])
def test_earlier_or_uncounted_attempts_are_only_retried(
    message: CallReceived, attempt: int | None, max_attempts: int | None
) -> None:
    recorder = Recorder()
    with pytest.raises(ConnectionError):
        run_attempt(message, attempt, recorder, max_attempts)
    assert recorder.calls == []


def test_a_record_that_fails_on_the_last_attempt_leaves_the_failure_to_pubsub(
    message: CallReceived,
) -> None:
    recorder = Recorder(error=RuntimeError("spanner is down too"))
    with pytest.raises(ConnectionError):  # the step's own failure, not the recorder's
        run_attempt(message, 6, recorder)
    assert len(recorder.calls) == 1
