"""AsyncPubSubPublisher against a scripted Publish RPC: how messages are batched into RPCs,
retries, failures, withdrawn messages and event loops. What the server accepts is tested
against the emulator in tests/integration/test_publishing.py."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest
from google.pubsub_v1.types import PublishResponse

from callpipe.publishing import PublishFailed
from callpipe.publishing_async import AsyncPubSubPublisher, _TopicSender

PROJECT = "callpipe-unit"
TOPIC = "calls.received"


def aio_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details=details,
    )


class ScriptedRpc:
    """A Publish RPC that records each request and, when told to, holds, raises or answers
    with given ids. Its gate is an asyncio.Event: create it inside the loop that uses it."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.timeouts: list[float] = []
        self.finished = 0
        self.gate = asyncio.Event()
        self.gate.set()
        # what the next calls do, taken when a call arrives: an exception to raise, a list of
        # message ids to answer with; when empty, one id per message
        self.outcomes: deque[BaseException | list[str]] = deque()
        # a request holding this data is refused with this code
        self.refusing: dict[bytes, grpc.StatusCode] = {}

    @property
    def batches(self) -> list[list[bytes]]:
        return [[m.data for m in request.messages] for request in self.requests]

    def then(self, *outcomes: BaseException | list[str]) -> None:
        self.outcomes.extend(outcomes)

    async def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append(request)
        self.timeouts.append(timeout)
        call = len(self.requests)
        outcome = self.outcomes.popleft() if self.outcomes else None
        await self.gate.wait()
        self.finished += 1
        if isinstance(outcome, BaseException):
            raise outcome
        for message in request.messages:
            if message.data in self.refusing:
                raise aio_error(self.refusing[message.data], "refused")
        ids = (
            outcome
            if outcome is not None
            else [f"id-{call}-{i}" for i in range(len(request.messages))]
        )
        return PublishResponse.pb()(message_ids=ids)


