"""Publishing to Pub/Sub and waiting until it has the message.

A step acknowledges its input, and intake answers 2xx, only after Pub/Sub accepted the
output, so every publish waits for the server's message id. To keep that wait cheap, a
topic's messages go out in batches, one ``Publish`` RPC in flight per topic, and the
callers send them themselves ("leader/follower"): a caller that finds no RPC in flight
sends at once, with no thread hand-off; callers that arrive while one is in flight queue up,
and when it returns the first of them is woken to send the whole queue in the next RPC. A
lone message thus goes out at once, and under load batches fill by themselves. An optional
linger (``PUBLISH_BATCH_MAX_LATENCY_MS``) trades a little latency for fewer, larger RPCs.

The RPC goes over the client library's own gRPC channel (its endpoint, credentials and
emulator detection) with the plain protobuf messages. The library's batcher adds proto-plus
conversions, a timer thread per batch and two retry wrappers to every message, and hands
each message to another thread and back: under load, intake spent about 22% of its GIL time
publishing through it.

Transient failures (the codes the library itself retries) are retried with backoff until the
callers' deadline. A batch refused as a whole with INVALID_ARGUMENT is split and its messages
sent one by one, so a single bad message cannot fail the messages that shared its batch.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
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


@dataclass(eq=False)  # compared by identity: a caller that gives up removes its own
class _Pending:
    data: bytes
    attributes: dict[str, str]
    deadline: float
    # held until the message is resolved or its caller is made the next sender: the
    # cheapest one-shot signal between threads
    done: threading.Lock = field(default_factory=threading.Lock)
    message_id: str | None = None
    error: str | None = None
    resolved: bool = False
    leads: bool = False

    def __post_init__(self) -> None:
        self.done.acquire()

    def resolve(self, message_id: str | None = None, error: str | None = None) -> None:
        if self.resolved:
            return
        self.message_id, self.error, self.resolved = message_id, error, True
        if not self.leads:  # a leader is awake already: its signal was used to wake it
            self.done.release()

    def promote(self) -> None:
        self.leads = True
        self.done.release()


class _TopicSender:
    """One topic's queue of messages; its callers take turns sending it, a batch per RPC."""

    def __init__(
        self,
        rpc: PublishRpc,
        topic_path: str,
        linger: float,
        pb: ProtobufTypes,
    ) -> None:
        self._rpc = rpc
        self._topic_path = topic_path
        self._linger = linger
        self._pb = pb
        self._mutex = threading.Lock()
        self._waiting: deque[_Pending] = deque()  # guarded by _mutex
        self._sending = False  # an RPC is in flight or about to be; guarded by _mutex

    def queued(self) -> int:
        with self._mutex:
            return len(self._waiting)

    def publish(self, pending: _Pending, wait_seconds: float) -> None:
        """Return once ``pending`` is resolved, or after ``wait_seconds`` if it never goes out."""
        with self._mutex:
            self._waiting.append(pending)
            leads = not self._sending
            self._sending = True
        if leads or self._wait(pending, wait_seconds):
            self._lead(pending)

    def _wait(self, pending: _Pending, wait_seconds: float) -> bool:
        """Wait as a follower; True when this caller was made the next sender."""
        if not pending.done.acquire(timeout=wait_seconds):
            with self._mutex:
                if not pending.leads and pending in self._waiting:
                    # never sent: withdrawn, so that no later batch sends it behind our back
                    self._waiting.remove(pending)
                    pending.resolve(error="timeout")
                    return False
            # promoted this very moment, or in an RPC whose own deadline has passed by now
            if not pending.done.acquire(timeout=wait_seconds):
                pending.resolve(error="timeout")
                return False
        return pending.leads and not pending.resolved

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        with self._mutex:
            while (
                self._waiting
                and len(batch) < MAX_MESSAGES_PER_RPC
                and (not batch or size + len(self._waiting[0].data) <= MAX_BYTES_PER_RPC)
            ):
                pending = self._waiting.popleft()
                batch.append(pending)
                size += len(pending.data)
        return batch

    def _lead(self, own: _Pending) -> None:
        """Send the queue's head (``own`` first) in one RPC, then hand over to the next."""
        batch: list[_Pending] = []
        try:
            if self._linger:
                time.sleep(self._linger)
            batch = self._take_batch()
            self._send(batch)
        except Exception as error:  # noqa: BLE001 - every caller in the batch gets the error
            for pending in batch or [own]:
                pending.resolve(error=f"{error.__class__.__name__}: {error}")
        finally:
            with self._mutex:
                if self._waiting:
                    self._waiting[0].promote()
                else:
                    self._sending = False

    def _send(self, batch: list[_Pending]) -> None:
        request = self._pb.request(self._topic_path, batch)
        deadline = min(p.deadline for p in batch)
        delay = _BACKOFF_INITIAL
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for pending in batch:
                    pending.resolve(error="no answer before the deadline")
                return
            try:
                response = self._rpc(request, timeout=remaining)
            except grpc.RpcError as error:
                code = rpc_status(error)
                if code in RETRYABLE:
                    time.sleep(backoff_pause(delay, remaining))
                    delay = next_backoff(delay)
                    continue
                if code is grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1:
                    for pending in batch:
                        self._send([pending])
                    return
                for pending in batch:
                    pending.resolve(error=rpc_failure(error, code))
                return
            ids = list(response.message_ids)
            if len(ids) != len(batch):
                for pending in batch:
                    pending.resolve(error=id_count_mismatch(ids, batch))
                return
            for pending, message_id in zip(batch, ids, strict=True):
                pending.resolve(message_id=message_id)
            return


