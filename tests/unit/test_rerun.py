"""The message `callpipe calls rerun` announces a call with: what transcribe reads from the
recordings topic (the end-to-end run is in tests/integration/test_rerun.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callpipe.messages import RecordingsEvent
from callpipe.rerun import StoredCall, announcement, rerun
from callpipe.transcription import message_call, parse_recording_name
from tests.unit.conftest import RecordingPublisher


def stored(**changes: object) -> StoredCall:
    fields: dict[str, object] = {
        "tenant_id": "acme",
        "call_id": "CAL1",
        "office_id": "main",
        "recording_status": "stored",
        "recording_uri": "gs://recordings/tenants/acme/calls/CAL1/recording.mp3",
        "recording_content_type": "audio/mpeg",
        "recording_bytes": 48213,
        "recording_seconds": 61.4,
        "transcript_status": "transcribed",
        "transcript_reason": None,
        "analysis_status": "failed",
        "received_at": datetime(2026, 11, 25, 12, tzinfo=UTC),
    }
    return StoredCall(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_call_with_its_recording_is_announced_as_the_buckets_notification() -> None:
    data, attributes = announcement(stored(), "f00d")
    event = RecordingsEvent.from_data(data)
    assert event.stored is not None and event.without is None
    assert (event.stored.bucket, parse_recording_name(event.stored.name)) == (
        "recordings",
        ("acme", "CAL1"),
    )
    assert event.stored.metadata == {
        "correlation_id": "f00d",
        "office_id": "main",
        "duration_seconds": "61",
    }
    assert event.stored.size == 48213 and event.stored.content_type == "audio/mpeg"
    assert message_call(attributes) == ("acme", "CAL1")  # a dead letter lands on the call


@pytest.mark.parametrize(
    ("status", "reason"), [("download_failed", "download_failed"), ("no_recording", "no_recording")]
)
def test_a_call_without_a_stored_recording_is_announced_without_one(
    status: str, reason: str
) -> None:
    data, attributes = announcement(stored(recording_status=status, recording_uri=None), "f00d")
    event = RecordingsEvent.from_data(data)
    assert event.without is not None
    assert (event.without.reason, event.without.correlation_id) == (reason, "f00d")
    assert attributes["tenant_id"] == "acme" and attributes["call_id"] == "CAL1"


def test_each_rerun_is_a_new_event_of_the_call() -> None:
    publisher = RecordingPublisher()
    ids = iter(["one", "two"])
    results = list(
        rerun([stored(), stored(call_id="CAL2")], publisher, "recordings.stored", lambda: next(ids))
    )
    assert [r.correlation_id for r in results] == ["one", "two"]
    assert [m.attributes["correlation_id"] for m in publisher.on("recordings.stored")] == [
        "one",
        "two",
    ]
    assert stored().failure == "analysis failed"
    assert stored(transcript_reason="transcription_failed: 403").failure == (
        "transcription failed, analysis failed"
    )
