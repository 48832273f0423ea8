"""Cloud Function (gen2, HTTP): the tenant API.

Routes: see callpipe.api.app.ROUTES (and schemas/openapi.yaml). The routing, auth and
tenant isolation live in callpipe.api; this handler only adapts Flask to it.
"""

from __future__ import annotations

import flask
import functions_framework

from callpipe.api.app import TenantApi
from callpipe.api.wiring import build_api
from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.wiring import Lazy

_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_api: Lazy[TenantApi] = Lazy(lambda: build_api(_settings))


def _json_error(status: int, code: str, message: str) -> flask.Response:
    return flask.Response(
        flask.json.dumps({"error": code, "message": message}),
        status=status,
        mimetype="application/json",
    )


@functions_framework.errorhandler(404)
def _no_route(error: Exception) -> flask.Response:
    # Paths Flask's router cannot even match (a newline in a segment) still get JSON.
    return _json_error(404, "not_found", "no route for this path")


@functions_framework.errorhandler(500)
def _internal_error(error: Exception) -> flask.Response:
    # A bug, logged with its traceback by Flask: the caller still gets the API's JSON shape.
    return _json_error(500, "internal", "the request failed; retry later")


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    outcome = _api.get().handle(
        request.method,
        request.path,
        {name: request.args.getlist(name) for name in request.args},
        dict(request.headers.items()),
    )
    response = flask.Response(
        flask.json.dumps(outcome.body), status=outcome.status, mimetype="application/json"
    )
    response.headers.update(outcome.headers)
    # Call data is per-tenant and personal: no shared cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response
