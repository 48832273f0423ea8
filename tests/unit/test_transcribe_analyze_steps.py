"""transcribe and analyze domain logic with in-memory doubles of the project's own ports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callpipe.analysis import AnalysisFailed, AnalysisResult, CallAnalysis, CallContext
from callpipe.analyzing import AnalyzeCall
from callpipe.callrail.webhook import EventType
from callpipe.messages import CallAnalyzed, CallTranscribed, CallWithoutRecording, RecordingsEvent
from callpipe.pipeline_wiring import StepRuntime
from callpipe.progress import Stage, StageStatus
from callpipe.publishing import PublishFailed
from callpipe.steps import PermanentError
from callpipe.transcription import TranscribeCall, message_call, parse_recording_name
from callpipe.transcripts import AudioInput, Transcript, TranscriptionFailed, TranscriptSegment
from tests.unit.conftest import FailingPublisher
from tests.unit.doubles import Progress, Publisher

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUCKET = "callpipe-recordings"


class Objects:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"tenants/acme/calls/CAL1/recording.mp3": b"ID3 audio"}
        self.writes = 0

    def download_to(self, name: str, path: Path) -> None:
        if name not in self.data:
            raise FileNotFoundError(name)
        path.write_bytes(self.data[name])

    def read(self, name: str) -> bytes | None:
        return self.data.get(name)

    def write_once(
        self, name: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> bool:
        if name in self.data:
            return False
        self.data[name] = data
        self.writes += 1
        return True

    def replace(self, name: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        self.data[name] = data
        self.writes += 1


TRANSCRIPT = Transcript(
    segments=[
        TranscriptSegment(
            speaker="agent", start=0.0, end=2.0, text="Thanks for calling Demo Kitchens."
        ),
        TranscriptSegment(
            speaker="caller", start=2.5, end=6.0, text="I want a quote for a kitchen remodel."
        ),
    ],
    text="agent: Thanks for calling Demo Kitchens.\ncaller: I want a quote for a kitchen remodel.",
    language="en-US",
    audio_duration_seconds=6.0,
    engine="faster-whisper",
    model="base-int8",
    diarization="channel",
    speaker_count=2,
)


class Engine:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.inputs: list[AudioInput] = []

    def transcribe(self, audio: AudioInput, progress: Any = None) -> Transcript:
        self.inputs.append(audio)
        if self.error:
            raise self.error
        assert audio.path.read_bytes() == b"ID3 audio"
        return TRANSCRIPT


def stored_event(
    name: str = "tenants/acme/calls/CAL1/recording.mp3", bucket: str = BUCKET
) -> RecordingsEvent:
    payload = {
        "kind": "storage#object",
        "name": name,
        "bucket": bucket,
        "contentType": "audio/mpeg",
        "size": "9",
        "generation": "17",
        "metadata": {"correlation_id": "c0ffee", "office_id": "main", "duration_seconds": "6"},
    }
    return RecordingsEvent.from_data(json.dumps(payload).encode())


def transcribe_step(
    engine: Engine, objects: Objects, progress: Progress, publisher: Publisher
) -> TranscribeCall:
    return TranscribeCall(
        lambda: engine, objects, BUCKET, progress, publisher, "calls.transcribed", max_attempts=3
    )


def test_a_stored_recording_is_transcribed_once_and_the_transcript_kept_next_to_it() -> None:
    engine, objects, progress, publisher = Engine(), Objects(), Progress(), Publisher()
    step = transcribe_step(engine, objects, progress, publisher)
    assert step(stored_event())["outcome"] == "transcribed"
    assert engine.inputs[0].gcs_uri == f"gs://{BUCKET}/tenants/acme/calls/CAL1/recording.mp3"
    assert engine.inputs[0].duration_seconds == 6.0
    saved = Transcript.model_validate_json(objects.data["tenants/acme/calls/CAL1/transcript.json"])
    assert saved == TRANSCRIPT
    message = CallTranscribed.from_data(publisher.sent[0][1])
    assert message.status == "transcribed" and message.correlation_id == "c0ffee"
    assert message.transcript is not None and message.transcript.segments[1].speaker == "caller"
    assert message.transcript_uri == f"gs://{BUCKET}/tenants/acme/calls/CAL1/transcript.json"

    # A redelivery reuses the stored transcript instead of paying for a second one.
    outcome = step(stored_event())
    assert outcome["reused"] is True
    assert len(engine.inputs) == 1 and objects.writes == 1


@pytest.mark.parametrize(
    ("name", "bucket"),
    [
        ("tenants/acme/webhooks/CAL1/x.json", BUCKET),
        ("tenants/acme/calls/CAL1/transcript.json", BUCKET),
        ("other/recording.mp3", BUCKET),
        ("tenants/../calls/CAL1/recording.mp3", BUCKET),
        ("tenants/acme/calls/CAL1/recording.mp3", "another-bucket"),
    ],
)
def test_objects_that_are_not_recordings_are_ignored(name: str, bucket: str) -> None:
    engine, publisher = Engine(), Publisher()
    outcome = transcribe_step(engine, Objects(), Progress(), publisher)(stored_event(name, bucket))
    assert outcome["outcome"] == "ignored"
    assert engine.inputs == [] and publisher.sent == []


def without_recording() -> RecordingsEvent:
    """download-recording's notice for a call CallRail has no recording of."""
    notice = CallWithoutRecording(
        tenant_id="acme",
        office_id="main",
        call_id="CAL2",
        event_type=EventType.POST_CALL,
        correlation_id="c1",
        reason="no_recording",
        detail="CallRail has no recording",
    )
    return RecordingsEvent.from_data(notice.to_data())


