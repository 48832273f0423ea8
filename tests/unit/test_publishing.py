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

import grpc
import pytest

from callpipe.publishing import PublishFailed, PubSubPublisher
from tests.fakes.pubsub_publish import PubSubPublishFake

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


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


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
    wait_until(lambda: sender._queue.qsize() == 5)
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
    wait_until(lambda: sender._queue.qsize() == 3)
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
