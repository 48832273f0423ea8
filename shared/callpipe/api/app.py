"""Routing and authorisation of the tenant API, independent of Flask.

:meth:`TenantApi.handle` takes (method, path, query, headers) and returns a status and a
JSON body, so the Cloud Function stays a thin adapter and every rule here is testable
without HTTP. Isolation rule: a tenant's token only ever resolves to its own tenant id,
and anything else (another tenant's path, ``tenant_id`` parameter or call id) answers the
same 404 a missing resource would, so a tenant cannot even learn what exists elsewhere.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import GoogleAuthError
from pydantic import BaseModel

from callpipe.api.analytics import AnalyticsParams
from callpipe.api.auth import AuthError, Principal, TokenVerifier
from callpipe.api.queries import (
    InvalidParameters,
    ListParams,
    NoParams,
    Page,
    RequestParams,
    RequestsListParams,
    parse_params,
)
from callpipe.api.signed_urls import RecordingNotAvailable, SignedUrl
from callpipe.cache import TTLCache
from callpipe.ids import InvalidIdentifier, check_resource_id, check_tenant_id
from callpipe.secrets import SecretNotFound, SecretStoreUnavailable
from callpipe.timezones import UTC_ZONE, known_zone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # OpenAPI-style, e.g. /api/v1/requests/{request_id}
    name: str
    params: type[BaseModel]
    authenticated: bool = True

    @property
    def pattern(self) -> re.Pattern[str]:
        # Path parameters match one segment; their format is validated by the handler.
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        return re.compile(f"^{regex}$")


# The route table; schemas/openapi.yaml is tested against it.
ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "health", NoParams, authenticated=False),
    Route("GET", "/api/v1/requests", "list_requests", RequestsListParams),
    Route("GET", "/api/v1/requests/{request_id}", "get_request", RequestParams),
    Route("GET", "/api/v1/requests/{request_id}/transcript", "get_transcript", RequestParams),
    Route("GET", "/api/v1/requests/{request_id}/analysis", "get_analysis", RequestParams),
    Route("GET", "/api/v1/requests/{request_id}/recording", "get_recording", RequestParams),
    Route("GET", "/api/v1/tenants/{tenant_id}/requests", "list_tenant_requests", ListParams),
    Route("GET", "/api/v1/tenants/{tenant_id}/analytics", "tenant_analytics", AnalyticsParams),
)


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Queries(Protocol):
    def tenant_exists(self, tenant_id: str) -> bool: ...
    def tenant_active(self, tenant_id: str) -> bool: ...
    def tenants_of_call(self, call_id: str) -> list[str]: ...
    def tenant_time_zone(self, tenant_id: str) -> str | None: ...
    def office_time_zone(self, tenant_id: str, office_id: str) -> tuple[bool, str | None]: ...
    def list_calls(self, tenant_id: str, params: ListParams) -> Page: ...
    def get_call(self, tenant_id: str, call_id: str) -> dict[str, Any] | None: ...
    def get_transcript(self, tenant_id: str, call_id: str) -> dict[str, Any] | None: ...
    def get_analysis(self, tenant_id: str, call_id: str) -> dict[str, Any] | None: ...
    def get_recording(
        self, tenant_id: str, call_id: str
    ) -> tuple[str | None, str | None] | None: ...


class Analytics(Protocol):
    def compute(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime,
        zone: ZoneInfo,
        office_id: str | None = None,
    ) -> dict[str, Any]: ...


class Recordings(Protocol):
    def for_call(self, uri: str | None, tenant_id: str, call_id: str) -> SignedUrl: ...


UNKNOWN_OFFICE_TTL_SECONDS = 5.0


class _NotFound(Exception):
    pass


def error(status: int, code: str, message: str, **extra: Any) -> ApiResponse:
    return ApiResponse(status, {"error": code, "message": message, **extra})


def _not_found(message: str = "no such request or tenant") -> ApiResponse:
    # One message for "does not exist" and "not yours", so the two cannot be told apart.
    return error(404, "not_found", message)


class TenantApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        queries: Queries,
        analytics: Analytics,
        recordings: Recordings,
        health: Callable[[], dict[str, Any]],
        routes: Sequence[Route] = ROUTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tenant_status_ttl_seconds: float = 60.0,
        cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verifier = verifier
        self._queries = queries
        self._analytics = analytics
        self._recordings = recordings
        self._health_check = health
        self._routes = [(route, route.pattern) for route in routes]
        self._clock = clock
        # whether each tenant may still read, for tenant tokens: a tenant suspended or
        # removed is refused within this long, however long its tokens were issued for
        self._active: TTLCache[str, bool] = TTLCache(tenant_status_ttl_seconds, clock=cache_clock)
        # the time zone each tenant's offices share (analytics' default days), as long
        self._office_zones: TTLCache[str, str | None] = TTLCache(
            tenant_status_ttl_seconds, clock=cache_clock
        )
        # each office's own: whether it exists, and its zone (analytics of one office)
        self._offices: TTLCache[tuple[str, str], tuple[bool, str | None]] = TTLCache(
            tenant_status_ttl_seconds, clock=cache_clock
        )

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, Sequence[str]],
        headers: Mapping[str, str],
    ) -> ApiResponse:
        path = path.rstrip("/") or "/"
        method = "GET" if method.upper() == "HEAD" else method.upper()
        matched = [(r, m) for r, p in self._routes if (m := p.match(path))]
        if not matched:
            return error(404, "not_found", f"no route for {path}")
        route_match = next(((r, m) for r, m in matched if r.method == method), None)
        if route_match is None:
            allowed = ", ".join(sorted({r.method for r, _ in matched}))
            response = error(405, "method_not_allowed", f"use {allowed}")
            response.headers["Allow"] = allowed
            return response
        route, match = route_match
        try:
            principal = None
            if route.authenticated:
                header = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
                principal = self._verifier.verify_header(header)
                if principal.tenant_id is not None and not principal.operator:
                    self._check_active(principal.tenant_id)
            params = parse_params(route.params, _single_values(query))
            handler = getattr(self, f"_{route.name}")
            answer: ApiResponse = handler(principal, params, **match.groupdict())
            return answer
        except AuthError as failure:
            response = error(401, failure.code, failure.message)
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{failure.code}"'
            )
            return response
        except InvalidParameters as failure:
            return error(400, "invalid_parameters", failure.message, details=failure.details)
        except _NotFound as missing:
            return _not_found(*missing.args)
        except (SecretNotFound, SecretStoreUnavailable) as failure:
            log.error("api signing key unavailable: %s", failure)
            return error(503, "unavailable", "the API cannot verify tokens right now")
        except (GoogleAPIError, GoogleAuthError):
            # Spanner or Storage did not answer, or the credentials or IAM signBlob (signed
            # recording URLs) failed: the client may retry; anything else is a bug: a 500
            # (still JSON, from the function's error handler), traceback logged.
            log.exception("api dependency failed", extra={"fields": {"path": path}})
            return error(503, "unavailable", "a backing service did not answer; retry later")

    # -- tenant resolution ---------------------------------------------------------------

    def _check_active(self, tenant_id: str) -> None:
        hit, active = self._active.get(tenant_id)
        if not hit:
            active = self._queries.tenant_active(tenant_id)
            self._active.put(tenant_id, active)
        if not active:
            raise AuthError("tenant_inactive", "the token's tenant is not active")

    def _tenant_from_path(self, principal: Principal, tenant_id: str) -> str:
        if not principal.operator:
            if tenant_id != principal.tenant_id:
                raise _NotFound
            return tenant_id
        try:
            check_tenant_id(tenant_id)
        except InvalidIdentifier as failure:
            raise InvalidParameters(
                "invalid tenant id", [{"parameter": "tenant_id", "message": str(failure)}]
            ) from None
        if not self._queries.tenant_exists(tenant_id):
            raise _NotFound
        return tenant_id

    def _tenant_for_call(self, principal: Principal, requested: str | None, call_id: str) -> str:
        try:
            check_resource_id(call_id)
        except InvalidIdentifier as failure:
            raise InvalidParameters(
                "invalid request id", [{"parameter": "request_id", "message": str(failure)}]
            ) from None
        if not principal.operator:
            if requested is not None and requested != principal.tenant_id:
                raise _NotFound
            assert principal.tenant_id is not None
            return principal.tenant_id
        if requested is not None:
            return requested
        tenants = self._queries.tenants_of_call(call_id)
        if len(tenants) > 1:
            raise InvalidParameters(
                "ambiguous request id",
                [
                    {
                        "parameter": "tenant_id",
                        "message": "several tenants have this call id; name one",
                    }
                ],
            )
        if not tenants:
            raise _NotFound
        return tenants[0]

    # -- handlers ------------------------------------------------------------------------

    def _health(self, principal: None, params: NoParams) -> ApiResponse:
        report = self._health_check()
        return ApiResponse(200 if report.get("status") == "ok" else 503, report)

    def _page(self, principal: Principal, tenant_id: str, params: ListParams) -> ApiResponse:
        page = self._queries.list_calls(tenant_id, params)
        items = page.items if principal.operator else [_for_tenant(item) for item in page.items]
        return ApiResponse(
            200,
            {
                "tenant_id": tenant_id,
                "items": items,
                "next_cursor": page.next_cursor,
                "limit": params.limit,
            },
        )

    def _list_requests(self, principal: Principal, params: RequestsListParams) -> ApiResponse:
        if principal.operator:
            if params.tenant_id is None:
                raise InvalidParameters(
                    "tenant_id is required",
                    [{"parameter": "tenant_id", "message": "an operator must name the tenant"}],
                )
            tenant_id = self._tenant_from_path(principal, params.tenant_id)
        else:
            if params.tenant_id is not None and params.tenant_id != principal.tenant_id:
                raise _NotFound
            assert principal.tenant_id is not None
            tenant_id = principal.tenant_id
        return self._page(principal, tenant_id, params)

    def _list_tenant_requests(
        self, principal: Principal, params: ListParams, tenant_id: str
    ) -> ApiResponse:
        return self._page(principal, self._tenant_from_path(principal, tenant_id), params)

    def _get_request(
        self, principal: Principal, params: RequestParams, request_id: str
    ) -> ApiResponse:
        tenant_id = self._tenant_for_call(principal, params.tenant_id, request_id)
        call = self._queries.get_call(tenant_id, request_id)
        if call is None:
            raise _NotFound
        # The storage URI is internal; clients play the recording through /recording.
        call.pop("recording_uri", None)
        if not principal.operator:
            call = _for_tenant(call)
            call["stages"] = [_for_tenant(stage) for stage in call.get("stages", [])]
        call["links"] = {
            "transcript": f"/api/v1/requests/{request_id}/transcript",
            "analysis": f"/api/v1/requests/{request_id}/analysis",
            "recording": f"/api/v1/requests/{request_id}/recording",
        }
        return ApiResponse(200, call)

    def _get_transcript(
        self, principal: Principal, params: RequestParams, request_id: str
    ) -> ApiResponse:
        return self._call_part(principal, params, request_id, self._queries.get_transcript)

    def _get_analysis(
        self, principal: Principal, params: RequestParams, request_id: str
    ) -> ApiResponse:
        return self._call_part(principal, params, request_id, self._queries.get_analysis)

    def _call_part(
        self,
        principal: Principal,
        params: RequestParams,
        request_id: str,
        read: Callable[[str, str], dict[str, Any] | None],
    ) -> ApiResponse:
        tenant_id = self._tenant_for_call(principal, params.tenant_id, request_id)
        part = read(tenant_id, request_id)
        if part is None:
            raise _NotFound
        return ApiResponse(200, part if principal.operator else _for_tenant(part))

    def _get_recording(
        self, principal: Principal, params: RequestParams, request_id: str
    ) -> ApiResponse:
        tenant_id = self._tenant_for_call(principal, params.tenant_id, request_id)
        recording = self._queries.get_recording(tenant_id, request_id)
        if recording is None:
            raise _NotFound
        uri, content_type = recording
        try:
            signed = self._recordings.for_call(uri, tenant_id, request_id)
        except RecordingNotAvailable as failure:
            return error(404, "no_recording", str(failure))
        return ApiResponse(
            200,
            {
                "request_id": request_id,
                "url": signed.url,
                "expires_at": signed.expires_at.isoformat().replace("+00:00", "Z"),
                "content_type": content_type,
            },
        )

    def _tenant_analytics(
        self, principal: Principal, params: AnalyticsParams, tenant_id: str
    ) -> ApiResponse:
        tenant = self._tenant_from_path(principal, tenant_id)
        office = params.office_id
        if office is None:
            zone = params.zone if params.tz is not None else self._office_zone(tenant)
        else:
            zone = self._one_office_zone(tenant, office)
            zone = params.zone if params.tz is not None else zone
        try:
            start, end = params.window(self._clock(), zone)
        except ValueError as failure:
            raise InvalidParameters(
                "invalid date range", [{"parameter": "from", "message": str(failure)}]
            ) from None
        return ApiResponse(200, self._analytics.compute(tenant, start, end, zone, office))

    def _office_zone(self, tenant_id: str) -> ZoneInfo:
        """The one time zone the tenant's offices name (their days are the business's), else UTC."""
        hit, name = self._office_zones.get(tenant_id)
        if not hit:
            name = self._queries.tenant_time_zone(tenant_id)
            self._office_zones.put(tenant_id, name)
        return _zone_named(name)

    def _one_office_zone(self, tenant_id: str, office_id: str) -> ZoneInfo:
        """The office's time zone (UTC when its row names none); 404 for no such office."""
        _, found = self._offices.get((tenant_id, office_id))
        if found is None:
            found = self._queries.office_time_zone(tenant_id, office_id)
            # an office onboarded a moment ago is found within seconds, not a minute
            ttl = None if found[0] else UNKNOWN_OFFICE_TTL_SECONDS
            self._offices.put((tenant_id, office_id), found, ttl)
        exists, name = found
        if not exists:
            # the tenant is the caller's already: its office ids are no one else's secret
            raise _NotFound(f"no office {office_id} in tenant {tenant_id}")
        # an office that names no zone counts its days as the tenant's whole do
        return _zone_named(name) if name else self._office_zone(tenant_id)


