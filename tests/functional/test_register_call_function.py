"""The register-call function through functions-framework's test client, on the emulators.

Deliveries are posted in the raw Pub/Sub push format, as the emulator (and a push
subscription in production) sends them; functions-framework turns them into CloudEvents.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.messages import CallReceived, RawWebhook
from tests.conftest import REPO, Tap, Tenant, post_call_body

PATH = "/projects/callpipe-test/topics/calls.received"


@pytest.fixture(scope="module")
def loaded(stack: Any) -> tuple[Any, Any]:
    """The test client and the function's module (functions-framework loads it as ``main``)."""
    import sys

    from functions_framework import create_app

    app = create_app(target="register_call", source=str(REPO / "functions/register_call/main.py"))
    return app.test_client(), sys.modules["main"]


@pytest.fixture
def client(loaded: tuple[Any, Any]) -> Any:
    return loaded[0]


def received(
    tenant: Tenant, body: bytes, event_type: EventType = EventType.POST_CALL, key: str | None = None
) -> CallReceived:
    call_id = json.loads(body)["resource_id"]
    return CallReceived(
        tenant_id=tenant.tenant_id,
        office_id=tenant.office_id,
        company_id=tenant.company_id,
        callrail_account_id=tenant.account_id,
        call_id=call_id,
        event_type=event_type,
        event_key=key or f"{event_type.value}:{call_id}",
        correlation_id=uuid.uuid4().hex,
        signing_token_id=tenant.token_id,
        webhook=RawWebhook.capture(
            body,
            {"content-type": "application/json"},
            "/api/v1/callrail/webhook",
            datetime.now(UTC),
        ),
    )


def push(client: Any, data: bytes, attributes: dict[str, str], attempt: int | None = None) -> Any:
    envelope: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": str(uuid.uuid4().int)[:16],
            "publishTime": datetime.now(UTC).isoformat(),
        },
        "subscription": "projects/callpipe-test/subscriptions/calls.received.register-call",
    }
    if attempt is not None:
        envelope["deliveryAttempt"] = attempt
    return client.post(PATH, json=envelope)


def test_registers_once_archives_and_forwards(
    client: Any, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap], database: Any
) -> None:
    from google.cloud import storage
    from google.cloud.spanner_v1 import param_types

    tenant = make_tenant()
    registered = tap("calls.registered")
    message = received(tenant, post_call_body(tenant))
    for _ in range(3):  # at-least-once delivery: the same message three times
        assert push(client, message.to_data(), message.attributes()).status_code == 200

    out = [
        m for m in registered.drain(expect=1) if m.attributes.get("tenant_id") == tenant.tenant_id
    ]
    assert len(out) == 1
    forwarded = json.loads(out[0].data)
    assert forwarded["call_id"] == message.call_id
    assert forwarded["webhook"]["resource_id"] == message.call_id
    assert forwarded["webhook"]["customer_city"] == "Pasadena"

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT Status, ArchiveUri FROM WebhookEvents WHERE TenantId = @t",
                params={"t": tenant.tenant_id},
                param_types={"t": param_types.STRING},
            )
        )
    assert [r[0] for r in rows] == ["forwarded"]
    uri = rows[0][1]
    assert uri == forwarded["webhook_archive_uri"]
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    assert name.startswith(f"tenants/{tenant.tenant_id}/webhooks/{message.call_id}/")
    archived = json.loads(storage.Client().bucket(bucket).blob(name).download_as_bytes())
    assert base64.b64decode(archived["webhook"]["body_base64"]) == message.webhook.body


