"""Cloud Function (gen2, HTTP, served as ASGI): the CallRail webhook intake.

Routes: POST /api/v1/callrail/webhook[/<event-type>] and GET /health.
The domain logic lives in callpipe.intake; this handler only adapts Starlette to it.

It runs on functions-framework's ASGI server (the step is ``asgi: true`` in
schemas/pipeline.yaml, which sets ``FUNCTION_USE_ASGI=true``; the ``aio`` decorator alone
would also select it): one event loop serves every concurrent request, and a request spends
most of its time waiting for Pub/Sub to take its message. With a thread per request instead,
the threads' hand-offs of the GIL cost more CPU than intake's own work.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time

import functions_framework.aio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from callpipe.config import get_settings
from callpipe.intake.service import (
    READ_HEADERS,
    WEBHOOK_PATH,
    IntakeOutcome,
    IntakeRequest,
    client_disconnected,
    log_outcome,
    not_started,
)
from callpipe.intake.wiring import IntakeRuntime, build_intake_runtime
from callpipe.logs import configure_logging
from callpipe.wiring import Lazy

_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime = Lazy(lambda: build_intake_runtime(_settings))


def _json(status: int, body: dict[str, object]) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


async def _runtime_ready() -> IntakeRuntime:
    """The runtime, built on first use; raises what building it raised, and the next
    request tries again (``Lazy`` keeps nothing from a failed build)."""
    runtime = _runtime.peek()
    if runtime is None:
        # built once, in a thread: it opens Spanner and Pub/Sub clients
        runtime = await asyncio.to_thread(_runtime.get)
        # The libraries and clients loaded by now are ~100,000 objects that live as long as
        # the process. A full collection scans them all, about 75 ms during which the loop
        # answers no request; frozen, they are left out of every collection (p99 under load
        # fell from about 90 ms to about 35 ms in the benchmark).
        gc.freeze()
    return runtime


def _answer(outcome: IntakeOutcome, started: float) -> Response:
    """The outcome's one log line, then its JSON answer."""
    log_outcome(outcome, (time.perf_counter() - started) * 1000.0)
    response = _json(outcome.status, outcome.body)
    if outcome.status == 405:
        response.headers["Allow"] = "POST"
    return response


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes and a little more when it is longer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)


# the raw (lower-case) names of the headers intake reads, with the body's declared length
_WANTED = {name.encode("latin-1") for name in (*READ_HEADERS, "content-length")}


def _read_headers(request: Request) -> dict[str, str]:
    """The headers intake reads, in one pass over the raw list (the first of a repeated
    one, as Starlette's ``headers.get`` gives)."""
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


@functions_framework.aio.http
async def intake(request: Request) -> Response:
    started = time.perf_counter()
    path = request.scope["path"].rstrip("/") or "/"
    if path == "/health":
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed", "message": "use GET"})
        try:
            runtime = await _runtime_ready()
        except Exception as error:  # noqa: BLE001 - any failure to start is a 503
            return _answer(not_started(_read_headers(request), path, error), started)
        report = await asyncio.to_thread(runtime.health.report)
        return _json(200 if report["status"] == "ok" else 503, report)

    if path != WEBHOOK_PATH and not path.startswith(WEBHOOK_PATH + "/"):
        return _json(404, {"error": "not_found", "message": f"no route for {path}"})
    hint = path[len(WEBHOOK_PATH) + 1 :] or None

    limit = _settings.webhook_max_body_bytes
    headers = _read_headers(request)
    declared = headers.pop("content-length", "")
    oversized = declared.isascii() and declared.isdigit() and int(declared) > limit
    try:
        body = b"" if oversized else await _read_body(request, limit)
    except ClientDisconnect:
        return _answer(client_disconnected(headers), started)
    try:
        runtime = await _runtime_ready()
    except Exception as error:  # noqa: BLE001 - any failure to start is a 503
        return _answer(not_started(headers, path, error), started)
    outcome = await runtime.intake.handle_async(
        IntakeRequest(
            method=request.method,
            path=path,
            headers={name: value for name, value in headers.items() if value},
            body=body,
            event_hint=hint,
            oversized=oversized,
        ),
        runtime.publisher,
    )
    return _answer(outcome, started)
