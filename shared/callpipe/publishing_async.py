"""Publishing to Pub/Sub from asyncio code, waiting until Pub/Sub has the message.

The asyncio counterpart of :mod:`callpipe.publishing`, with the same contract: ``publish``
returns the server's message id once Pub/Sub accepted the message, or raises
``PublishFailed`` by the caller's deadline. It serves an HTTP function run by uvicorn: one
event loop per process, thousands of requests a second, each awaiting its publish.

Everything runs on the event loop's thread, so the queues need no locks; nothing here may
block that thread, which would stall every request of the process (backoff is
``asyncio.sleep``, the Application Default Credentials lookup, which may query the metadata
server, runs in a worker thread). gRPC's asyncio objects belong to the loop they were created
in, so the channel and the per-topic queues are kept per running loop: a test client that
runs each request in a new loop gets a fresh set instead of a channel from a closed loop.

Per topic, one ``Publish`` RPC is in flight at a time. Messages that arrive meanwhile queue up
and go out together in the next RPC, so a lone message goes out at once (there is no linger)
and under load batches fill by themselves. The RPC is made by a task of its own rather than
by one of its callers, as the thread-based publisher does: a caller's task is cancelled when
its client disconnects, and that must not cancel an RPC that carries other callers'
messages. Waiting costs a caller a future, not a thread, so there is no hand-off to avoid.

A caller whose deadline passes while its message is still queued, or whose task is
cancelled, withdraws the message: it is skipped when the next batch is taken, so it is never
sent behind the caller's back. A message already in an RPC cannot be withdrawn: its caller
gets the RPC's outcome, by its own deadline. The RPC's timeout is the batch's earliest
deadline; when that passes, the messages whose time is up fail and the rest are retried in
their own time, so that a batch is not failed by the one message queued longest.

Retries, the split of a batch refused with INVALID_ARGUMENT and the error messages follow
:mod:`callpipe.publishing`, whose limits and codes are used here.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from callpipe.publishing import (
    _BACKOFF_INITIAL,
    MAX_BYTES_PER_RPC,
    MAX_MESSAGES_PER_RPC,
    RETRYABLE,
    ProtobufTypes,
    PublishFailed,
    backoff_pause,
    id_count_mismatch,
    next_backoff,
    publish_rpc,
    rpc_failure,
    rpc_status,
    topic_path,
)

# gRPC enforces the RPC's timeout itself; this bounds an RPC that somehow outlives it, so
# that a stuck call cannot hold its topic's queue (and its callers) forever
_STUCK_MARGIN = 1.0
# the options the library's own Publisher transport opens its channel with
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_metadata_size", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30000),
]


class AsyncPublishRpc(Protocol):
    """The Publish method on a ``grpc.aio`` channel: PublishRequest -> PublishResponse."""

    def __call__(self, request: Any, *, timeout: float) -> Awaitable[Any]: ...


@dataclass(eq=False, slots=True)
class _Pending:
    data: bytes
    attributes: dict[str, str]
    deadline: float  # on the loop's clock
    future: asyncio.Future[str]
    # taken into an RPC: from then on only the sender resolves it. A queued message whose
    # future is done was withdrawn by its caller (deadline passed or task cancelled).
    sent: bool = False


class _TopicSender:
    """One topic's queue on one event loop, sent a batch per RPC by a task of its own."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rpc: AsyncPublishRpc,
        topic: str,
        topic_path: str,
        pb: ProtobufTypes,
        linger: float = 0.0,
    ) -> None:
        self._loop = loop
        self._linger = linger
        self._rpc = rpc
        self._topic = topic
        self._topic_path = topic_path
        self._pb = pb
        self._waiting: deque[_Pending] = deque()
        # runs while the queue is not empty; the loop keeps only a weak reference to tasks
        self._task: asyncio.Task[None] | None = None

    def queued(self) -> int:
        """Messages still queued and not withdrawn."""
        return sum(1 for pending in self._waiting if not pending.future.done())

    async def publish(self, data: bytes, attributes: dict[str, str], deadline: float) -> str:
        pending = _Pending(data, attributes, deadline, self._loop.create_future())
        self._waiting.append(pending)
        # a sender cancelled before its first step never ran its cleanup: replaced, not awaited
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name=f"publish {self._topic}")
        expiry = self._loop.call_at(deadline, self._expire, pending)
        try:
            # a cancelled caller cancels this future, which withdraws the message if queued
            return await pending.future
        except asyncio.CancelledError:
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # answered as the caller left: not worth a warning
            raise
        finally:
            expiry.cancel()

    def _expire(self, pending: _Pending) -> None:
        # a message in an RPC is left to it: the RPC ends by this deadline too
        if not pending.sent and not pending.future.done():
            self._fail(pending, "timeout: still queued at the deadline, withdrawn unsent")

    def _fail(self, pending: _Pending, error: str) -> None:
        if not pending.future.done():
            pending.future.set_exception(
                PublishFailed(f"Pub/Sub did not accept the message on {self._topic}: {error}")
            )

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        waiting = self._waiting
        now = self._loop.time()
        while waiting and len(batch) < MAX_MESSAGES_PER_RPC:
            head = waiting[0]
            if head.future.done():  # withdrawn: dropped here, so withdrawing costs O(1)
                waiting.popleft()
                continue
            if head.deadline <= now:
                # its expiry has not run yet; sent, it would give the whole RPC no time at all
                waiting.popleft()
                self._fail(head, "timeout: still queued at the deadline, withdrawn unsent")
                continue
            if batch and size + len(head.data) > MAX_BYTES_PER_RPC:
                break
            waiting.popleft()
            head.sent = True
            batch.append(head)
            size += len(head.data)
        return batch

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                if self._linger:
                    # more messages may arrive meanwhile: fewer, larger RPCs
                    await asyncio.sleep(self._linger)
                batch = self._take_batch()
                if not batch:
                    break
                try:
                    await self._send(batch)
                except Exception as error:  # noqa: BLE001 - every caller in the batch gets it
                    for pending in batch:
                        self._fail(pending, f"{error.__class__.__name__}: {str(error)[:200]}")
        finally:
            # no await between the empty take and here: a message queued later starts a new task
            self._task = None
            # only when cancelled (the loop shutting down): nobody may wait for a sender gone
            for pending in [*batch, *self._waiting]:
                self._fail(pending, "the publisher's sender task stopped")
            self._waiting.clear()

    async def _send(self, batch: list[_Pending]) -> None:
        request = self._pb.request(self._topic_path, batch)
        deadline = min(p.deadline for p in batch)
        delay = _BACKOFF_INITIAL
        while True:
            now = self._loop.time()
            if now >= deadline:
                # the batch's earliest deadline: those callers are answered, while the others,
                # queued later, keep retrying in their own time rather than fail with them
                for pending in batch:
                    if pending.deadline <= now:
                        self._fail(pending, "no answer before the deadline")
                batch = [p for p in batch if not p.future.done()]
                if not batch:
                    return
                request = self._pb.request(self._topic_path, batch)
                deadline = min(p.deadline for p in batch)
                continue
            try:
                async with asyncio.timeout_at(deadline + _STUCK_MARGIN):
                    response = await self._rpc(request, timeout=deadline - now)
            except TimeoutError:
                for pending in batch:
                    self._fail(pending, "no answer before the deadline")
                return
            except grpc.RpcError as error:
                code = rpc_status(error)
                if code in RETRYABLE:
                    await asyncio.sleep(backoff_pause(delay, deadline - self._loop.time()))
                    delay = next_backoff(delay)
                    continue
                if code is grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1:
                    # refused as a whole: one bad message must not fail the others with it
                    for pending in batch:
                        if not pending.future.done():  # its caller may have gone meanwhile
                            await self._send([pending])
                    return
                for pending in batch:
                    self._fail(pending, rpc_failure(error, code))
                return
            ids = list(response.message_ids)
            if len(ids) != len(batch):
                for pending in batch:
                    self._fail(pending, id_count_mismatch(ids, batch))
                return
            for pending, message_id in zip(batch, ids, strict=True):
                if not pending.future.done():
                    pending.future.set_result(message_id)
            return