def test_a_call_without_audio_passes_with_its_reason() -> None:
    publisher, progress = Publisher(), Progress()
    outcome = transcribe_step(Engine(), Objects(), progress, publisher)(without_recording())
    assert outcome == {"outcome": "no_transcript", "reason": "no_recording"}
    message = CallTranscribed.from_data(publisher.sent[0][1])
    assert (message.status, message.reason, message.transcript) == (
        "no_transcript",
        "no_recording",
        None,
    )
    assert progress.records[-1][:2] == (Stage.TRANSCRIBE, StageStatus.SKIPPED)


def test_engine_failures_retry_then_go_on_without_transcript() -> None:
    engine, publisher, progress = (
        Engine(TranscriptionFailed("Speech-to-Text unavailable")),
        Publisher(),
        Progress(),
    )
    step = transcribe_step(engine, Objects(), progress, publisher)
    for _ in range(2):
        with pytest.raises(TranscriptionFailed):
            step(stored_event())
    assert step(stored_event())["outcome"] == "no_transcript"
    message = CallTranscribed.from_data(publisher.sent[0][1])
    assert message.reason is not None and message.reason.startswith("transcription_failed")


def test_a_permanent_engine_failure_goes_on_at_once() -> None:
    engine, publisher = (
        Engine(TranscriptionFailed("cannot decode audio", permanent=True)),
        Publisher(),
    )
    assert (
        transcribe_step(engine, Objects(), Progress(), publisher)(stored_event())["outcome"]
        == "no_transcript"
    )
    assert len(engine.inputs) == 1


def test_a_recording_deleted_since_it_was_stored_goes_on_without_transcript_at_once() -> None:
    engine, objects, progress, publisher = Engine(), Objects(), Progress(), Publisher()
    del objects.data["tenants/acme/calls/CAL1/recording.mp3"]
    outcome = transcribe_step(engine, objects, progress, publisher)(stored_event())
    assert outcome["outcome"] == "no_transcript"
    assert "no longer in the bucket" in outcome["detail"]
    assert engine.inputs == [] and progress.records[-1][:2] == (
        Stage.TRANSCRIBE,
        StageStatus.FAILED,
    )


@pytest.mark.parametrize("duration", ["1:05", "nan", "-3", "0"])
def test_a_recording_length_that_is_not_seconds_is_left_to_the_engine(duration: str) -> None:
    engine = Engine()
    event = stored_event()
    assert event.stored is not None
    event.stored.metadata["duration_seconds"] = duration
    transcribe_step(engine, Objects(), Progress(), Publisher())(event)
    assert engine.inputs[0].duration_seconds is None


