"""The simulator's WSGI application: CallRail API v3 routes, recording audio, ``/_sim`` control.

Order of checks on an API request, as on CallRail: authentication (401, or 404 for an
account the key cannot see), then the account's rate limit (429 with ``Retry-After``),
then the call's injected faults (delay, status sequence), then the answer itself.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from callpipe.simulator.audio import audio_response
from callpipe.simulator.config import SimulatorConfig
from callpipe.simulator.faults import FaultBoard, Faults
from callpipe.simulator.fields import parse_fields, select_fields
from callpipe.simulator.listing import (
    QueryError,
    next_page_url,
    page_of,
    parse_list_query,
    select_calls,
)
from callpipe.simulator.ratelimit import SlidingWindowLimiter
from callpipe.simulator.signing import RecordingSigner
from callpipe.simulator.stats import Stats
from callpipe.simulator.store import CallStore, StoredCall

# Rails' token parser accepts the value quoted or bare.
_TOKEN_HEADER = re.compile(r'^\s*Token\s+token="?([^",\s]+)"?\s*$', re.IGNORECASE)
_ACCESS_DENIED = "HTTP Token: Access denied."

_URLS = Map(
    [
        Rule("/v3/a/<account_id>/calls.json", endpoint="list_calls", methods=["GET"]),
        Rule("/v3/a/<account_id>/calls/<call_id>.json", endpoint="get_call", methods=["GET"]),
        Rule(
            "/v3/a/<account_id>/calls/<call_id>/recording.json",
            endpoint="get_recording",
            methods=["GET"],
        ),
        Rule("/recordings/<file_name>", endpoint="audio", methods=["GET"]),
        Rule("/_sim/health", endpoint="sim_health", methods=["GET"]),
        Rule("/_sim/stats", endpoint="sim_stats", methods=["GET"]),
        Rule("/_sim/calls", endpoint="sim_calls", methods=["GET"]),
        Rule("/_sim/reset", endpoint="sim_reset", methods=["POST"]),
        Rule("/_sim/faults/<call_id>", endpoint="sim_faults", methods=["GET", "POST", "DELETE"]),
    ],
    strict_slashes=False,
)
_API_ENDPOINTS = frozenset({"list_calls", "get_call", "get_recording"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        headers=headers,
        content_type="application/json; charset=utf-8",
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


@dataclass
class _Outcome:
    response: Response
    limited: bool = False


class SimulatorApp:
    def __init__(self, store: CallStore, config: SimulatorConfig) -> None:
        self.store = store
        self.config = config
        self.faults = FaultBoard()
        self.stats = Stats()
        self.limiter = SlidingWindowLimiter(
            config.rate_limit_per_minute, config.rate_window_seconds, config.clock
        )
        self.signer = RecordingSigner(
            config.signing_secret, config.recording_url_ttl_seconds, config.clock
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        adapter = _URLS.bind_to_environ(environ)
        endpoint: str | None = None
        values: dict[str, Any] = {}
        try:
            endpoint, matched = adapter.match()
            values = dict(matched)
            outcome = self._dispatch(request, str(endpoint), values)
        except MethodNotAllowed as refused:
            allow = ", ".join(refused.valid_methods or [])
            outcome = _Outcome(error(405, "Method not allowed", {"Allow": allow}))
        except NotFound:
            outcome = _Outcome(error(404, "Not found"))
        except HTTPException as other:
            outcome = _Outcome(error(other.code or 500, other.description or "Error"))
        if not request.path.startswith("/_sim/"):
            self.stats.record(
                request.path,
                values.get("account_id") if endpoint in _API_ENDPOINTS else None,
                outcome.response.status_code,
                download=endpoint == "audio",
                limited=outcome.limited,
            )
        response: Iterable[bytes] = outcome.response(environ, start_response)
        return response

    def reset(self) -> None:
        self.faults.reset()
        self.limiter.reset()
        self.stats.reset()

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self, request: Request, endpoint: str, values: dict[str, Any]) -> _Outcome:
        if endpoint in _API_ENDPOINTS:
            return self._api(request, endpoint, values)
        if endpoint == "audio":
            return _Outcome(self._audio(request, values["file_name"]))
        return _Outcome(self._control(request, endpoint, values))

    def _api(self, request: Request, endpoint: str, values: dict[str, Any]) -> _Outcome:
        account_id = str(values["account_id"])
        denied = self._authenticate(request, account_id)
        if denied is not None:
            return _Outcome(denied)
        retry_after = self.limiter.admit(account_id)
        if retry_after is not None:
            return _Outcome(
                error(
                    429,
                    "Rate limit exceeded. Please slow down your requests.",
                    {"Retry-After": str(retry_after)},
                ),
                limited=True,
            )
        if endpoint == "list_calls":
            return _Outcome(self._list_calls(request, account_id))
        call_id = str(values["call_id"])
        stored = self.store.get(call_id)
        faults = self.faults.effective(call_id, stored.meta.faults if stored else None)
        injected = self._inject_api_faults(call_id, faults)
        if injected is not None:
            return _Outcome(injected)
        if stored is None or stored.account_id != account_id:
            return _Outcome(error(404, "Not found"))
        if endpoint == "get_call":
            fields = parse_fields(request.args.get("fields"))
            return _Outcome(json_response(self._render(stored, fields, request, faults)))
        if not self._has_recording(stored, faults):
            return _Outcome(error(404, "Recording not found"))
        file_name = stored.audio_file_name
        assert file_name is not None
        return _Outcome(json_response({"url": self.signer.url(request.host_url, file_name)}))

    def _authenticate(self, request: Request, account_id: str) -> Response | None:
        challenge = {"WWW-Authenticate": 'Token realm="Application"'}
        match = _TOKEN_HEADER.match(request.headers.get("Authorization", ""))
        if match is None:
            return error(401, _ACCESS_DENIED, challenge)
        presented = match.group(1).encode()
        visible = {
            account
            for account, key in self.config.api_keys.items()
            if hmac.compare_digest(key.encode(), presented)
        }
        if not visible:
            return error(401, _ACCESS_DENIED, challenge)
        if account_id not in visible:
            # A valid key asking for an account it cannot see: CallRail scopes the lookup
            # to the key's accounts, so the account simply is not found.
            return error(404, "Not found")
        return None

    def _inject_api_faults(self, call_id: str, faults: Faults) -> Response | None:
        if faults.api_delay_ms:
            self.config.sleep(faults.api_delay_ms / 1000)
        status = self.faults.next_status(call_id, "api", faults)
        if status is None:
            return None
        headers = {"Retry-After": "1"} if status == 429 else None
        return error(status, f"Simulated failure (HTTP {status})", headers)

    # -- API answers ----------------------------------------------------------------------

    def _list_calls(self, request: Request, account_id: str) -> Response:
        try:
            query = parse_list_query(request.args)
        except QueryError as invalid:
            return error(400, str(invalid))
        mine = [call for call in self.store.all() if call.account_id == account_id]
        ordered = select_calls(mine, query)
        chunk, envelope = page_of(ordered, query)
        if query.relative:
            envelope["next_page"] = (
                next_page_url(request.host_url, request.path, query)
                if envelope["has_next_page"]
                else None
            )
        envelope["calls"] = [
            self._render(
                call, query.fields, request, self.faults.effective(call.call_id, call.meta.faults)
            )
            for call in chunk
        ]
        return json_response(envelope)

    def _has_recording(self, stored: StoredCall, faults: Faults) -> bool:
        return stored.audio_path is not None and faults.recording != "missing"

    def _render(
        self, stored: StoredCall, fields: tuple[str, ...], request: Request, faults: Faults
    ) -> dict[str, Any]:
        body = select_fields(stored.public, fields)
        if self._has_recording(stored, faults):
            # Point at this simulator, not at api.callrail.com, so the link is followable.
            body["recording"] = (
                f"{request.host_url.rstrip('/')}/v3/a/{stored.account_id}"
                f"/calls/{stored.call_id}/recording.json"
            )
        else:
            body.update(recording=None, recording_duration=None, recording_player=None)
        return body

    # -- recording audio ------------------------------------------------------------------

    def _audio(self, request: Request, file_name: str) -> Response:
        problem = self.signer.check(
            file_name, request.args.get("Expires"), request.args.get("Signature")
        )
        if problem is not None:
            return error(403, problem)
        call_id = file_name.rsplit(".", 1)[0]
        stored = self.store.get(call_id)
        faults = self.faults.effective(call_id, stored.meta.faults if stored else None)
        status = self.faults.next_status(call_id, "recording", faults)
        if status is not None:
            return Response(f"Simulated failure (HTTP {status})\n", status=status)
        if faults.redirect_to:
            return Response("", status=302, headers={"Location": faults.redirect_to})
        if (
            stored is None
            or not self._has_recording(stored, faults)
            or stored.audio_file_name != file_name
            or stored.audio_path is None
        ):
            return error(404, "Not found")
        content_type = stored.audio_content_type or "application/octet-stream"
        try:
            data = stored.audio_path.read_bytes()
        except OSError:
            return error(404, "Not found")
        return audio_response(data, content_type, faults, call_id, self.config.sleep)

    # -- /_sim control --------------------------------------------------------------------

    def _control(self, request: Request, endpoint: str, values: dict[str, Any]) -> Response:
        if endpoint == "sim_health":
            return json_response({"status": "ok", "calls": len(self.store.all())})
        if endpoint == "sim_stats":
            snapshot = self.stats.snapshot()
            snapshot["runtime_faults"] = {
                call_id: faults.model_dump(mode="json")
                for call_id, faults in self.faults.overrides().items()
            }
            return json_response(snapshot)
        if endpoint == "sim_calls":
            return json_response(
                {
                    "calls": [
                        {
                            "id": call.call_id,
                            "account_id": call.account_id,
                            "start_time": call.public.get("start_time"),
                            "audio": call.audio_file_name,
                        }
                        for call in sorted(self.store.all(), key=lambda c: c.start_time)
                    ],
                    "problems": self.store.problems(),
                }
            )
        if endpoint == "sim_reset":
            self.reset()
            return json_response({"reset": True})
        return self._faults_endpoint(request, str(values["call_id"]))

    def _faults_endpoint(self, request: Request, call_id: str) -> Response:
        if request.method == "POST":
            try:
                faults = Faults.model_validate(request.get_json(force=True, silent=False))
            except (ValidationError, ValueError, HTTPException) as invalid:
                return error(400, f"invalid faults: {invalid}")
            self.faults.override(call_id, faults)
        elif request.method == "DELETE":
            self.faults.clear(call_id)
        stored = self.store.get(call_id)
        file_faults = stored.meta.faults if stored else None
        effective = self.faults.effective(call_id, file_faults)
        source = (
            "runtime"
            if call_id in self.faults.overrides()
            else ("file" if stored is not None else "none")
        )
        return json_response(
            {
                "call_id": call_id,
                "known_call": stored is not None,
                "source": source,
                "faults": effective.model_dump(mode="json"),
                "remaining": self.faults.remaining(call_id, effective),
            }
        )
