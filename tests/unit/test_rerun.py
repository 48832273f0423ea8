"""The message `callpipe calls rerun` announces a call with: what transcribe reads from the
recordings topic (the end-to-end run is in tests/integration/test_rerun.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callpipe.messages import RecordingsEvent
from callpipe.rerun import Planned, StoredCall, announce_again, announcement, plan
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
    planned = [Planned(stored(), True), Planned(stored(call_id="CAL2"), True)]
    results = [
        announce_again(item, publisher, "recordings.stored", lambda: next(ids)) for item in planned
    ]
    assert [r.correlation_id for r in results] == ["one", "two"]
    assert [m.attributes["correlation_id"] for m in publisher.on("recordings.stored")] == [
        "one",
        "two",
    ]
    assert stored().failure == "analysis failed"
    assert stored(transcript_reason="transcription_failed: 403").failure == (
        "transcription failed, analysis failed"
    )


def test_a_call_whose_recording_is_gone_is_run_again_only_for_its_analysis() -> None:
    gone = stored(transcript_reason="transcription_failed: 503", analysis_status="analyzed")
    both = stored(call_id="CAL2", transcript_reason="transcription_failed: 503")
    none = stored(call_id="CAL3", recording_uri=None, recording_status="no_recording")
    kept = stored(call_id="CAL4", recording_uri="gs://recordings/tenants/acme/calls/CAL4/a.mp3")
    planned = plan([gone, both, none, kept], lambda uri: "CAL4" in uri)  # CAL4's is there
    assert [(p.from_recording, p.left_alone is None) for p in planned] == [
        (False, False),  # only the transcription failed: nothing can redo it
        (False, True),  # the analysis failed too: analysed again from what is known
        (False, True),  # no recording ever
        (True, True),
    ]
    assert "no longer in the bucket" in (planned[0].left_alone or "")

    publisher = RecordingPublisher()
    ran = [
        announce_again(item, publisher, "recordings.stored")
        for item in planned
        if item.left_alone is None
    ]
    assert [r.call.call_id for r in ran] == ["CAL2", "CAL3", "CAL4"]
    notice = RecordingsEvent.from_data(publisher.on("recordings.stored")[0].data).without
    assert notice is not None and "is gone" in notice.detail