def test_an_unreadable_stored_transcript_is_transcribed_again_and_replaced() -> None:
    engine, objects, publisher = Engine(), Objects(), Publisher()
    objects.data["tenants/acme/calls/CAL1/transcript.json"] = b'{"segments": [{"speak'
    step = transcribe_step(engine, objects, Progress(), publisher)
    assert step(stored_event())["reused"] is False
    saved = Transcript.model_validate_json(objects.data["tenants/acme/calls/CAL1/transcript.json"])
    assert saved == TRANSCRIPT
    assert step(stored_event())["reused"] is True and len(engine.inputs) == 1


def test_a_transcript_not_handed_on_is_not_recorded_as_done() -> None:
    # A success recorded before a publish that fails on every attempt would make the dead
    # letter look like a redelivery of finished work, and the call would read "ok".
    progress = Progress()
    step = TranscribeCall(
        lambda: Engine(), Objects(), BUCKET, progress, FailingPublisher(), "calls.transcribed"
    )
    with pytest.raises(PublishFailed):
        step(stored_event())
    assert progress.records == []
    assert progress.done_detail("acme", "CAL1", Stage.TRANSCRIBE, "c0ffee") is None


def test_a_call_without_audio_not_handed_on_is_not_recorded_as_skipped() -> None:
    progress = Progress()
    step = TranscribeCall(
        lambda: Engine(), Objects(), BUCKET, progress, FailingPublisher(), "calls.transcribed"
    )
    with pytest.raises(PublishFailed):
        step(without_recording())
    assert progress.records == []


def test_parse_recording_name() -> None:
    assert parse_recording_name("tenants/acme/calls/CAL1/recording.wav") == ("acme", "CAL1")
    assert parse_recording_name("tenants/Acme!/calls/CAL1/recording.wav") is None


def test_message_call_reads_a_recording_notification_by_its_object_name() -> None:
    assert message_call({"tenant_id": "acme", "call_id": "CAL1"}) == ("acme", "CAL1")
    notification = {"objectId": "tenants/acme/calls/CAL1/recording.mp3", "bucketId": "b"}
    assert message_call(notification) == ("acme", "CAL1")
    assert message_call({"objectId": "elsewhere/recording.mp3"}) == (None, None)


def test_a_dead_lettered_recording_notification_marks_its_calls_stage() -> None:
    recorded: list[tuple[Any, ...]] = []

    class Recorded:
        def record(self, *args: Any, **kwargs: Any) -> None:
            recorded.append((*args, kwargs.get("detail")))

    runtime = StepRuntime(handler=lambda event: {}, publisher=None, progress=Recorded())  # type: ignore[arg-type]
    record = runtime.dead_letter_recorder(Stage.TRANSCRIBE)
    record(
        {"objectId": "tenants/acme/calls/CAL1/recording.mp3"},
        PermanentError("retries_exhausted", "speech timed out"),
    )
    assert recorded == [
        (
            "acme",
            "CAL1",
            Stage.TRANSCRIBE,
            StageStatus.DEAD_LETTERED,
            "retries_exhausted: speech timed out",
        )
    ]


ANALYSIS = CallAnalysis(
    intent="quote_request",
    project_type="kitchen",
    timeline="1-3_months",
    budget_indicator="medium",
    sentiment="positive",
    urgency="medium",
    lead_score=85,
    appointment_requested=False,
    follow_up_required=True,
    key_details=["Kitchen remodel interest"],
    spam_likelihood=0.02,
    spam_reasons=[],
    summary="Kitchen quote.",
)


class Analyzer:
    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = list(errors or [])
        self.seen: list[tuple[Transcript | None, CallContext]] = []

    def analyze(self, transcript: Transcript | None, context: CallContext) -> AnalysisResult:
        self.seen.append((transcript, context))
        if self.errors:
            raise self.errors.pop(0)
        return AnalysisResult(analysis=ANALYSIS, engine="rules", model="callpipe-rules-1")


class Contexts:
    def context_for(self, tenant_id: str, call_id: str) -> CallContext:
        return CallContext(direction="inbound", answered=True, duration_seconds=184)


