"""fetch-call and download-recording end to end on the emulators and the CallRail
simulator, with fault injection: every call ends either with its recording stored once or
on a dead-letter topic with a reason (or goes on without audio, saying why), never twice.

The test stack's Pub/Sub retry backoff is 1-2 s (conftest.fast_retry_topology), so
redeliveries happen within the test's time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from callpipe.demo import webhook_from_call
from callpipe.devstack.stack import LocalStack
from callpipe.simulator import DEMO_CALLS_DIR
from tests.conftest import TEST_ACCOUNT, Tap, Tenant


def demo_call(title_part: str) -> dict[str, Any]:
    for path in sorted((DEMO_CALLS_DIR / "calls").glob("*.json")):
        call = json.loads(path.read_text())
        if title_part.lower() in (call.get("_simulator", {}).get("title") or "").lower():
            return call
    raise LookupError(title_part)


def add_call(
    stack: LocalStack, tenant: Tenant, like: str, faults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new call in the simulator, copied from a demo call, for this tenant."""
    call = demo_call(like)
    data = stack.simulator_data_dir / "calls"
    audio = call["_simulator"].get("audio")
    if audio and not (data / audio).exists():
        shutil.copy(DEMO_CALLS_DIR / "calls" / audio, data / audio)
    call["id"] = "CAL" + uuid.uuid4().hex
    call["account_id"] = TEST_ACCOUNT
    call["company_id"] = tenant.company_id
    call["_simulator"] = {**call["_simulator"], "faults": faults or {}}
    (data / f"{call['id']}.json").write_text(json.dumps(call))
    return call


def send(stack: LocalStack, tenant: Tenant, call: dict[str, Any], **changes: Any) -> str:
    """Deliver the call's Post-Call webhook (signed, with ``changes``); its correlation id."""
    payload = {**webhook_from_call(call, tenant.legacy_company_id), **changes}
    body = json.dumps(payload).encode()
    signature = base64.b64encode(
        hmac.new(tenant.token.encode(), body, hashlib.sha1).digest()
    ).decode()
    response = httpx.post(
        f"{stack.function_url('intake')}/api/v1/callrail/webhook",
        content=body,
        headers={"Content-Type": "application/json", "Signature": signature},
        timeout=15,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["correlation_id"])


def call_row(database: Any, tenant: Tenant, call_id: str) -> dict[str, Any] | None:
    from google.cloud.spanner_v1 import param_types

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT Stage, StageStatus, RecordingStatus, RecordingUri, RecordingSha256, RecordingBytes, "
                "RecordingDetail, ARRAY(SELECT AS STRUCT s.Stage, s.Status, s.Attempts, s.Detail FROM CallStages s "
                "WHERE s.TenantId = c.TenantId AND s.CallId = c.CallId) FROM Calls c "
                "WHERE c.TenantId = @t AND c.CallId = @c",
                params={"t": tenant.tenant_id, "c": call_id},
                param_types={"t": param_types.STRING, "c": param_types.STRING},
            )
        )
    if not rows:
        return None
    stage, status, rec, uri, sha, size, detail, stages = rows[0]
    return {
        "stage": stage,
        "status": status,
        "recording_status": rec,
        "uri": uri,
        "sha256": sha,
        "bytes": size,
        "detail": detail,
        "stages": {s[0]: {"status": s[1], "attempts": s[2], "detail": s[3]} for s in stages},
    }


