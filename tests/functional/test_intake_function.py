"""The intake function through functions-framework's test client, on the emulators."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import REPO, Tap, Tenant, post_call_body

WEBHOOK = "/api/v1/callrail/webhook"


def sign(token: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha1).digest()).decode()


@pytest.fixture(scope="module")
def client(stack: Any) -> Iterator[Any]:
    # served as in production: functions-framework's ASGI app (the step is `asgi: true`)
    from functions_framework.aio import create_asgi_app
    from starlette.testclient import TestClient

    app = create_asgi_app(target="intake", source=str(REPO / "functions/intake/main.py"))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


def post(
    client: Any,
    body: bytes,
    signature: str | None,
    content_type: str = "application/json",
    path: str = WEBHOOK,
) -> Any:
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["Signature"] = signature
    return client.post(path, content=body, headers=headers)


def test_signed_post_call_is_accepted_and_queued(
    client: Any, tenant: Tenant, tap: Callable[[str], Tap]
) -> None:
    received = tap("calls.received")
    body = post_call_body(tenant)
    response = post(client, body, sign(tenant.token, body))
    assert response.status_code == 202, response.json()
    answer = response.json()
    assert answer["status"] == "accepted" and answer["event_type"] == "post_call"

    messages = [
        m for m in received.drain(expect=1) if m.attributes.get("tenant_id") == tenant.tenant_id
    ]
    assert len(messages) == 1
    attributes = dict(messages[0].attributes)
    assert attributes["call_id"] == answer["call_id"]
    assert attributes["office_id"] == tenant.office_id
    assert attributes["event_type"] == "post_call"
    assert attributes["correlation_id"] == answer["correlation_id"]
    payload = json.loads(messages[0].data)
    assert base64.b64decode(payload["webhook"]["body_base64"]) == body
    assert payload["webhook"]["headers"]["signature"] == sign(tenant.token, body)


def test_legacy_numeric_company_id_maps_to_the_tenant(client: Any, tenant: Tenant) -> None:
    document = json.loads(post_call_body(tenant))
    document.pop("company_resource_id")
    document["company_id"] = int(tenant.legacy_company_id)
    body = json.dumps(document).encode()
    assert post(client, body, sign(tenant.token, body)).status_code == 202


@pytest.mark.parametrize(
    ("mutate", "status", "error"),
    [
        (lambda b, t: ("GET", b, sign(t, b), "application/json"), 405, "method_not_allowed"),
        (lambda b, t: ("POST", b, sign(t, b), "text/plain"), 415, "unsupported_media_type"),
        (lambda b, t: ("POST", b, None, "application/json"), 401, "missing_signature"),
        (
            lambda b, t: ("POST", b, sign("not-the-token", b), "application/json"),
            401,
            "invalid_signature",
        ),
        (lambda b, t: ("POST", b[:-5], sign(t, b), "application/json"), 400, "malformed_json"),
        (lambda b, t: ("POST", b + b" ", sign(t, b), "application/json"), 401, "invalid_signature"),
    ],
    ids=["wrong-method", "not-json", "no-signature", "wrong-token", "truncated", "tampered"],
)
def test_rejections(client: Any, tenant: Tenant, mutate: Any, status: int, error: str) -> None:
    method, body, signature, content_type = mutate(post_call_body(tenant), tenant.token)
    headers = {"Content-Type": content_type}
    if signature:
        headers["Signature"] = signature
    response = client.request(method, WEBHOOK, content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["message"]


def test_missing_company_and_call_ids(client: Any, tenant: Tenant) -> None:
    document = json.loads(post_call_body(tenant))
    no_company = {
        k: v for k, v in document.items() if k not in ("company_resource_id", "company_id")
    }
    body = json.dumps(no_company).encode()
    response = post(client, body, sign(tenant.token, body))
    assert (response.status_code, response.json()["error"]) == (400, "missing_company_id")

    no_call = {k: v for k, v in document.items() if k not in ("resource_id", "id")}
    body = json.dumps(no_call).encode()
    response = post(client, body, sign(tenant.token, body))
    assert (response.status_code, response.json()["error"]) == (400, "missing_call_id")


def test_body_over_the_limit_is_refused_unread(client: Any, tenant: Tenant) -> None:
    body = (
        b'{"company_resource_id": "'
        + tenant.company_id.encode()
        + b'", "pad": "'
        + b"x" * 1_100_000
        + b'"}'
    )
    response = post(client, body, sign(tenant.token, body))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_stale_capture_is_refused(client: Any, tenant: Tenant) -> None:
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    body = post_call_body(tenant, timestamp=old)
    response = post(client, body, sign(tenant.token, body))
    assert response.status_code == 401
    assert response.json()["error"] == "stale_webhook"


def test_unknown_company_is_404_and_quarantined(
    client: Any, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    quarantine = tap("webhooks.quarantine")
    ghost = Tenant(
        "ghost", "COMffffffffffffffffffffffffffff0001", "999", "1", "main", "tok-ghost-123", "x"
    )
    body = post_call_body(ghost)
    response = post(client, body, sign(ghost.token, body))
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_company"
    kept = [
        m for m in quarantine.drain(expect=1) if m.attributes.get("company_key") == ghost.company_id
    ]
    assert len(kept) == 1
    assert kept[0].attributes["reason"] == "unknown_company"


def test_event_type_from_path_hint(client: Any, tenant: Tenant) -> None:
    body = post_call_body(tenant, changes=["note"], note="call back tomorrow")
    response = post(client, body, sign(tenant.token, body), path=WEBHOOK + "/call-modified")
    assert response.status_code == 202
    assert response.json()["event_type"] == "call_modified"
    response = post(client, body, sign(tenant.token, body), path=WEBHOOK + "/not-an-event")
    assert response.status_code == 404


def test_unknown_route_and_health(client: Any) -> None:
    assert client.get("/nope").status_code == 404
    health = client.get("/health")
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok"
    assert report["checks"]["pubsub"]["ok"] and report["checks"]["spanner"]["ok"]


def test_a_runtime_that_cannot_be_built_is_a_503_and_is_built_again_next_time(
    client: Any, tenant: Tenant
) -> None:
    """At a cold start the credentials or the metadata server can fail: never a 500."""
    import io
    import logging
    import sys

    from google.auth.exceptions import TransportError

    from callpipe.logs import CloudLoggingFormatter
    from callpipe.wiring import Lazy

    main = sys.modules["main"]
    built = main._runtime
    builds: list[str] = []
    failing = True

    def build() -> Any:
        builds.append("build")
        if failing:
            raise TransportError("Failed to retrieve the metadata server's token")
        return built.get()

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    intake_logger = logging.getLogger("callpipe.intake")
    intake_logger.addHandler(handler)
    main._runtime = Lazy(build)
    try:
        body = post_call_body(tenant)
        refused = post(client, body, sign(tenant.token, body))
        unhealthy = client.get("/health")
        failing = False
        accepted = post(client, body, sign(tenant.token, body))
        healthy = client.get("/health")
    finally:
        main._runtime = built
        intake_logger.removeHandler(handler)

    for response in (refused, unhealthy):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["error"] == "unavailable" and answer["message"]
        assert len(answer["correlation_id"]) == 32
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failures = [line for line in lines if line.get("outcome") == "unavailable"]
    assert [line["severity"] for line in failures] == ["ERROR", "ERROR"]
    assert all("TransportError" in line["detail"] for line in failures)
    # built again on the next request, which then goes through as usual
    assert accepted.status_code == 202, accepted.json()
    assert healthy.status_code == 200
    assert builds == ["build"] * 3


def test_control_characters_in_the_path_are_a_plain_404(client: Any) -> None:
    # The framework's router matches no path with a newline, so the function never sees it.
    for path in ("/api/v1/callrail/webhook/%0A%06x", "/nope/%0A%06x"):
        response = client.post(path, content=b"{}", headers={"Content-Type": "application/json"})
        assert response.status_code == 404
    # Other odd characters reach the function and get its JSON answer.
    response = client.post(f"{WEBHOOK}/%06x", content=b"{}", headers={"Signature": "x"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def asgi_post(app: Any, chunks: list[bytes], hang_up: bool = False) -> int:
    """POST a body in chunks straight to the ASGI app, with no Content-Length (chunked), as a
    server hands it over; ``hang_up`` ends with the client gone instead of the last chunk."""
    events: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    events.append({"type": "http.disconnect"} if hang_up else {"type": "http.request", "body": b""})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WEBHOOK,
        "raw_path": WEBHOOK.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"signature", b"x")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_a_chunked_body_over_the_limit_is_cut_off_and_refused(client: Any) -> None:
    chunks = [b"x" * 300_000] * 5  # 1.5 MB, no Content-Length to refuse it up front
    assert asgi_post(client.app, chunks) == 413


def test_a_client_that_hangs_up_mid_upload_is_answered_not_crashed(client: Any) -> None:
    assert asgi_post(client.app, [b'{"company_resource_id": "COM'], hang_up=True) == 400