def transcribed(with_transcript: bool = True) -> CallTranscribed:
    return CallTranscribed(
        tenant_id="acme",
        office_id="main",
        call_id="CAL1",
        correlation_id="c0ffee",
        status="transcribed" if with_transcript else "no_transcript",
        reason=None if with_transcript else "no_recording",
        transcript=TRANSCRIPT if with_transcript else None,
    )


def analyze_step(analyzer: Analyzer, progress: Progress, publisher: Publisher) -> AnalyzeCall:
    return AnalyzeCall(
        lambda: analyzer,
        Contexts(),
        progress,
        publisher,
        "calls.analyzed",
        max_attempts=3,
        clock=lambda: NOW,
    )


def test_analysis_is_published_with_the_transcript_and_context() -> None:
    analyzer, publisher, progress = Analyzer(), Publisher(), Progress()
    outcome = analyze_step(analyzer, progress, publisher)(transcribed())
    assert outcome["lead_score"] == 85
    assert analyzer.seen[0][1].duration_seconds == 184
    topic, data, attributes = publisher.sent[0]
    message = CallAnalyzed.from_data(data)
    assert topic == "calls.analyzed"
    assert message.analysis_status == "analyzed" and message.result is not None
    assert message.transcript == TRANSCRIPT
    assert attributes["lead_score"] == "85" and attributes["intent"] == "quote_request"
    assert progress.records[-1][:2] == (Stage.ANALYZE, StageStatus.OK)


def test_a_call_without_transcript_is_analyzed_from_what_is_known() -> None:
    analyzer, publisher = Analyzer(), Publisher()
    analyze_step(analyzer, Progress(), publisher)(transcribed(with_transcript=False))
    assert analyzer.seen[0][0] is None
    message = CallAnalyzed.from_data(publisher.sent[0][1])
    assert (
        message.transcript_status == "no_transcript" and message.transcript_reason == "no_recording"
    )


def test_a_refused_analysis_still_goes_on_to_persist() -> None:
    analyzer, publisher, progress = (
        Analyzer([AnalysisFailed("refused: safety", permanent=True)]),
        Publisher(),
        Progress(),
    )
    outcome = analyze_step(analyzer, progress, publisher)(transcribed())
    assert outcome["outcome"] == "analysis_failed"
    message = CallAnalyzed.from_data(publisher.sent[0][1])
    assert message.analysis_status == "failed" and "refused" in (message.analysis_reason or "")
    assert message.transcript == TRANSCRIPT
    assert progress.records[-1][:2] == (Stage.ANALYZE, StageStatus.FAILED)


def test_transient_analysis_failures_retry_then_give_up() -> None:
    errors: list[Exception] = [AnalysisFailed("503", permanent=False) for _ in range(3)]
    analyzer, publisher = Analyzer(errors), Publisher()
    step = analyze_step(analyzer, Progress(), publisher)
    for _ in range(2):
        with pytest.raises(AnalysisFailed):
            step(transcribed())
    assert step(transcribed())["outcome"] == "analysis_failed"
    assert "gave up after 3 attempts" in (
        CallAnalyzed.from_data(publisher.sent[0][1]).analysis_reason or ""
    )


def test_a_redelivered_analysis_is_not_run_again() -> None:
    # The first delivery's result is out; analyzing again would pay for the model again and
    # hand persist a second, possibly different or failed, answer.
    analyzer = Analyzer([])
    publisher, progress = Publisher(), Progress()
    step = analyze_step(analyzer, progress, publisher)
    assert step(transcribed())["outcome"] == "analyzed"
    analyzer.errors = [AnalysisFailed("refused: safety", permanent=True)]
    assert step(transcribed()) == {"outcome": "already_analyzed"}
    assert len(analyzer.seen) == 1 and len(publisher.sent) == 1


def test_the_transcript_an_analysis_lacked_is_analyzed_for_the_same_event() -> None:
    """Two deliveries of one recording's notification: one gave up on the transcription and
    was analyzed without it, the other transcribed it. The transcript must reach persist;
    the reverse order must not replace the better analysis."""
    analyzer, publisher, progress = Analyzer(), Publisher(), Progress()
    step = analyze_step(analyzer, progress, publisher)
    assert step(transcribed(with_transcript=False))["outcome"] == "analyzed"
    assert step(transcribed())["outcome"] == "analyzed"
    assert step(transcribed(with_transcript=False)) == {"outcome": "already_analyzed"}
    assert step(transcribed()) == {"outcome": "already_analyzed"}
    assert len(analyzer.seen) == 2


