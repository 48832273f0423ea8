"""A local gRPC fake of Pub/Sub's ``Publisher/Publish``, for the failures the emulator cannot
produce (UNAVAILABLE, INVALID_ARGUMENT for one message of a batch, an RPC that hangs).

It serves ``google.pubsub.v1.Publisher/Publish`` on 127.0.0.1 (a free port)
over the real wire protocol, so the publisher under test talks to it through the client
library's own channel (point ``PUBSUB_EMULATOR_HOST`` at ``fake.host``). It checks what the
service checks for this test's purposes (a known topic, 1-1000 messages, data or attributes
in each message, attribute keys and values within their size limits) and answers with
server-assigned message ids.

Scripting: ``fail_next(code, times)`` answers the next RPCs with an error; ``hold()`` makes
RPCs wait until ``release()``, so that messages queue up behind one in flight.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent import futures
from typing import Any

import grpc
from google.pubsub_v1.types import PublishRequest, PublishResponse

MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_MESSAGES = 1000


class PubSubPublishFake:
    def __init__(self, project: str, topics: list[str]) -> None:
        self.topics = {f"projects/{project}/topics/{t}" for t in topics}
        self.requests: list[Any] = []  # every PublishRequest protobuf, in arrival order
        self.accepted: list[tuple[str, str, bytes, dict[str, str]]] = []  # topic, id, data, attrs
        self._failures: deque[grpc.StatusCode] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "google.pubsub.v1.Publisher",
                    {
                        "Publish": grpc.unary_unary_rpc_method_handler(
                            self._publish,
                            request_deserializer=PublishRequest.pb().FromString,
                            response_serializer=PublishResponse.pb().SerializeToString,
                        ),
                    },
                ),
            )
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{port}"

    def __enter__(self) -> PubSubPublishFake:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.set()
        self._server.stop(grace=None)

    def fail_next(self, code: grpc.StatusCode, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([code] * times)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.requests.append(request)
            failure = self._failures.popleft() if self._failures else None
        self._open.wait(30)
        if failure is not None:
            context.abort(failure, f"scripted {failure.name}")
        if request.topic not in self.topics:
            context.abort(grpc.StatusCode.NOT_FOUND, "Resource not found")
        if not 1 <= len(request.messages) <= MAX_MESSAGES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "between 1 and 1000 messages")
        for message in request.messages:
            if not message.data and not message.attributes:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message without data")
            for key, value in message.attributes.items():
                if (
                    len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES
                    or len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES
                ):
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "attribute key or value too long"
                    )
        with self._lock:
            ids = [str(next(self._ids)) for _ in request.messages]
            self.accepted.extend(
                (request.topic, i, m.data, dict(m.attributes))
                for i, m in zip(ids, request.messages, strict=True)
            )
        return PublishResponse.pb()(message_ids=ids)