def _zone_named(name: str | None) -> ZoneInfo:
    # free text in the office row: what names no zone is UTC
    return (known_zone(name) if name else None) or UTC_ZONE


# A stage detail is written for operators: object paths, resource names, an exception's
# text. A tenant sees its reason code ("retries_exhausted: …" → "retries_exhausted") or,
# for a detail without one, the text with storage and resource paths left out.
_REASON = re.compile(r"^([a-z][a-z0-9_]{2,40}): ")
_INTERNAL_PATH = re.compile(
    r"(?:\bgs://|\bprojects/|https?://storage\.googleapis\.com/)[^\s,;)]*"
    r"|[\w.+-]+@[\w.-]+\.gserviceaccount\.com"
)
# the step-written texts a response may carry: stage details, and the transcript's or
# analysis's reason for failing (as "reason" of its own endpoint, or on the call)
_DETAIL_FIELDS = ("detail", "stage_detail", "reason", "transcript_reason", "analysis_reason")


def _for_tenant(record: dict[str, Any]) -> dict[str, Any]:
    public = dict(record)
    for field_name in _DETAIL_FIELDS:
        text = public.get(field_name)
        if isinstance(text, str):
            reason = _REASON.match(text)
            public[field_name] = (
                reason.group(1) if reason else _INTERNAL_PATH.sub("[internal]", text)
            )
    return public