def test_analyzing_again_for_the_transcript_opens_the_stage_for_its_dead_letter() -> None:
    """While the second analysis runs, the stage is not "done": if it fails on every
    attempt, its dead letter must be recorded, not taken for finished work."""
    publisher, progress = Publisher(), Progress()
    analyze_step(Analyzer(), progress, publisher)(transcribed(with_transcript=False))
    failing = analyze_step(Analyzer([RuntimeError("Spanner unavailable")]), progress, publisher)
    with pytest.raises(RuntimeError):
        failing(transcribed())
    assert progress.done_detail("acme", "CAL1", Stage.ANALYZE, "c0ffee") is None


def test_another_event_of_the_call_is_analyzed_again() -> None:
    analyzer, publisher, progress = Analyzer(), Publisher(), Progress()
    step = analyze_step(analyzer, progress, publisher)
    step(transcribed())
    later = transcribed().model_copy(update={"correlation_id": "d00d"})
    assert step(later)["outcome"] == "analyzed"
    assert len(analyzer.seen) == 2


def test_a_failed_analysis_is_tried_again_when_redelivered() -> None:
    analyzer = Analyzer([AnalysisFailed("refused: safety", permanent=True)])
    publisher, progress = Publisher(), Progress()
    step = analyze_step(analyzer, progress, publisher)
    assert step(transcribed())["outcome"] == "analysis_failed"
    assert step(transcribed())["outcome"] == "analyzed"


def test_an_analysis_not_handed_on_is_not_recorded_as_done() -> None:
    progress = Progress()
    step = AnalyzeCall(
        lambda: Analyzer(), Contexts(), progress, FailingPublisher(), "calls.analyzed"
    )
    with pytest.raises(PublishFailed):
        step(transcribed())
    assert progress.records == []
    assert progress.done_detail("acme", "CAL1", Stage.ANALYZE, "c0ffee") is None


@pytest.mark.parametrize("step", ["transcribe", "analyze"])
def test_the_steps_give_up_before_pub_sub_dead_letters_and_not_early(
    step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pub/Sub's backoff (10 s doubling to 10 min) spans about half an hour over the
    attempts: an outage that long ends a call without its transcript or analysis, not a
    two-minute one."""
    from callpipe.config import Settings
    from callpipe.pipeline_wiring import give_up_after
    from callpipe.topology import load_topology

    (subscription,) = [s for s in load_topology().subscriptions() if s.step == step]
    attempts = subscription.max_delivery_attempts
    assert attempts is not None
    monkeypatch.setenv("MAX_DELIVERY_ATTEMPTS", str(attempts))
    assert give_up_after(Settings()) == attempts - 1 >= 8


def test_analyze_gives_up_by_pub_sub_s_count_when_its_own_lags() -> None:
    """Deliveries refused while every instance was busy, or stopped by the timeout, count
    for Pub/Sub but not in the step's own count: on Pub/Sub's second-to-last delivery the
    call goes on without an analysis instead of being dead-lettered."""
    from callpipe.steps import run_step
    from tests.unit.test_steps import push_body

    analyzer = Analyzer([AnalysisFailed("429 RESOURCE_EXHAUSTED") for _ in range(2)])
    publisher, progress = Publisher(), Progress()
    step = AnalyzeCall(
        lambda: analyzer, Contexts(), progress, publisher, "calls.analyzed", max_attempts=9
    )
    message = transcribed()

    def deliver(attempt: int) -> dict[str, Any]:
        body = {**push_body(message.to_data(), message.attributes()), "deliveryAttempt": attempt}
        return run_step(
            "analyze", body, CallTranscribed, step, publisher, "calls.transcribed.dlq", None, 10
        )

    with pytest.raises(AnalysisFailed):
        deliver(3)  # counted: 1
    assert deliver(9)["outcome"] == "analysis_failed"  # counted: 2, but Pub/Sub says 9
    assert "gave up after 9 attempts" in (
        CallAnalyzed.from_data(publisher.sent[-1][1]).analysis_reason or ""
    )
