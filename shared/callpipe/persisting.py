"""The persist step: the call's transcript and analysis land on its Spanner row.

One read-write transaction per message. The newest analysis wins: a message analyzed
before the one already stored (a redelivery that arrives late, a replay of an old dead
letter, a Call Modified processed before the Post-Call) changes nothing and publishes
nothing. Two exceptions keep results over failures: a result replaces a stored failure
whatever their order, and a failed analysis never replaces a stored result
(``kept_analysis``). A message without a transcript never erases a stored one. Running
the same message again leaves the same row (its first CompletedAt kept) and publishes the
same CallCompleted, which tells downstream consumers the call is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from callpipe.messages import CallAnalyzed, CallCompleted
from callpipe.progress import CALL_STAGE_COLUMNS, SpannerProgress, Stage, call_stage_row
from callpipe.publishing import Publisher, PublishFailed
from callpipe.steps import PermanentError


def call_columns(message: CallAnalyzed, completed_at: datetime) -> dict[str, Any]:
    """The Calls columns persist owns, from the analyzed message."""
    from google.cloud.spanner_v1 import JsonObject

    transcript = message.transcript
    result = message.result
    analysis = result.analysis if result else None
    columns: dict[str, Any] = {
        "TenantId": message.tenant_id,
        "CallId": message.call_id,
        "Stage": "persist",
        "StageStatus": "ok",
        "StageDetail": f"transcript {message.transcript_status}, analysis {message.analysis_status}",
        "TranscriptStatus": message.transcript_status,
        "TranscriptReason": message.transcript_reason,
        "TranscriptUri": message.transcript_uri,
        "TranscriptText": transcript.text if transcript else None,
        "TranscriptSegments": JsonObject([s.model_dump(mode="json") for s in transcript.segments])
        if transcript
        else None,
        "TranscriptEngine": transcript.engine if transcript else None,
        "TranscriptModel": transcript.model if transcript else None,
        "TranscriptLanguage": transcript.language if transcript else None,
        "SpeakerCount": transcript.speaker_count if transcript else None,
        "AudioSeconds": transcript.audio_duration_seconds if transcript else None,
        "AnalysisStatus": message.analysis_status,
        "AnalysisReason": message.analysis_reason,
        "Analysis": JsonObject(analysis.model_dump(mode="json")) if analysis else None,
        "Intent": analysis.intent if analysis else None,
        "ProjectType": analysis.project_type if analysis else None,
        "Timeline": analysis.timeline if analysis else None,
        "BudgetIndicator": analysis.budget_indicator if analysis else None,
        "Sentiment": analysis.sentiment if analysis else None,
        "Urgency": analysis.urgency if analysis else None,
        "LeadScore": analysis.lead_score if analysis else None,
        "SpamLikelihood": analysis.spam_likelihood if analysis else None,
        "IsSpam": (analysis.intent == "spam" or analysis.spam_likelihood >= 0.5)
        if analysis
        else None,
        "AppointmentRequested": analysis.appointment_requested if analysis else None,
        "FollowUpRequired": analysis.follow_up_required if analysis else None,
        "AnalysisEngine": result.engine if result else None,
        "AnalysisModel": result.model if result else None,
        "InputTokens": result.input_tokens if result else None,
        "OutputTokens": result.output_tokens if result else None,
        "AnalyzedAt": message.analyzed_at,
        "CompletedAt": completed_at,
    }
    return columns


TRANSCRIPT_COLUMNS = frozenset(
    {
        "TranscriptStatus",
        "TranscriptReason",
        "TranscriptUri",
        "TranscriptText",
        "TranscriptSegments",
        "TranscriptEngine",
        "TranscriptModel",
        "TranscriptLanguage",
        "SpeakerCount",
        "AudioSeconds",
    }
)
# What a failed analysis must not overwrite on a call that has a result.
ANALYSIS_COLUMNS = frozenset(
    {
        "AnalysisStatus",
        "AnalysisReason",
        "Analysis",
        "Intent",
        "ProjectType",
        "Timeline",
        "BudgetIndicator",
        "Sentiment",
        "Urgency",
        "LeadScore",
        "SpamLikelihood",
        "IsSpam",
        "AppointmentRequested",
        "FollowUpRequired",
        "AnalysisEngine",
        "AnalysisModel",
        "InputTokens",
        "OutputTokens",
        "AnalyzedAt",
        "CompletedAt",
    }
)


class PersistCall:
    def __init__(
        self,
        database: Any,
        publisher: Publisher,
        output_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = database
        self._publisher = publisher
        self._output_topic = output_topic
        self._clock = clock

    def __call__(self, message: CallAnalyzed) -> dict[str, Any]:
        from google.cloud import spanner

        def work(txn: Any) -> tuple[datetime | None, dict[str, Any], str, str | None] | None:
            rows = list(
                txn.read(
                    "Calls",
                    [
                        "AnalyzedAt",
                        "CompletedAt",
                        "AnalysisStatus",
                        "TranscriptStatus",
                        "TranscriptUri",
                    ],
                    spanner.KeySet(keys=[[message.tenant_id, message.call_id]]),
                )
            )
            if not rows:
                raise PermanentError(
                    "unknown_call",
                    f"no Calls row for tenant {message.tenant_id}, call {message.call_id}",
                )
            (
                stored_analyzed_at,
                stored_completed_at,
                stored_status,
                stored_transcript,
                stored_transcript_uri,
            ) = rows[0]
            # A result replaces a failure whatever their order: the failure may have been
            # persisted first (a replayed old dead letter, a delivery held up in backoff).
            result_over_failure = (
                stored_status == "failed" and message.analysis_status == "analyzed"
            )
            newer_stored = (
                stored_analyzed_at is not None and stored_analyzed_at > message.analyzed_at
            )
            if newer_stored and not result_over_failure:
                return None  # a newer analysis is stored already
            same = stored_analyzed_at == message.analyzed_at and stored_completed_at is not None
            completed_at = stored_completed_at if same else self._clock()
            columns = call_columns(message, completed_at)
            # An analysis made without the transcript the row has (a rerun whose
            # transcription failed, the transcript file gone) saw less than the stored one.
            blind = message.transcript is None and stored_transcript == "transcribed"
            kept = stored_status == "analyzed" and (message.analysis_status == "failed" or blind)
            if kept:
                # A failed analysis never replaces a result (a replay during a model outage,
                # a re-analysis refused), nor does one that did not see the transcript: the
                # call keeps its analysis and its completion, and takes only what is
                # newer, a transcript if it brings one.
                columns = {k: v for k, v in columns.items() if k not in ANALYSIS_COLUMNS}
                took = "took the new transcript" if message.transcript else "kept the transcript"
                later = (
                    f"a later analysis failed: {message.analysis_reason or 'no reason given'}"
                    if message.analysis_status == "failed"
                    else "a later analysis was made without it "
                    f"({message.transcript_reason or 'no transcript'})"
                )
                columns["StageDetail"] = f"{took} and the stored analysis; {later}"[:2000]
            transcript_status, transcript_uri = message.transcript_status, message.transcript_uri
            if blind:
                # Two deliveries of one recording's notification, one of which gave up on
                # the transcription: a message without the transcript never erases it, and
                # the call, as stored and announced, has that transcript.
                columns = {k: v for k, v in columns.items() if k not in TRANSCRIPT_COLUMNS}
                transcript_status, transcript_uri = stored_transcript, stored_transcript_uri
                if not kept:
                    columns["StageDetail"] = (
                        f"transcript {stored_transcript} (kept), analysis {message.analysis_status}"
                    )
            columns["UpdatedAt"] = spanner.COMMIT_TIMESTAMP
            txn.update("Calls", list(columns), [tuple(columns.values())])
            txn.insert_or_update(
                "CallStages",
                CALL_STAGE_COLUMNS,
                [
                    call_stage_row(
                        message.tenant_id,
                        message.call_id,
                        "persist",
                        "ok",
                        columns["StageDetail"],
                        1,
                        message.correlation_id,
                    )
                ],
            )
            return (None if kept else completed_at), columns, transcript_status, transcript_uri

        written = self._db.run_in_transaction(work)
        if written is None:
            return {"outcome": "superseded", "analyzed_at": message.analyzed_at.isoformat()}
        if written[0] is None:
            return {"outcome": "kept_analysis", "reason": message.analysis_reason}
        completed_at, columns, transcript_status, transcript_uri = written

        analysis = message.result.analysis if message.result else None
        links = {"api": f"/api/v1/requests/{message.call_id}"}
        if message.recording_uri:
            links["recording"] = message.recording_uri
        if transcript_uri:
            links["transcript"] = transcript_uri
        completed = CallCompleted(
            tenant_id=message.tenant_id,
            office_id=message.office_id,
            call_id=message.call_id,
            correlation_id=message.correlation_id,
            completed_at=completed_at,
            transcript_status=transcript_status,
            analysis_status=message.analysis_status,
            lead_score=analysis.lead_score if analysis else None,
            intent=analysis.intent if analysis else None,
            is_spam=columns["IsSpam"],
            links=links,
        )
        try:
            self._publisher.publish(self._output_topic, completed.to_data(), completed.attributes())
        except PublishFailed as error:
            # The results are stored, but the call is not complete until the event is out:
            # the stage must not read "ok", or a dead letter after the last attempt would
            # be taken for a redelivery of finished work and not recorded.
            SpannerProgress(self._db).count_attempt(
                message.tenant_id,
                message.call_id,
                Stage.PERSIST,
                f"call.completed not published: {error}",
            )
            raise
        return {
            "outcome": "persisted",
            "lead_score": completed.lead_score,
            "intent": completed.intent,
        }
