"""Cloud Function (gen2, HTTP): the CallRail webhook intake.

Routes: POST /api/v1/callrail/webhook[/<event-type>] and GET /health.
The domain logic lives in callpipe.intake; this handler only adapts Flask to it.
"""

from __future__ import annotations

import json
import time

import flask
import functions_framework

from callpipe.config import get_settings
from callpipe.intake.service import (
    READ_HEADERS,
    WEBHOOK_PATH,
    IntakeOutcome,
    IntakeRequest,
    log_outcome,
)
from callpipe.intake.wiring import build_intake_runtime
from callpipe.logs import configure_logging
from callpipe.wiring import Lazy

_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime = Lazy(lambda: build_intake_runtime(_settings))


def _json(status: int, body: dict[str, object]) -> flask.Response:
    # the plain encoder: Flask's goes through the app context and sorts keys, on every request
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


@functions_framework.errorhandler(404)
def _no_route(error: Exception) -> flask.Response:
    # Paths Flask's router cannot even match (a newline in a segment) still get JSON.
    return _json(404, {"error": "not_found", "message": "no route for this path"})


@functions_framework.http
def intake(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    path = request.path.rstrip("/") or "/"
    if path == "/health":
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed", "message": "use GET"})
        report = _runtime.get().health.report()
        return _json(200 if report["status"] == "ok" else 503, report)

    if path != WEBHOOK_PATH and not path.startswith(WEBHOOK_PATH + "/"):
        return _json(404, {"error": "not_found", "message": f"no route for {path}"})
    hint = path[len(WEBHOOK_PATH) + 1 :] or None

    limit = _settings.webhook_max_body_bytes
    oversized = request.content_length is not None and request.content_length > limit
    body = b"" if oversized else request.stream.read(limit + 1)
    outcome: IntakeOutcome = _runtime.get().intake.handle(
        IntakeRequest(
            method=request.method,
            path=path,
            headers={name: value for name in READ_HEADERS if (value := request.headers.get(name))},
            body=body,
            event_hint=hint,
            oversized=oversized,
        )
    )
    log_outcome(outcome, (time.perf_counter() - started) * 1000.0)
    response = _json(outcome.status, outcome.body)
    if outcome.status == 405:
        response.headers["Allow"] = "POST"
    return response
