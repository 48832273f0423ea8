"""PubSubPublisher over the client library's gRPC channel, against a local gRPC fake of
Publisher/Publish (tests/fakes/pubsub_publish.py) for what the emulator cannot show or do:
how messages are batched into RPCs, transient errors, a rejected message inside a batch, an
RPC that does not answer. What the server accepts is tested against the emulator in
tests/integration/test_publishing.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import pytest
from google.pubsub_v1.types import PublishResponse

from callpipe.publishing import (
    ProtobufTypes,
    PublishFailed,
    PubSubPublisher,
    _Pending,
    _TopicSender,
)
from tests.fakes.pubsub_publish import PubSubPublishFake
from tests.unit.conftest import wait_until

PROJECT = "callpipe-unit"
TOPIC = "calls.received"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubPublishFake]:
    with PubSubPublishFake(PROJECT, [TOPIC, "calls.received.dlq"]) as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        yield server


def publisher(timeout: float = 5.0, linger: float = 0.0) -> PubSubPublisher:
    return PubSubPublisher(PROJECT, batch_max_latency_seconds=linger, timeout_seconds=timeout)


def in_threads(calls: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def one_rpc_in_flight(pub: PubSubPublisher, fake: PubSubPublishFake) -> threading.Thread:
    """Publish b"first" from a thread and hold its RPC in the fake until ``release()``."""
    fake.hold()
    first = threading.Thread(target=pub.publish, args=(TOPIC, b"first", {}))
    first.start()
    wait_until(lambda: len(fake.requests) == 1)
    return first


def test_messages_queued_behind_an_rpc_in_flight_go_out_together_in_the_next(
    fake: PubSubPublishFake,
) -> None:
    pub = publisher()
    first = one_rpc_in_flight(pub, fake)
    results = []
    waiting = [
        threading.Thread(target=lambda i=i: results.append(pub.publish(TOPIC, b"m%d" % i, {})))
        for i in range(5)
    ]
    for thread in waiting:
        thread.start()
    sender = pub._senders[TOPIC]
    wait_until(lambda: sender.queued() == 5)
    fake.release()
    first.join(10)
    for thread in waiting:
        thread.join(10)

    assert [len(r.messages) for r in fake.requests] == [1, 5]
    assert sorted(m.data for m in fake.requests[1].messages) == [b"m%d" % i for i in range(5)]
    assert len(set(results)) == 5  # each caller got its own message's id


def test_topics_have_separate_batches(fake: PubSubPublishFake) -> None:
    pub = publisher()
    pub.publish(TOPIC, b"a", {})
    pub.publish("calls.received.dlq", b"b", {})
    assert [r.topic.rsplit("/", 1)[-1] for r in fake.requests] == [TOPIC, "calls.received.dlq"]


def test_transient_errors_are_retried_until_accepted(fake: PubSubPublishFake) -> None:
    fake.fail_next(grpc.StatusCode.UNAVAILABLE, times=2)
    fake.fail_next(grpc.StatusCode.INTERNAL)
    message_id = publisher().publish(TOPIC, b"x", {})
    assert len(fake.requests) == 4
    assert [a[1] for a in fake.accepted] == [message_id]


def test_a_permanent_error_fails_at_once_with_its_code(fake: PubSubPublishFake) -> None:
    fake.fail_next(grpc.StatusCode.PERMISSION_DENIED)
    started = time.monotonic()
    with pytest.raises(PublishFailed, match="PERMISSION_DENIED") as raised:
        publisher().publish(TOPIC, b"x", {})
    assert time.monotonic() - started < 3
    assert TOPIC in str(raised.value)
    assert len(fake.requests) == 1


def test_one_invalid_message_does_not_fail_the_messages_batched_with_it(
    fake: PubSubPublishFake,
) -> None:
    pub = publisher()
    first = one_rpc_in_flight(pub, fake)
    calls: list[Callable[[], object]] = [
        lambda: pub.publish(TOPIC, b"good-1", {"k": "v"}),
        lambda: pub.publish(TOPIC, b"bad", {"k": "v" * 2000}),
        lambda: pub.publish(TOPIC, b"good-2", {"k": "v"}),
    ]
    outcome: list[object] = []
    runner = threading.Thread(target=lambda: outcome.extend(in_threads(calls)))
    runner.start()
    sender = pub._senders[TOPIC]
    wait_until(lambda: sender.queued() == 3)
    fake.release()
    runner.join(20)
    first.join(10)

    good_1, bad, good_2 = outcome
    assert isinstance(good_1, str) and isinstance(good_2, str)
    assert isinstance(bad, PublishFailed) and "INVALID_ARGUMENT" in str(bad)
    assert sorted(a[2] for a in fake.accepted) == [b"first", b"good-1", b"good-2"]
    assert [len(r.messages) for r in fake.requests] == [1, 3, 1, 1, 1]


def test_no_answer_within_the_timeout_is_a_publish_failure(fake: PubSubPublishFake) -> None:
    fake.hold()
    started = time.monotonic()
    with pytest.raises(PublishFailed):
        publisher(timeout=0.5).publish(TOPIC, b"x", {})
    assert time.monotonic() - started < 3
    fake.release()


def test_retries_stop_at_the_deadline(fake: PubSubPublishFake) -> None:
    fake.fail_next(grpc.StatusCode.UNAVAILABLE, times=1000)
    started = time.monotonic()
    with pytest.raises(PublishFailed, match="no answer before the deadline"):
        publisher(timeout=1.5).publish(TOPIC, b"x", {})
    assert time.monotonic() - started < 5
    assert 1 < len(fake.requests) < 100  # retried, with backoff


def test_linger_gathers_messages_published_within_the_window(fake: PubSubPublishFake) -> None:
    pub = publisher(linger=1.0)
    results = in_threads([partial(pub.publish, TOPIC, b"m%d" % i, {}) for i in range(4)])
    assert all(isinstance(r, str) for r in results)
    assert [len(r.messages) for r in fake.requests] == [4]


# -- the queue's hand-over, with a scripted Publish RPC -----------------------------------


class ScriptedRpc:
    """A Publish RPC that records each batch and, when told to, blocks or raises."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.threads: list[str] = []  # the thread each RPC was made from
        self.gate = threading.Event()
        self.gate.set()
        self.fail_with: Exception | None = None

    def __call__(self, request: Any, timeout: float) -> Any:
        self.batches.append([m.data for m in request.messages])
        self.threads.append(threading.current_thread().name)
        self.gate.wait(10)
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        return PublishResponse.pb()(
            message_ids=[f"id-{len(self.batches)}-{i}" for i in range(len(request.messages))]
        )


