"""A no-op functions-framework HTTP function: the baseline of the intake benchmark.

It is served exactly like intake (functions-framework, gunicorn gthread, the same WORKERS and
THREADS) and answers every request with 202 and a tiny JSON body without reading it, so the
difference between the two measures intake's own work and nothing of the framework's.
"""

from __future__ import annotations

import flask
import functions_framework

_ACCEPTED = b'{"status":"accepted"}'


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response(_ACCEPTED, status=202, mimetype="application/json")