def _single_values(query: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Each parameter once: a repeated one is ambiguous, so it is refused, not guessed."""
    out: dict[str, str] = {}
    for name, values in query.items():
        if isinstance(values, str):
            out[name] = values
            continue
        if len(values) != 1:
            raise InvalidParameters(
                "repeated parameter", [{"parameter": name, "message": "give it once"}]
            )
        out[name] = values[0]
    return out


_MISSING_KEY_SECONDS = 10.0


class CachedKey:
    """The signing key, re-read from the secret store every ``ttl`` s so rotation lands.

    Failures are not cached, but for a key that does not exist yet, which is asked for again
    after a few seconds: a key created after the process started is picked up then.
    A token whose signature the cached key refuses may be signed with a key rotated since:
    :meth:`refresh` re-reads it then, at most once every ``refresh_seconds`` (forged tokens
    cannot turn every request into a secret read).
    """

    def __init__(
        self,
        load: Callable[[], str],
        ttl_seconds: float = 300.0,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._clock = clock
        self._ttl = ttl_seconds
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        # one re-read at a time; its time is taken before the read, so a failing store is
        # not asked again by every forged token either
        self._refresh_lock = threading.Lock()
        self._refreshed_at = float("-inf")
        self._cached: tuple[float, str] | None = None
        self._missing: tuple[float, str] | None = None

    def refresh(self, used: str) -> bool:
        """Whether a key other than ``used`` (the one a signature just failed with) is now
        current: one another request read meanwhile, or one re-read here, unless a re-read
        was tried in the last ``refresh_seconds`` (by any thread, failed ones included)."""
        with self._refresh_lock:
            with self._lock:
                cached = self._cached
            if cached is not None and cached[1] != used:
                return True
            now = self._clock()
            last = max(self._refreshed_at, cached[0] if cached else float("-inf"))
            if now - last < self._refresh_seconds:
                return False
            self._refreshed_at = now
            key = self._load()
            with self._lock:
                self._cached = (self._clock(), key)
            return key != used

    def __call__(self) -> str:
        with self._lock:
            if self._cached and self._clock() - self._cached[0] < self._ttl:
                return self._cached[1]
            # A key that does not exist yet is asked for again only after a few seconds:
            # without it, any token naming its role would be a secret read.
            if self._missing and self._clock() - self._missing[0] < _MISSING_KEY_SECONDS:
                # a new exception each time: one shared instance would grow its traceback
                raise SecretNotFound(self._missing[1])
        try:
            key = self._load()
        except SecretNotFound as error:
            with self._lock:
                self._missing = (self._clock(), str(error))
            raise
        with self._lock:
            self._cached = (self._clock(), key)
            self._missing = None
        return key