def make_publisher(rpc: ScriptedRpc, timeout: float = 10.0) -> AsyncPubSubPublisher:
    return AsyncPubSubPublisher(PROJECT, timeout_seconds=timeout, rpc_factory=lambda: rpc)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def until(condition: Callable[[], bool], rounds: int = 1000) -> None:
    """Let the loop's other tasks run until ``condition`` holds (no clock involved)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def sender_of(pub: AsyncPubSubPublisher, topic: str = TOPIC) -> _TopicSender:
    return pub._loops[asyncio.get_running_loop()].senders[topic]


async def one_rpc_in_flight(pub: AsyncPubSubPublisher, rpc: ScriptedRpc) -> asyncio.Task[str]:
    """Publish b"first" and hold its RPC until ``rpc.gate.set()``."""
    rpc.gate.clear()
    first = asyncio.create_task(pub.publish(TOPIC, b"first", {}))
    await until(lambda: len(rpc.requests) == 1)
    return first


def queue(pub: AsyncPubSubPublisher, *payloads: bytes) -> list[asyncio.Task[str]]:
    return [asyncio.create_task(pub.publish(TOPIC, data, {"n": "1"})) for data in payloads]


def test_a_lone_message_goes_out_at_once_with_the_servers_id() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        message_id = await pub.publish(TOPIC, b"solo", {"tenant_id": "acme"})

        assert message_id == "id-1-0"
        (request,) = rpc.requests
        assert request.topic == f"projects/{PROJECT}/topics/{TOPIC}"
        assert [(m.data, dict(m.attributes)) for m in request.messages] == [
            (b"solo", {"tenant_id": "acme"})
        ]
        assert 0 < rpc.timeouts[0] <= 10.0

    run(test)


def test_topic_path() -> None:
    assert make_publisher(ScriptedRpc()).topic_path("t") == f"projects/{PROJECT}/topics/t"


def test_messages_queued_behind_an_rpc_in_flight_go_out_together_in_the_next() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        waiting = queue(pub, *[b"m%d" % i for i in range(5)])
        await until(lambda: sender_of(pub).queued() == 5)
        assert len(rpc.requests) == 1  # nothing else goes out while the first RPC is in flight

        rpc.gate.set()
        assert await first == "id-1-0"
        assert await asyncio.gather(*waiting) == [f"id-2-{i}" for i in range(5)]
        assert rpc.batches == [[b"first"], [b"m%d" % i for i in range(5)]]

    run(test)


def test_topics_have_separate_queues() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        other = asyncio.create_task(pub.publish("calls.received.dlq", b"other", {}))
        await until(lambda: len(rpc.requests) == 2)  # not queued behind the other topic's RPC
        rpc.gate.set()
        await asyncio.gather(first, other)
        assert [r.topic.rsplit("/", 1)[-1] for r in rpc.requests] == [TOPIC, "calls.received.dlq"]

    run(test)


def test_a_linger_gathers_messages_published_within_it_into_one_rpc() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = AsyncPubSubPublisher(PROJECT, rpc_factory=lambda: rpc, batch_max_latency_seconds=1.0)
        first = asyncio.create_task(pub.publish(TOPIC, b"a", {}))
        loop = asyncio.get_running_loop()
        await until(lambda: loop in pub._loops and TOPIC in pub._loops[loop].senders)
        assert rpc.requests == []  # lingering: nothing sent yet
        second = asyncio.create_task(pub.publish(TOPIC, b"b", {}))
        assert await asyncio.gather(first, second) == ["id-1-0", "id-1-1"]
        assert rpc.batches == [[b"a", b"b"]]

    run(test)


def test_transient_errors_are_retried_until_accepted() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        rpc.then(aio_error(grpc.StatusCode.UNAVAILABLE), aio_error(grpc.StatusCode.UNAVAILABLE))
        message_id = await make_publisher(rpc).publish(TOPIC, b"x", {})
        assert message_id == "id-3-0"
        assert rpc.batches == [[b"x"], [b"x"], [b"x"]]

    run(test)


def test_a_permanent_error_fails_every_message_of_the_batch_with_its_code() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        rpc.then(aio_error(grpc.StatusCode.PERMISSION_DENIED, "no publish permission"))
        waiting = queue(pub, b"secret-payload-1", b"secret-payload-2")
        await until(lambda: sender_of(pub).queued() == 2)
        rpc.gate.set()
        await first
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)

        for outcome in outcomes:
            assert isinstance(outcome, PublishFailed)
            assert "PERMISSION_DENIED" in str(outcome) and TOPIC in str(outcome)
            assert "secret-payload" not in str(outcome)
        assert len(rpc.requests) == 2  # not retried

    run(test)


def test_one_invalid_message_does_not_fail_the_messages_batched_with_it() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        rpc.refusing[b"bad"] = grpc.StatusCode.INVALID_ARGUMENT
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        waiting = queue(pub, b"good-1", b"bad", b"good-2")
        await until(lambda: sender_of(pub).queued() == 3)
        rpc.gate.set()
        await first
        good_1, bad, good_2 = await asyncio.gather(*waiting, return_exceptions=True)

        assert good_1 == "id-3-0" and good_2 == "id-5-0"
        assert isinstance(bad, PublishFailed) and "INVALID_ARGUMENT" in str(bad)
        assert rpc.batches == [
            [b"first"],
            [b"good-1", b"bad", b"good-2"],
            [b"good-1"],
            [b"bad"],
            [b"good-2"],
        ]

    run(test)


def test_a_message_still_queued_at_its_deadline_is_withdrawn_and_never_sent() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)  # held past the late message's deadline
        sender = sender_of(pub)
        loop = asyncio.get_running_loop()

        with pytest.raises(PublishFailed, match="withdrawn unsent") as raised:
            await sender.publish(b"late", {}, loop.time() + 0.2)
        assert TOPIC in str(raised.value)
        assert sender.queued() == 0

        rpc.gate.set()
        assert await first == "id-1-0"
        assert await pub.publish(TOPIC, b"after", {}) == "id-2-0"
        assert rpc.batches == [[b"first"], [b"after"]]  # "late" was never sent

    run(test)


def test_an_rpc_that_outlives_its_timeout_fails_its_callers_and_frees_the_topic() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        rpc.gate.clear()  # and the scripted RPC ignores its timeout
        # a second of deadline: on a loaded machine the sender may start late, and a message
        # still queued at its deadline would be withdrawn instead of sent
        pub = make_publisher(rpc, timeout=1.0)
        outcomes = await asyncio.gather(
            *[pub.publish(TOPIC, b"m%d" % i, {}) for i in range(3)], return_exceptions=True
        )
        for outcome in outcomes:
            assert isinstance(outcome, PublishFailed)
            assert "no answer before the deadline" in str(outcome)
        assert rpc.batches == [[b"m0", b"m1", b"m2"]]

        rpc.gate.set()
        assert await pub.publish(TOPIC, b"after", {}) == "id-2-0"

    run(test)


def test_a_batch_whose_earliest_deadline_passes_keeps_retrying_the_others() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        rpc.refusing[b"short"] = grpc.StatusCode.UNAVAILABLE
        pub = make_publisher(rpc)
        await pub.publish(TOPIC, b"first", {})
        sender = sender_of(pub)
        loop = asyncio.get_running_loop()
        short, long = await asyncio.gather(
            sender.publish(b"short", {}, loop.time() + 1.0),
            sender.publish(b"long", {}, loop.time() + 10.0),
            return_exceptions=True,
        )

        assert isinstance(short, PublishFailed) and "no answer before the deadline" in str(short)
        assert isinstance(long, str)
        batches = rpc.batches
        assert batches[0] == [b"first"] and batches[-1] == [b"long"]
        assert set(map(tuple, batches[1:-1])) == {(b"short", b"long")}  # retried together
        assert rpc.timeouts[1] <= 1.0  # the batch's earliest deadline

    run(test)


def test_a_cancelled_caller_withdraws_its_queued_message() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        gone, kept = queue(pub, b"gone", b"kept")
        await until(lambda: sender_of(pub).queued() == 2)

        gone.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert sender_of(pub).queued() == 1

        rpc.gate.set()
        assert await first == "id-1-0"
        assert await kept == "id-2-0"
        assert rpc.batches == [[b"first"], [b"kept"]]

    run(test)


def test_a_cancelled_caller_does_not_cancel_the_rpc_carrying_other_messages() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        waiting = queue(pub, b"q0", b"q1")
        await until(lambda: sender_of(pub).queued() == 2)

        first.cancel()  # its message is in the RPC already
        with pytest.raises(asyncio.CancelledError):
            await first
        rpc.gate.set()
        assert await asyncio.gather(*waiting) == ["id-2-0", "id-2-1"]
        assert rpc.finished == 2  # the first RPC ran to its end
        assert rpc.batches == [[b"first"], [b"q0", b"q1"]]

    run(test)


def test_the_queue_is_sent_even_when_the_rpc_before_it_failed_unexpectedly() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        rpc.then(RuntimeError("connection reset by a proxy"))
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        waiting = queue(pub, b"q0", b"q1", b"q2")
        await until(lambda: sender_of(pub).queued() == 3)
        rpc.gate.set()

        with pytest.raises(PublishFailed, match="RuntimeError: connection reset by a proxy"):
            await first
        assert await asyncio.gather(*waiting) == ["id-2-0", "id-2-1", "id-2-2"]
        assert await pub.publish(TOPIC, b"after", {}) == "id-3-0"
        assert rpc.batches == [[b"first"], [b"q0", b"q1", b"q2"], [b"after"]]

    run(test)


def test_a_count_of_ids_unlike_the_count_of_messages_fails_them_all() -> None:
    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        rpc.then(["only-one"])
        waiting = queue(pub, b"a", b"b")
        await until(lambda: sender_of(pub).queued() == 2)
        rpc.gate.set()
        await first

        for outcome in await asyncio.gather(*waiting, return_exceptions=True):
            assert isinstance(outcome, PublishFailed)
            assert "1 message ids for 2 messages" in str(outcome)

    run(test)


def test_an_oversized_message_goes_out_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callpipe.publishing_async.MAX_BYTES_PER_RPC", 10)

    async def test() -> None:
        rpc = ScriptedRpc()
        pub = make_publisher(rpc)
        first = await one_rpc_in_flight(pub, rpc)
        waiting = queue(pub, b"x" * 20, b"aaaa", b"bbbb", b"cccc")
        await until(lambda: sender_of(pub).queued() == 4)
        rpc.gate.set()
        await asyncio.gather(first, *waiting)
        assert rpc.batches == [[b"first"], [b"x" * 20], [b"aaaa", b"bbbb"], [b"cccc"]]

    run(test)


def test_each_event_loop_gets_its_own_rpc() -> None:
    made: list[ScriptedRpc] = []

    def factory() -> ScriptedRpc:
        made.append(ScriptedRpc())
        return made[-1]

    pub = AsyncPubSubPublisher(PROJECT, rpc_factory=factory)
    assert asyncio.run(pub.publish(TOPIC, b"in loop 1", {})) == "id-1-0"
    assert asyncio.run(pub.publish(TOPIC, b"in loop 2", {})) == "id-1-0"
    assert [rpc.batches for rpc in made] == [[[b"in loop 1"]], [[b"in loop 2"]]]
    assert len(pub._loops) == 1  # the closed loop's state was dropped
