"""Publishing to Pub/Sub and waiting until it has the message.

A step acknowledges its input, and intake answers 2xx, only after Pub/Sub accepted the
output, so every publish waits for the server's message id. To keep that wait cheap, each
topic has one long-lived sender thread that takes whatever callers have queued and sends it
in one ``Publish`` RPC ("natural batching"): a lone message goes out at once, and under load
the next batch fills by itself while the previous RPC is in flight. An optional linger
(``PUBLISH_BATCH_MAX_LATENCY_MS``) trades a little latency for fewer, larger RPCs.

The RPC goes over the client library's own gRPC channel (its endpoint, credentials and
emulator detection) with the plain protobuf messages. The library's batcher adds proto-plus
conversions, a timer thread per batch and two retry wrappers to every message: under load,
intake spent about 22% of its GIL time publishing through it, and about 17% through this.

Transient failures (the codes the library itself retries) are retried with backoff until the
callers' deadline. A batch refused as a whole with INVALID_ARGUMENT is split and its messages
sent one by one, so a single bad message cannot fail the messages that shared its batch.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

PUBLISH_METHOD = "/google.pubsub.v1.Publisher/Publish"
MAX_MESSAGES_PER_RPC = 1000  # the Publish API's limit
MAX_BYTES_PER_RPC = 9 * 1024 * 1024  # under the API's 10 MB request limit
RETRYABLE = frozenset(
    {
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
    }
)
_BACKOFF_INITIAL = 0.05
_BACKOFF_MAX = 2.0


class PublishFailed(RuntimeError):
    """Pub/Sub did not accept the message in time (transient: answer 503 or redeliver)."""


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str: ...


# the Publish method on a gRPC channel: (PublishRequest protobuf, timeout=...) -> PublishResponse
PublishRpc = Callable[..., Any]


@dataclass
class _Pending:
    data: bytes
    attributes: dict[str, str]
    deadline: float
    # held until the sender resolves the message: the cheapest one-shot signal between threads
    done: threading.Lock = field(default_factory=threading.Lock)
    message_id: str | None = None
    error: str | None = None
    resolved: bool = False

    def __post_init__(self) -> None:
        self.done.acquire()

    def resolve(self, message_id: str | None = None, error: str | None = None) -> None:
        if self.resolved:
            return
        self.message_id, self.error, self.resolved = message_id, error, True
        self.done.release()


class _TopicSender:
    """Sends one topic's queued messages, a batch per RPC, from one daemon thread."""

    def __init__(
        self,
        rpc: PublishRpc,
        topic_path: str,
        linger: float,
        pb: Any,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rpc = rpc
        self._topic_path = topic_path
        self._linger = linger
        self._pb = pb
        self._clock = clock
        self._sleep = sleep
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"publish:{topic_path.rsplit('/', 1)[-1]}", daemon=True
        )
        self._thread.start()

    def submit(self, pending: _Pending) -> None:
        self._queue.put(pending)

    def _take_batch(self) -> list[_Pending]:
        first = self._queue.get()
        batch, size = [first], len(first.data)
        linger_until = self._clock() + self._linger
        while len(batch) < MAX_MESSAGES_PER_RPC and size < MAX_BYTES_PER_RPC:
            try:
                wait = linger_until - self._clock()
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            size += len(item.data)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            try:
                self._send(batch)
            except Exception as error:  # noqa: BLE001 - a sender must outlive any one batch
                for pending in batch:
                    pending.resolve(error=f"{error.__class__.__name__}: {error}")

    def _send(self, batch: list[_Pending]) -> None:
        pb = self._pb
        request = pb.PublishRequest(
            topic=self._topic_path,
            messages=[pb.PubsubMessage(data=p.data, attributes=p.attributes) for p in batch],
        )
        deadline = min(p.deadline for p in batch)
        delay = _BACKOFF_INITIAL
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                for pending in batch:
                    pending.resolve(error="no answer before the deadline")
                return
            try:
                response = self._rpc(request, timeout=remaining)
            except grpc.RpcError as error:
                code = error.code() if callable(getattr(error, "code", None)) else None
                if code in RETRYABLE:
                    self._sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, remaining)))
                    delay = min(delay * 2, _BACKOFF_MAX)
                    continue
                if code is grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1:
                    for pending in batch:
                        self._send([pending])
                    return
                name = code.name if code is not None else error.__class__.__name__
                for pending in batch:
                    pending.resolve(error=f"{name}: {_details(error)}")
                return
            ids = list(response.message_ids)
            if len(ids) != len(batch):
                for pending in batch:
                    pending.resolve(error=f"{len(ids)} message ids for {len(batch)} messages")
                return
            for pending, message_id in zip(batch, ids, strict=True):
                pending.resolve(message_id=message_id)
            return


def _details(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    text = details() if callable(details) else ""
    return (text or "")[:200]


class PubSubPublisher:
    def __init__(
        self,
        project: str,
        batch_max_latency_seconds: float = 0.0,
        timeout_seconds: float = 10.0,
        client: Any | None = None,
    ) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
        from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage

        self._project = project
        self._timeout = timeout_seconds
        self._linger = batch_max_latency_seconds
        # the library's client for its channel (endpoint, credentials, emulator) and admin calls
        self._client = client or pubsub_v1.PublisherClient()
        self._rpc = self._client.transport.grpc_channel.unary_unary(
            PUBLISH_METHOD,
            request_serializer=PublishRequest.pb().SerializeToString,
            response_deserializer=PublishResponse.pb().FromString,
        )
        self._pb = _ProtobufTypes(PublishRequest.pb(), PubsubMessage.pb())
        self._senders: dict[str, _TopicSender] = {}
        self._lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        return f"projects/{self._project}/topics/{topic}"

    def _sender(self, topic: str) -> _TopicSender:
        sender = self._senders.get(topic)
        if sender is None:
            with self._lock:
                sender = self._senders.get(topic)
                if sender is None:
                    sender = _TopicSender(self._rpc, self.topic_path(topic), self._linger, self._pb)
                    self._senders[topic] = sender
        return sender

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        pending = _Pending(data, attributes, time.monotonic() + self._timeout)
        self._sender(topic).submit(pending)
        # the sender resolves every message by its deadline; the margin covers a stuck RPC
        if not pending.done.acquire(timeout=self._timeout + 1.0):
            raise PublishFailed(f"Pub/Sub did not accept the message on {topic}: timeout")
        if pending.message_id is None:
            raise PublishFailed(f"Pub/Sub did not accept the message on {topic}: {pending.error}")
        return pending.message_id

    def topic_exists(self, topic: str) -> bool:
        from google.api_core import exceptions

        try:
            self._client.get_topic(request={"topic": self.topic_path(topic)}, timeout=3)
        except exceptions.NotFound:
            return False
        return True


@dataclass(frozen=True)
class _ProtobufTypes:
    PublishRequest: Any
    PubsubMessage: Any