def test_call_modified_is_a_distinct_event(
    client: Any, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    tenant = make_tenant()
    registered = tap("calls.registered")
    body = post_call_body(tenant)
    call_id = json.loads(body)["resource_id"]
    first = received(tenant, body)
    modified_body = post_call_body(tenant, call_id=call_id, changes=["tags"], tags=["kitchen"])
    modified = received(
        tenant, modified_body, EventType.CALL_MODIFIED, key=f"call_modified:{call_id}:abc"
    )
    for message in (first, modified):
        assert push(client, message.to_data(), message.attributes()).status_code == 200
    out = [
        m for m in registered.drain(expect=2) if m.attributes.get("tenant_id") == tenant.tenant_id
    ]
    assert sorted(m.attributes["event_type"] for m in out) == ["call_modified", "post_call"]


def test_text_message_is_archived_but_not_forwarded(
    client: Any, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    tenant = make_tenant()
    registered = tap("calls.registered")
    body = json.dumps(
        {
            "resource_id": "SMS" + uuid.uuid4().hex,
            "company_resource_id": tenant.company_id,
            "content": "hi",
        }
    ).encode()
    message = received(tenant, body, EventType.TEXT_MESSAGE_RECEIVED, key="text_message_received:x")
    assert push(client, message.to_data(), message.attributes()).status_code == 200
    assert [
        m for m in registered.drain() if m.attributes.get("tenant_id") == tenant.tenant_id
    ] == []


def test_invalid_message_is_dead_lettered_and_acked(client: Any, tap: Callable[[str], Tap]) -> None:
    dlq = tap("calls.received.dlq")
    marker = uuid.uuid4().hex
    response = push(client, b'{"not": "a call"}', {"correlation_id": marker})
    assert response.status_code == 200  # acknowledged: retrying cannot help
    letters = [m for m in dlq.drain(expect=1) if m.attributes.get("correlation_id") == marker]
    assert len(letters) == 1
    assert letters[0].attributes["dlq_reason"] == "invalid_message"
    assert letters[0].attributes["dlq_step"] == "register-call"
    assert letters[0].data == b'{"not": "a call"}'


def test_transient_failure_answers_non_2xx_for_redelivery(
    loaded: tuple[Any, Any], make_tenant: Callable[..., Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, module = loaded
    tenant = make_tenant()
    message = received(tenant, post_call_body(tenant))
    runtime = module._runtime.get()
    archive = runtime.handler._archive
    monkeypatch.setattr(archive, "_bucket", archive._client.bucket("bucket-that-does-not-exist"))
    response = push(client, message.to_data(), message.attributes())
    assert response.status_code >= 500


def test_the_pushs_delivery_attempt_reaches_the_step(
    loaded: tuple[Any, Any], make_tenant: Callable[..., Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    """functions-framework drops ``deliveryAttempt`` from the CloudEvent it makes of a push;
    the step reads it from the request, and knows the subscription's last attempt."""
    import callpipe.steps

    client, module = loaded
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(
        callpipe.steps,
        "log_event",
        lambda _logger, _level, message, **fields: logged.append({"message": message, **fields}),
    )
    tenant = make_tenant()
    message = received(tenant, post_call_body(tenant))

    def post(attempt: int) -> int:
        envelope = {
            "message": {
                "data": base64.b64encode(message.to_data()).decode(),
                "attributes": message.attributes(),
                "messageId": str(uuid.uuid4().int)[:16],
                "publishTime": datetime.now(UTC).isoformat(),
            },
            "subscription": "projects/callpipe-test/subscriptions/calls.received.register-call",
            "deliveryAttempt": attempt,
        }
        return int(client.post(PATH, json=envelope).status_code)

    def unavailable(_message: CallReceived) -> dict[str, Any]:
        raise ConnectionError("spanner: deadline exceeded")

    monkeypatch.setattr(module._runtime.get(), "handler", unavailable)
    assert post(2) >= 500 and post(5) >= 500  # transient: Pub/Sub redelivers, then gives up
    assert [(e["delivery_attempt"], e["outcome"]) for e in logged] == [
        (2, "retry"),
        (5, "retries_exhausted"),
    ]


def test_a_failed_publish_is_retried_at_once_and_its_dead_letter_shows_on_the_call(
    loaded: tuple[Any, Any],
    make_tenant: Callable[..., Tenant],
    tap: Callable[[str], Tap],
    database: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery whose publish failed gives its claim back: the next delivery forwards the
    event instead of being told "in progress" until the lease runs out. An event that never
    gets out is recorded on the call when it is dead-lettered, not left reading "ok"."""
    from callpipe.publishing import PublishFailed
    from tests.integration.test_fetch_and_download import call_row

    client, module = loaded
    handler = module._runtime.get().handler
    working = handler._publisher

    class Down:
        def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
            raise PublishFailed(f"Pub/Sub did not accept the message on {topic}")

    tenant = make_tenant()
    registered = tap("calls.registered")
    forwarded, lost = (received(tenant, post_call_body(tenant)) for _ in range(2))
    monkeypatch.setattr(handler, "_publisher", Down())
    assert push(client, forwarded.to_data(), forwarded.attributes(), attempt=1).status_code >= 500
    monkeypatch.setattr(handler, "_publisher", working)
    assert push(client, forwarded.to_data(), forwarded.attributes(), attempt=2).status_code == 200
    out = [
        m for m in registered.drain(expect=1) if m.attributes.get("tenant_id") == tenant.tenant_id
    ]
    assert [m.attributes["call_id"] for m in out] == [forwarded.call_id]
    stages = call_row(database, tenant, forwarded.call_id)["stages"]  # type: ignore[index]
    assert stages["register"]["status"] == "ok"

    monkeypatch.setattr(handler, "_publisher", Down())
    attempts = module._settings.max_delivery_attempts
    for attempt in range(1, attempts + 1):
        assert push(client, lost.to_data(), lost.attributes(), attempt=attempt).status_code in (
            200,
            500,
        )
    stored = call_row(database, tenant, lost.call_id)
    assert stored is not None
    assert (stored["stage"], stored["status"]) == ("register", "dead_lettered")
    assert "PublishFailed" in stored["stages"]["register"]["detail"]
