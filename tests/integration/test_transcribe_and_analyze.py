"""transcribe and analyze end to end: a real recording stored by download-recording is
transcribed by the local engine (faster-whisper, smallest packaged model in tests) through
the bucket's OBJECT_FINALIZE notification, then analyzed by the rule-based analyzer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from callpipe.devstack.stack import LocalStack
from callpipe.messages import CallAnalyzed
from tests.conftest import Tap, Tenant
from tests.integration.test_fetch_and_download import add_call, send


def analyzed_for(tap: Tap, call_id: str, timeout: float = 240.0) -> list[CallAnalyzed]:
    found: list[CallAnalyzed] = []
    for message in tap.drain(expect=1, settle=3.0, timeout=timeout):
        if message.attributes.get("call_id") == call_id:
            found.append(CallAnalyzed.model_validate_json(message.data))
    return found


def test_a_stored_recording_is_transcribed_with_speakers_and_analyzed(
    functions_running: LocalStack,
    make_tenant: Callable[..., Tenant],
    tap: Callable[[str], Tap],
    database: Any,
) -> None:
    from google.cloud import storage

    tenant = make_tenant()
    analyzed = tap("calls.analyzed")
    call = add_call(functions_running, tenant, "kitchen")  # stereo: agent left, caller right
    send(functions_running, tenant, call)
    messages = analyzed_for(analyzed, call["id"])
    assert len(messages) == 1
    message = messages[0]
    assert message.transcript_status == "transcribed"
    transcript = message.transcript
    assert transcript is not None
    assert transcript.engine == "faster-whisper"
    assert {s.speaker for s in transcript.segments} == {"agent", "caller"}
    assert "kitchen" in transcript.text.lower()
    assert message.transcript_uri == (
        f"gs://{functions_running.config.audio_bucket}/tenants/{tenant.tenant_id}/calls/{call['id']}/transcript.json"
    )
    blob = (
        storage.Client()
        .bucket(functions_running.config.audio_bucket)
        .blob(f"tenants/{tenant.tenant_id}/calls/{call['id']}/transcript.json")
    )
    assert json.loads(blob.download_as_bytes())["segments"]

    assert message.analysis_status == "analyzed"
    assert message.result is not None
    analysis = message.result.analysis
    assert analysis.project_type == "kitchen"
    assert 1 <= analysis.lead_score <= 100
    assert analysis.spam_likelihood < 0.5


def test_a_call_without_audio_is_still_analyzed(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], tap: Callable[[str], Tap]
) -> None:
    tenant = make_tenant()
    analyzed = tap("calls.analyzed")
    call = add_call(functions_running, tenant, "missed")
    send(functions_running, tenant, call)
    messages = analyzed_for(analyzed, call["id"], timeout=90)
    assert len(messages) == 1
    assert messages[0].transcript_status == "no_transcript"
    assert messages[0].transcript_reason == "no_recording"
    assert messages[0].analysis_status == "analyzed"
    assert messages[0].result is not None and messages[0].result.analysis.follow_up_required
