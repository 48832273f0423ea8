"""The floor of any intake: the benchmark's measure of what the required round trip costs.

Issue 2 asks intake to answer 2xx only once Pub/Sub has accepted the call's message. This
function does that and nothing else: it reads the body, publishes it unchanged with the
project's asyncio publisher, built as intake builds it, and answers 202 once Pub/Sub has
accepted it. No signature, no parsing, no tenant, no kept copy, no log line. It is served
exactly like intake (the same environment) and, like intake, freezes what it has loaded
once it is ready, so its peak is the most an intake that publishes each webhook before
answering can reach on this machine, whatever its checks cost.

It publishes to its own topic (BENCH_FLOOR_TOPIC, one pull subscription like intake's),
which the benchmark creates afresh before each of its runs: the floor never runs behind a
backlog of earlier runs' messages, as intake does.
"""

from __future__ import annotations

import gc
import os

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from callpipe.config import get_settings
from callpipe.publishing import PublishFailed
from callpipe.publishing_async import AsyncPubSubPublisher

_ACCEPTED = b'{"status":"accepted"}'
_settings = get_settings()
_topic = os.environ.get("BENCH_FLOOR_TOPIC", "bench.floor")
_publisher = AsyncPubSubPublisher(
    _settings.google_cloud_project,
    timeout_seconds=_settings.publish_timeout_seconds,
    batch_max_latency_seconds=_settings.publish_batch_max_latency_ms / 1000.0,
    emulator_host=_settings.pubsub_emulator_host,
)
_frozen = False


@functions_framework.aio.http
async def publish_only(request: Request) -> Response:
    global _frozen
    body = await request.body()
    try:
        await _publisher.publish(_topic, body, {"bench": "floor"})
    except PublishFailed:
        return Response(b'{"status":"unavailable"}', status_code=503)
    if not _frozen:
        # as intake does once its clients exist: long-lived objects out of every collection
        gc.freeze()
        _frozen = True
    return Response(_ACCEPTED, status_code=202, media_type="application/json")