@dataclass(eq=False)
class _LoopState:
    rpc: AsyncPublishRpc
    senders: dict[str, _TopicSender] = field(default_factory=dict)


class AsyncPubSubPublisher:
    def __init__(
        self,
        project: str,
        timeout_seconds: float = 10.0,
        rpc_factory: Callable[[], AsyncPublishRpc] | None = None,
        batch_max_latency_seconds: float = 0.0,
        emulator_host: str | None = None,
    ) -> None:
        """``emulator_host`` (PUBSUB_EMULATOR_HOST) points it at the emulator; without it,
        at pubsub.googleapis.com with Application Default Credentials."""
        self._project = project
        self._timeout = timeout_seconds
        self._linger = batch_max_latency_seconds
        self._rpc_factory = rpc_factory
        self._emulator_host = emulator_host
        self._credentials: Any | None = None
        self._credentials_lock = threading.Lock()
        self._pb = ProtobufTypes.load()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        # loops of other threads (a test client's) may start at the same time as ours
        self._loops_lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        return topic_path(self._project, topic)

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop) or await self._start(loop, topic)
        sender = state.senders.get(topic)
        if sender is None:
            sender = _TopicSender(
                loop, state.rpc, topic, self.topic_path(topic), self._pb, self._linger
            )
            state.senders[topic] = sender
        return await sender.publish(data, attributes, loop.time() + self._timeout)

    async def _start(self, loop: asyncio.AbstractEventLoop, topic: str) -> _LoopState:
        factory = self._rpc_factory or await self._default_rpc_factory(topic)
        with self._loops_lock:  # held for no await: the loop is never left waiting on it
            state = self._loops.get(loop)  # another caller may have started it while we awaited
            if state is None:
                # a closed loop's channel and queues can never be used again
                for closed in [other for other in self._loops if other.is_closed()]:
                    del self._loops[closed]
                state = _LoopState(factory())
                self._loops[loop] = state
        return state

    async def _default_rpc_factory(self, topic: str) -> Callable[[], AsyncPublishRpc]:
        from google.auth.exceptions import GoogleAuthError

        host = self._emulator_host
        if host is not None:
            return lambda: publish_rpc(grpc.aio.insecure_channel(host, options=_CHANNEL_OPTIONS))
        if self._credentials is None:
            try:
                await asyncio.to_thread(self._load_credentials)
            except GoogleAuthError as error:
                # the metadata server may not have answered: the next request looks again
                raise PublishFailed(
                    f"Pub/Sub did not accept the message on {topic}: no credentials "
                    f"({error.__class__.__name__})"
                ) from error
        credentials = self._credentials
        return lambda: publish_rpc(_pubsub_channel(credentials))

    def _load_credentials(self) -> None:
        """Application Default Credentials, looked up once (in a worker thread: it may query
        the metadata server)."""
        import google.auth
        from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
            PublisherGrpcAsyncIOTransport,
        )

        with self._credentials_lock:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(
                    default_scopes=PublisherGrpcAsyncIOTransport.AUTH_SCOPES
                )


def _pubsub_channel(credentials: Any) -> Any:
    """pubsub.googleapis.com, opened as the library's asyncio Publisher transport opens it.

    The transport's constructor would also add its logging interceptor to the channel, which
    runs every call through an intercepted call object (and logs payloads at DEBUG); the
    thread-based publisher uses the transport's channel without it too.
    """
    from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
        PublisherGrpcAsyncIOTransport,
    )

    return PublisherGrpcAsyncIOTransport.create_channel(
        f"{PublisherGrpcAsyncIOTransport.DEFAULT_HOST}:443",
        credentials=credentials,
        options=_CHANNEL_OPTIONS,
    )
