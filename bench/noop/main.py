"""No-op functions-framework HTTP functions: the baseline of the intake benchmark.

Each is served exactly like intake (functions-framework in intake's mode, the same WORKERS and
THREADS) and answers every request with 202 and a tiny JSON body without reading it, so the
difference between the two measures intake's own work and nothing of the framework's.
``noop_async`` is the baseline when intake is served as ASGI, ``noop`` when it is WSGI.
"""

from __future__ import annotations

import flask
import functions_framework
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

_ACCEPTED = b'{"status":"accepted"}'


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response(_ACCEPTED, status=202, mimetype="application/json")


@functions_framework.aio.http
async def noop_async(request: Request) -> Response:
    return Response(_ACCEPTED, status_code=202, media_type="application/json")
