"""The analyze step: turn a transcript (or what is known of a call without one) into a
CallAnalysis. When analysis fails for good, the call still goes on to persist with its
transcript and an analysis status that says why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from callpipe.analysis import AnalysisFailed, Analyzer, CallContext
from callpipe.messages import CallAnalyzed, CallTranscribed
from callpipe.progress import (
    Progress,
    Stage,
    StageStatus,
    count_failed_attempt,
    record_and_hand_on,
)
from callpipe.publishing import Publisher


class ContextSource(Protocol):
    def context_for(self, tenant_id: str, call_id: str) -> CallContext: ...


class SpannerCallContext:
    """What the pipeline already knows of the call (no names or phone numbers)."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def context_for(self, tenant_id: str, call_id: str) -> CallContext:
        from google.cloud.spanner_v1 import param_types

        with self._db.snapshot() as snapshot:
            rows = list(
                snapshot.execute_sql(
                    "SELECT c.Direction, c.Answered, c.Voicemail, c.DurationSeconds, c.CallRailSpam, "
                    "c.CallRailCall, c.Webhook, t.Name FROM Calls c JOIN Tenants t ON t.TenantId = c.TenantId "
                    "WHERE c.TenantId = @t AND c.CallId = @c",
                    params={"t": tenant_id, "c": call_id},
                    param_types={"t": param_types.STRING, "c": param_types.STRING},
                )
            )
        if not rows:
            return CallContext()
        direction, answered, voicemail, duration, spam, api_call, webhook, business = rows[0]
        known: dict[str, Any] = {**_as_dict(webhook), **_as_dict(api_call)}
        return CallContext(
            direction=direction,
            answered=answered,
            voicemail=voicemail,
            duration_seconds=duration,
            first_call=_loose_bool(known.get("first_call")),
            callrail_spam=spam,
            source=known.get("source") or known.get("source_name"),
            customer_state=known.get("customer_state"),
            business_name=business,
        )


def _loose_bool(value: Any) -> bool | None:
    """CallRail sends booleans as JSON booleans or as "true"/"false"."""
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        return dict(value)
    except (TypeError, ValueError):
        return {}


# how the stage's detail starts when the analysis had a transcript (CallTranscribed.status)
_WITH_TRANSCRIPT = "transcribed"


class AnalyzeCall:
    def __init__(
        self,
        analyzer: Callable[[], Analyzer],
        contexts: ContextSource,
        progress: Progress,
        publisher: Publisher,
        output_topic: str,
        max_attempts: int = 4,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._analyzer = analyzer
        self._contexts = contexts
        self._progress = progress
        self._publisher = publisher
        self._output_topic = output_topic
        self._max_attempts = max_attempts
        self._clock = clock

    def __call__(self, message: CallTranscribed) -> dict[str, Any]:
        done = self._progress.done_detail(
            message.tenant_id, message.call_id, Stage.ANALYZE, message.correlation_id
        )
        # Recorded only once its result was published: this is a redelivery (a lost
        # acknowledgement) or a replay of finished work. Analyzing again would pay for the
        # model again and could hand persist a different, or failed, answer. Unless this
        # message has the transcript the analysis lacked: two deliveries of one recording's
        # notification, one that gave up on the transcription and one that did not.
        if done is not None:
            if not (
                message.status == _WITH_TRANSCRIPT and not done.startswith(f"{_WITH_TRANSCRIPT}:")
            ):
                return {"outcome": "already_analyzed"}
            # Analyzed again: the stage is open until this run hands its result on, so that
            # a dead letter of this message is recorded rather than taken for finished work.
            self._progress.count_attempt(
                message.tenant_id,
                message.call_id,
                Stage.ANALYZE,
                "analyzing again: the transcript arrived after an analysis without it",
            )
        context = self._contexts.context_for(message.tenant_id, message.call_id)
        base = {
            "tenant_id": message.tenant_id,
            "office_id": message.office_id,
            "call_id": message.call_id,
            "correlation_id": message.correlation_id,
            "transcript_status": message.status,
            "transcript_reason": message.reason,
            "recording_uri": message.recording_uri,
            "transcript_uri": message.transcript_uri,
            "transcript": message.transcript,
        }
        try:
            result = self._analyzer().analyze(message.transcript, context)
        except AnalysisFailed as error:
            detail = str(error)[:2000]
            if not error.permanent:
                attempts = count_failed_attempt(
                    self._progress, message.tenant_id, message.call_id, Stage.ANALYZE, detail
                )
                if attempts < self._max_attempts:
                    raise
                detail = f"{detail} (gave up after {attempts} attempts)"
            failed = CallAnalyzed(
                **base, analysis_status="failed", analysis_reason=detail, analyzed_at=self._clock()
            )
            self._hand_on(failed, StageStatus.FAILED, detail)
            return {"outcome": "analysis_failed", "detail": detail}

        analysis = result.analysis
        analyzed = CallAnalyzed(
            **base, analysis_status="analyzed", result=result, analyzed_at=self._clock()
        )
        self._hand_on(
            analyzed,
            StageStatus.OK,
            f"{message.status}: {result.engine} {result.model}: {analysis.intent}, "
            f"lead score {analysis.lead_score}",
        )
        return {
            "outcome": "analyzed",
            "engine": result.engine,
            "intent": analysis.intent,
            "lead_score": analysis.lead_score,
            "spam_likelihood": analysis.spam_likelihood,
        }

    def _hand_on(self, message: CallAnalyzed, status: StageStatus, detail: str) -> None:
        record_and_hand_on(
            self._progress,
            self._publisher,
            self._output_topic,
            message,
            Stage.ANALYZE,
            status,
            detail,
        )