def forwarded_events(database: Any, tenant: Tenant, call_id: str) -> int:
    from google.cloud.spanner_v1 import param_types

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT COUNT(*) FROM WebhookEvents WHERE TenantId = @t AND CallId = @c AND Status = 'forwarded'",
                params={"t": tenant.tenant_id, "c": call_id},
                param_types={"t": param_types.STRING, "c": param_types.STRING},
            )
        )
    return int(rows[0][0])


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def finished(database: Any, tenant: Tenant, call_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        row = call_row(database, tenant, call_id)
        if row and (row["recording_status"] or row["status"] == "dead_lettered"):
            return row
        return None

    return check


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


def test_recording_is_stored_once_under_the_tenant_prefix(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    from google.cloud import storage

    stored = tap("recordings.stored")
    call = add_call(functions_running, tenant, "kitchen")
    send(functions_running, tenant, call)
    row = wait_for(finished(database, tenant, call["id"]), what="the recording")
    assert row["recording_status"] == "stored", row
    name = f"tenants/{tenant.tenant_id}/calls/{call['id']}/recording.mp3"
    assert row["uri"] == f"gs://{functions_running.config.audio_bucket}/{name}"
    audio = (DEMO_CALLS_DIR / "calls" / call["_simulator"]["audio"]).read_bytes()
    assert row["sha256"] == hashlib.sha256(audio).hexdigest()
    assert row["bytes"] == len(audio)
    assert row["stages"]["fetch"]["status"] == "ok"
    assert row["stages"]["download"]["status"] == "ok"

    blob = storage.Client().bucket(functions_running.config.audio_bucket).get_blob(name)
    assert blob is not None
    assert blob.download_as_bytes() == audio
    assert blob.content_type == "audio/mpeg"
    assert blob.metadata["tenant_id"] == tenant.tenant_id
    assert blob.metadata["call_id"] == call["id"]
    assert blob.metadata["sha256"] == row["sha256"]
    generation = blob.generation

    # A Call Modified for the same call goes through fetch and download again: no-op.
    send(functions_running, tenant, call, changes=["tags"], tags=["Kitchen"])
    wait_for(lambda: forwarded_events(database, tenant, call["id"]) == 2, what="the modification")
    notifications = [
        m
        for m in stored.drain(expect=1, settle=4.0)
        if m.attributes.get("objectId", "").startswith(f"tenants/{tenant.tenant_id}/")
        and "/recording." in m.attributes["objectId"]
    ]
    assert len(notifications) == 1
    assert notifications[0].attributes["eventType"] == "OBJECT_FINALIZE"
    assert notifications[0].attributes["objectId"] == name
    again = storage.Client().bucket(functions_running.config.audio_bucket).get_blob(name)
    assert again is not None and again.generation == generation


def test_call_without_recording_goes_on_and_says_why(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    stored = tap("recordings.stored")
    call = add_call(functions_running, tenant, "missed")
    send(functions_running, tenant, call)
    row = wait_for(finished(database, tenant, call["id"]), what="the no-recording outcome")
    assert row["recording_status"] == "no_recording"
    assert row["stages"]["download"]["status"] == "skipped"
    notices = [m for m in stored.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert len(notices) == 1
    assert notices[0].attributes["kind"] == "call.no_recording"
    assert notices[0].attributes["reason"] == "no_recording"
    assert json.loads(notices[0].data)["tenant_id"] == tenant.tenant_id


def test_callrail_server_errors_are_retried_until_they_pass(
    functions_running: LocalStack, tenant: Tenant, database: Any
) -> None:
    call = add_call(functions_running, tenant, "bathroom", {"api_status_sequence": [500, 503, 502]})
    send(functions_running, tenant, call)
    row = wait_for(finished(database, tenant, call["id"]), what="the recording")
    assert row["recording_status"] == "stored"


def test_a_recording_that_keeps_failing_goes_on_without_audio(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    stored = tap("recordings.stored")
    call = add_call(functions_running, tenant, "robocall", {"recording": "corrupt"})
    send(functions_running, tenant, call)
    row = wait_for(
        finished(database, tenant, call["id"]), timeout=90, what="giving up on the download"
    )
    assert row["recording_status"] == "download_failed"
    assert row["stages"]["download"]["status"] == "failed"
    assert row["stages"]["download"]["attempts"] == 4
    assert "AudioRejected" in row["detail"]
    notices = [m for m in stored.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert [m.attributes["reason"] for m in notices] == ["download_failed"]


def test_a_redirect_off_the_allow_list_is_refused_and_dead_lettered(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    from google.cloud import storage

    dlq = tap("calls.fetched.dlq")
    call = add_call(
        functions_running,
        tenant,
        "voicemail",
        {"redirect_to": "http://169.254.169.254/latest/meta-data/"},
    )
    send(functions_running, tenant, call)
    row = wait_for(finished(database, tenant, call["id"]), what="the dead letter")
    assert row["status"] == "dead_lettered"
    assert row["stages"]["download"]["status"] == "dead_lettered"
    letters = [m for m in dlq.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert len(letters) == 1
    assert letters[0].attributes["dlq_reason"] == "unsafe_recording_url"
    assert "169.254.169.254" in letters[0].attributes["dlq_error"]
    prefix = f"tenants/{tenant.tenant_id}/calls/{call['id']}/"
    assert (
        list(storage.Client().list_blobs(functions_running.config.audio_bucket, prefix=prefix))
        == []
    )


def test_a_call_callrail_does_not_know_is_dead_lettered_by_fetch(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    dlq = tap("calls.registered.dlq")
    call = demo_call("kitchen") | {"id": "CAL" + uuid.uuid4().hex, "account_id": TEST_ACCOUNT}
    send(functions_running, tenant, call)  # never added to the simulator
    row = wait_for(finished(database, tenant, call["id"]), what="the dead letter")
    assert row["stages"]["fetch"]["status"] == "dead_lettered"
    letters = [m for m in dlq.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert [m.attributes["dlq_reason"] for m in letters] == ["callrail_not_found"]


def test_a_refused_api_key_is_dead_lettered_with_a_clear_reason(
    functions_running: LocalStack,
    make_tenant: Callable[..., Tenant],
    tap: Callable[[str], Tap],
    database: Any,
) -> None:
    tenant = make_tenant(api_key="revoked-key-123456")
    dlq = tap("calls.registered.dlq")
    call = add_call(functions_running, tenant, "kitchen")
    send(functions_running, tenant, call)
    wait_for(finished(database, tenant, call["id"]), what="the dead letter")
    letters = [m for m in dlq.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert [m.attributes["dlq_reason"] for m in letters] == ["callrail_auth_failed"]
    assert "set-api-key" in letters[0].attributes["dlq_error"]
    assert "revoked-key-123456" not in letters[0].attributes["dlq_error"]


def test_every_call_of_a_mixed_batch_ends_exactly_once(
    functions_running: LocalStack, tenant: Tenant, tap: Callable[[str], Tap], database: Any
) -> None:
    stored = tap("recordings.stored")
    dlq = tap("calls.fetched.dlq")
    plan = {
        "ok-mp3": ("kitchen", {}),
        "ok-wav": ("warranty", {}),
        "no-recording": ("missed", {}),
        "flaky-api": ("bathroom", {"api_status_sequence": [503, 500]}),
        "flaky-audio": ("voicemail", {"recording_status_sequence": [500, 503]}),
        "truncated": ("robocall", {"recording": "truncated"}),
        "unsafe": ("kitchen", {"redirect_to": "https://evil.example.com/x.mp3"}),
    }
    calls = {
        name: add_call(functions_running, tenant, like, faults)
        for name, (like, faults) in plan.items()
    }
    for call in calls.values():
        send(functions_running, tenant, call)
    rows = {
        name: wait_for(finished(database, tenant, c["id"]), timeout=120, what=name)
        for name, c in calls.items()
    }

    outcomes: dict[str, list[str]] = {c["id"]: [] for c in calls.values()}
    for message in stored.drain(settle=4.0):
        if message.attributes.get("kind") == "call.no_recording":
            outcomes.setdefault(message.attributes["call_id"], []).append(
                f"without:{message.attributes['reason']}"
            )
        elif message.attributes.get("eventType") == "OBJECT_FINALIZE":
            name = message.attributes["objectId"]
            if "/recording." in name:  # transcripts written next to recordings notify too
                outcomes.setdefault(name.split("/")[3], []).append("stored")
    for message in dlq.drain(settle=1.0):
        outcomes.setdefault(message.attributes.get("call_id", "?"), []).append(
            f"dlq:{message.attributes['dlq_reason']}"
        )

    expected = {
        "ok-mp3": ["stored"],
        "ok-wav": ["stored"],
        "no-recording": ["without:no_recording"],
        "flaky-api": ["stored"],
        "flaky-audio": ["stored"],
        "truncated": ["without:download_failed"],
        "unsafe": ["dlq:unsafe_recording_url"],
    }
    assert {name: outcomes[c["id"]] for name, c in calls.items()} == expected, rows