# -- shared with callpipe.publishing_async ------------------------------------------------


class PublishedMessage(Protocol):
    data: bytes
    attributes: dict[str, str]


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def publish_rpc(channel: Any) -> Any:
    """The Publish method on a gRPC channel, sync or asyncio, with the plain protobufs."""
    from google.pubsub_v1.types import PublishRequest, PublishResponse

    return channel.unary_unary(
        PUBLISH_METHOD,
        request_serializer=PublishRequest.pb().SerializeToString,
        response_deserializer=PublishResponse.pb().FromString,
    )


def rpc_status(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None  # type: ignore[no-any-return]


def rpc_failure(error: grpc.RpcError, code: grpc.StatusCode | None) -> str:
    """Why the RPC failed, for the callers: the status and the server's words (never data)."""
    name = code.name if code is not None else error.__class__.__name__
    details = getattr(error, "details", None)
    text = details() if callable(details) else ""
    return f"{name}: {(text or '')[:200]}"


def backoff_pause(delay: float, remaining: float) -> float:
    """A jittered pause of up to ``delay``, never past the deadline ``remaining`` away."""
    return min(delay * random.uniform(0.5, 1.0), max(0.0, remaining))


def next_backoff(delay: float) -> float:
    return min(delay * 2, _BACKOFF_MAX)


def id_count_mismatch(ids: Sequence[str], batch: Sequence[Any]) -> str:
    return f"{len(ids)} message ids for {len(batch)} messages"


class PubSubPublisher:
    def __init__(
        self,
        project: str,
        batch_max_latency_seconds: float = 0.0,
        timeout_seconds: float = 10.0,
        client: Any | None = None,
    ) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        self._project = project
        self._timeout = timeout_seconds
        self._linger = batch_max_latency_seconds
        # the library's client for its channel (endpoint, credentials, emulator) and admin calls
        self._client = client or pubsub_v1.PublisherClient()
        self._rpc = publish_rpc(self._client.transport.grpc_channel)
        self._pb = ProtobufTypes.load()
        self._senders: dict[str, _TopicSender] = {}
        self._lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        return topic_path(self._project, topic)

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
        # every RPC ends by its callers' deadline; the margin covers a stuck one
        self._sender(topic).publish(pending, self._timeout + 1.0)
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
class ProtobufTypes:
    PublishRequest: Any
    PubsubMessage: Any

    @classmethod
    def load(cls) -> ProtobufTypes:
        from google.pubsub_v1.types import PublishRequest, PubsubMessage

        return cls(PublishRequest.pb(), PubsubMessage.pb())

    def request(self, topic_path: str, batch: Iterable[PublishedMessage]) -> Any:
        return self.PublishRequest(
            topic=topic_path,
            messages=[self.PubsubMessage(data=m.data, attributes=m.attributes) for m in batch],
        )