def scripted_sender(rpc: ScriptedRpc) -> _TopicSender:
    return _TopicSender(rpc, f"projects/{PROJECT}/topics/{TOPIC}", 0.0, ProtobufTypes.load())


def pending(data: bytes, seconds: float = 10.0) -> _Pending:
    return _Pending(data, {}, time.monotonic() + seconds)


def test_a_lone_message_is_sent_from_its_callers_own_thread() -> None:
    rpc = ScriptedRpc()
    message = pending(b"solo")
    scripted_sender(rpc).publish(message, 5.0)
    assert message.message_id == "id-1-0"
    assert rpc.threads == [threading.current_thread().name]


def test_a_caller_still_queued_when_its_time_is_up_withdraws_its_message() -> None:
    rpc = ScriptedRpc()
    sender = scripted_sender(rpc)
    rpc.gate.clear()  # the first RPC overruns its deadline
    first = threading.Thread(target=sender.publish, args=(pending(b"first"), 10.0))
    first.start()
    wait_until(lambda: rpc.batches == [[b"first"]])

    late = pending(b"late", seconds=0.2)
    sender.publish(late, 0.2)
    assert late.message_id is None and late.error == "timeout"
    assert sender.queued() == 0

    rpc.gate.set()
    first.join(10)
    after = pending(b"after")
    sender.publish(after, 5.0)
    assert rpc.batches == [[b"first"], [b"after"]]  # "late" was never sent
    assert after.message_id is not None


def test_the_next_caller_sends_even_when_the_rpc_before_it_failed_unexpectedly() -> None:
    rpc = ScriptedRpc()
    sender = scripted_sender(rpc)
    rpc.gate.clear()
    rpc.fail_with = RuntimeError("connection reset by a proxy")
    first_message = pending(b"first")
    first = threading.Thread(target=sender.publish, args=(first_message, 10.0))
    first.start()
    wait_until(lambda: len(rpc.batches) == 1)
    queued = [pending(b"q%d" % i) for i in range(3)]
    followers = [threading.Thread(target=sender.publish, args=(p, 10.0)) for p in queued]
    for thread in followers:
        thread.start()
    wait_until(lambda: sender.queued() == 3)
    rpc.gate.set()
    for thread in [first, *followers]:
        thread.join(10)

    assert first_message.error == "RuntimeError: connection reset by a proxy"
    assert rpc.batches[1] == [b"q0", b"q1", b"q2"]
    assert [p.message_id for p in queued] == ["id-2-0", "id-2-1", "id-2-2"]
    assert sender.queued() == 0
