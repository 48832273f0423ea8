"""The floor of any intake: the benchmark's measure of what the required round trip costs.

Issue 2 asks intake to answer 2xx only once Pub/Sub has accepted the call's message. This
function does that and nothing else: it reads the body, publishes it unchanged to intake's
topic with the project's asyncio publisher (the one intake uses), and answers 202 once
Pub/Sub has accepted it. No signature, no parsing, no tenant, no kept copy, no log line.
It is served exactly like intake and the no-op, so its peak is the most an intake that
publishes each webhook before answering can reach on this machine, whatever its checks
cost; intake's peak against it shows what the checks cost, the no-op's against it what
the round trip costs.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from callpipe.config import get_settings
from callpipe.publishing import PublishFailed
from callpipe.publishing_async import AsyncPubSubPublisher

_ACCEPTED = b'{"status":"accepted"}'
_settings = get_settings()
_publisher = AsyncPubSubPublisher(
    _settings.google_cloud_project,
    timeout_seconds=_settings.publish_timeout_seconds,
    emulator_host=_settings.pubsub_emulator_host,
)


@functions_framework.aio.http
async def publish_only(request: Request) -> Response:
    body = await request.body()
    try:
        await _publisher.publish(_settings.calls_received_topic, body, {"bench": "floor"})
    except PublishFailed:
        return Response(b'{"status":"unavailable"}', status_code=503)
    return Response(_ACCEPTED, status_code=202, media_type="application/json")
