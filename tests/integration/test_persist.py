"""persist on the Spanner emulator: idempotent blind writes, Call Modified updates, and the
whole pipeline ending with the call stored complete and a call.completed event."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from callpipe.analysis import AnalysisResult, CallAnalysis
from callpipe.devstack.stack import LocalStack
from callpipe.messages import CallAnalyzed, CallCompleted
from callpipe.persisting import PersistCall
from callpipe.transcripts import Transcript, TranscriptSegment
from tests.conftest import Tap, Tenant, post_call_body, register_in_spanner
from tests.functional.test_register_call_function import received
from tests.integration.test_fetch_and_download import add_call, send, wait_for
from tests.unit.doubles import Publisher

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def analyzed(tenant: Tenant, call_id: str) -> CallAnalyzed:
    transcript = Transcript(
        segments=[
            TranscriptSegment(
                speaker="caller", start=0, end=3, text="I need a new roof before winter."
            )
        ],
        text="caller: I need a new roof before winter.",
        language="en-US",
        audio_duration_seconds=3,
        engine="faster-whisper",
        model="tiny.en",
        diarization="none",
        speaker_count=1,
    )
    analysis = CallAnalysis(
        intent="quote_request",
        project_type="roofing",
        timeline="within_1_month",
        budget_indicator="unknown",
        sentiment="neutral",
        urgency="medium",
        lead_score=72,
        appointment_requested=False,
        follow_up_required=True,
        key_details=["new roof"],
        spam_likelihood=0.0,
        spam_reasons=[],
        summary="Roof quote before winter.",
    )
    return CallAnalyzed(
        tenant_id=tenant.tenant_id,
        office_id="main",
        call_id=call_id,
        correlation_id="c0ffee",
        transcript_status="transcribed",
        transcript=transcript,
        analysis_status="analyzed",
        result=AnalysisResult(analysis=analysis, engine="rules", model="callpipe-rules-1"),
        analyzed_at=NOW,
    )


def failed_later(good: CallAnalyzed, reason: str, **changes: Any) -> CallAnalyzed:
    """The same call analyzed again five minutes later, and failed."""
    return good.model_copy(
        update={
            "analysis_status": "failed",
            "analysis_reason": reason,
            "result": None,
            "analyzed_at": NOW + timedelta(minutes=5),
            **changes,
        }
    )


def stage_of(database: Any, tenant: Tenant, call_id: str) -> str | None:
    from google.cloud.spanner_v1 import param_types

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT Stage FROM Calls WHERE TenantId = @t AND CallId = @c",
                params={"t": tenant.tenant_id, "c": call_id},
                param_types={"t": param_types.STRING, "c": param_types.STRING},
            )
        )
    return rows[0][0] if rows else None


def row(database: Any, tenant: Tenant, call_id: str) -> dict[str, Any]:
    from google.cloud.spanner_v1 import param_types

    columns = [
        "Stage",
        "StageStatus",
        "LeadScore",
        "Intent",
        "ProjectType",
        "IsSpam",
        "TranscriptText",
        "TranscriptSegments",
        "Analysis",
        "AnalysisEngine",
        "CompletedAt",
        "StageDetail",
        "CallRailCall",
    ]
    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                f"SELECT {', '.join(columns)} FROM Calls WHERE TenantId = @t AND CallId = @c",  # noqa: S608
                params={"t": tenant.tenant_id, "c": call_id},
                param_types={"t": param_types.STRING, "c": param_types.STRING},
            )
        )
    assert len(rows) == 1
    return dict(zip(columns, rows[0], strict=True))


def registered_call(make_tenant: Callable[..., Tenant], database: Any) -> tuple[Tenant, str]:
    """A new tenant with one call registered (its Calls row), as register-call leaves it."""
    tenant = make_tenant()
    body = post_call_body(tenant)
    register_in_spanner(database, received(tenant, body), json.loads(body))
    return tenant, json.loads(body)["resource_id"]


def test_persisting_the_same_message_three_times_leaves_one_identical_row(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    tenant, call_id = registered_call(make_tenant, database)
    publisher = Publisher()
    ticks = iter(NOW + timedelta(minutes=i) for i in range(10))
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: next(ticks))
    snapshots = []
    for _ in range(3):
        step(analyzed(tenant, call_id))
        snapshots.append(row(database, tenant, call_id))
    assert snapshots[0] == snapshots[1] == snapshots[2]  # CompletedAt included: the first
    assert len({CallCompleted.from_data(data).completed_at for _, data, _ in publisher.sent}) == 1
    stored = snapshots[0]
    assert (stored["Stage"], stored["StageStatus"]) == ("persist", "ok")
    assert (
        stored["LeadScore"] == 72
        and stored["Intent"] == "quote_request"
        and stored["IsSpam"] is False
    )
    assert stored["TranscriptText"] == "caller: I need a new roof before winter."
    assert stored["Analysis"]["project_type"] == "roofing"
    completed = CallCompleted.from_data(publisher.sent[0][1])
    assert completed.lead_score == 72 and completed.links["api"] == f"/api/v1/requests/{call_id}"


def test_an_analysis_older_than_the_stored_one_changes_nothing(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """A late redelivery or a replayed old dead letter must not undo a newer result."""
    tenant, call_id = registered_call(make_tenant, database)
    older = analyzed(tenant, call_id)
    assert older.result is not None
    rescored = older.result.analysis.model_copy(update={"lead_score": 90})
    newer = older.model_copy(
        update={
            "analyzed_at": NOW + timedelta(hours=1),
            "result": older.result.model_copy(update={"analysis": rescored}),
        }
    )
    publisher = Publisher()
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: NOW)
    step(newer)
    stored = row(database, tenant, call_id)

    assert step(older)["outcome"] == "superseded"
    assert row(database, tenant, call_id) == stored and stored["LeadScore"] == 90
    assert len(publisher.sent) == 1  # no call.completed for the stale result


def test_a_failed_analysis_never_replaces_a_stored_result(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """A later analysis of the call that failed (a replay during a model outage) keeps the
    result and the completion; the call is not announced again."""
    tenant, call_id = registered_call(make_tenant, database)
    good = analyzed(tenant, call_id)
    failed = failed_later(
        good,
        "Vertex AI model unavailable after 4 attempts: HTTP 503",
        transcript=None,
        transcript_status="no_transcript",
    )
    publisher = Publisher()
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: NOW)
    step(good)
    stored = row(database, tenant, call_id)

    assert step(failed)["outcome"] == "kept_analysis"
    after = row(database, tenant, call_id)
    assert after["LeadScore"] == 72 and after["Analysis"] == stored["Analysis"]
    assert after["CompletedAt"] == stored["CompletedAt"]
    assert after["TranscriptText"] == stored["TranscriptText"]
    assert (after["Stage"], after["StageStatus"]) == ("persist", "ok")
    assert len(publisher.sent) == 1


def test_an_analysis_that_did_not_see_the_stored_transcript_never_replaces_one_that_did(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """A rerun whose transcription failed (the transcript file and the recording gone) is
    analysed from the call's metadata alone: newer, but it saw less than the stored one."""
    tenant, call_id = registered_call(make_tenant, database)
    good = analyzed(tenant, call_id)
    blind_result = good.result.model_copy(  # type: ignore[union-attr]
        update={"analysis": good.result.analysis.model_copy(update={"lead_score": 10})}  # type: ignore[union-attr]
    )
    blind = good.model_copy(
        update={
            "transcript": None,
            "transcript_status": "no_transcript",
            "transcript_reason": "transcription_failed: the recording is no longer in the bucket",
            "result": blind_result,
            "analyzed_at": NOW + timedelta(hours=1),
            "correlation_id": "rerun-1",
        }
    )
    publisher = Publisher()
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: NOW)
    step(good)
    assert step(blind)["outcome"] == "kept_analysis"
    after = row(database, tenant, call_id)
    assert after["LeadScore"] == 72 and after["TranscriptText"]
    assert "a later analysis was made without it (transcription_failed" in after["StageDetail"]
    assert len(publisher.sent) == 1  # not announced again


def test_a_result_replaces_a_failure_persisted_before_it_whatever_their_age(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """The failure reached persist first (a replayed old dead letter, a delivery held up in
    backoff): the result analyzed before it still takes its place."""
    tenant, call_id = registered_call(make_tenant, database)
    good = analyzed(tenant, call_id)
    failed = failed_later(good, "refused: finish_reason SAFETY")
    publisher = Publisher()
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: NOW)
    step(failed)
    assert row(database, tenant, call_id)["LeadScore"] is None

    assert step(good)["outcome"] == "persisted"
    assert row(database, tenant, call_id)["LeadScore"] == 72
    assert step(failed)["outcome"] == "kept_analysis"  # and the failure, again, changes nothing
    assert row(database, tenant, call_id)["LeadScore"] == 72


def test_a_message_without_the_transcript_never_erases_it(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """Two deliveries of one recording's notification: one gave up on the transcription
    (analyzed without it, earlier), the other transcribed it but its analysis failed. In
    that arrival order the result replaces the failure, and the transcript stays."""
    tenant, call_id = registered_call(make_tenant, database)
    transcript_uri = f"gs://recordings/tenants/{tenant.tenant_id}/calls/{call_id}/transcript.json"
    good = analyzed(tenant, call_id).model_copy(update={"transcript_uri": transcript_uri})
    transcribed_but_failed = failed_later(good, "refused: finish_reason SAFETY")
    without_transcript = good.model_copy(
        update={"transcript": None, "transcript_status": "no_transcript", "transcript_uri": None}
    )
    publisher = Publisher()
    step = PersistCall(database, publisher, "calls.completed", clock=lambda: NOW)
    step(transcribed_but_failed)
    assert step(without_transcript)["outcome"] == "persisted"

    stored = row(database, tenant, call_id)
    assert stored["LeadScore"] == 72
    assert stored["TranscriptText"] == "caller: I need a new roof before winter."
    assert stored["StageDetail"] == "transcript transcribed (kept), analysis analyzed"
    # and the call is announced as stored: with its transcript
    announced = CallCompleted.from_data(publisher.sent[-1][1])
    assert announced.transcript_status == "transcribed"
    assert announced.links["transcript"] == transcript_uri


def test_a_completed_call_reads_complete_again_once_a_later_events_failure_went_through(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """A Call Modified after completion is dead-lettered at fetch, then replayed: fetch and
    download succeed, and download ends the flow (the recording is stored). The call must
    not stay at 'download' (listed as stuck for ever) but read complete."""
    from callpipe.operations import status_report
    from callpipe.progress import SpannerProgress, Stage, StageStatus

    tenant, call_id = registered_call(make_tenant, database)
    PersistCall(database, Publisher(), "calls.completed", clock=lambda: NOW)(
        analyzed(tenant, call_id)
    )
    completed = row(database, tenant, call_id)
    progress = SpannerProgress(database)

    def record(stage: Stage, status: StageStatus, detail: str) -> tuple[str, str]:
        progress.record(tenant.tenant_id, call_id, stage, status, detail, "modified-1")
        stored = row(database, tenant, call_id)
        return stored["Stage"], stored["StageStatus"]

    assert record(Stage.FETCH, StageStatus.DEAD_LETTERED, "retries_exhausted") == (
        "fetch",
        "dead_lettered",
    )  # failures show
    assert record(Stage.REGISTER, StageStatus.OK, "call_modified") == ("fetch", "dead_lettered")
    assert record(Stage.FETCH, StageStatus.OK, "call_modified") == ("persist", "ok")
    assert record(Stage.DOWNLOAD, StageStatus.OK, "already stored") == ("persist", "ok")
    stored = row(database, tenant, call_id)
    assert stored["StageDetail"] == completed["StageDetail"]
    assert (stored["LeadScore"], stored["CompletedAt"]) == (72, completed["CompletedAt"])
    report = status_report(
        database, timedelta(minutes=30), now=datetime.now(UTC) + timedelta(hours=2), shown=1000
    )
    assert call_id not in {view.call_id for view in report.stuck}


def test_a_completion_not_published_leaves_the_stage_open_for_its_dead_letter(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    """Results stored but call.completed never out: the last attempt's dead letter shows."""
    import pytest

    from callpipe.progress import SpannerProgress, Stage, StageStatus
    from callpipe.publishing import PublishFailed
    from tests.unit.conftest import FailingPublisher

    tenant, call_id = registered_call(make_tenant, database)
    message = analyzed(tenant, call_id)
    step = PersistCall(database, FailingPublisher(), "calls.completed", clock=lambda: NOW)
    for _ in range(2):
        with pytest.raises(PublishFailed):
            step(message)
    assert row(database, tenant, call_id)["LeadScore"] == 72  # the results are stored

    SpannerProgress(database).record(
        tenant.tenant_id,
        call_id,
        Stage.PERSIST,
        StageStatus.DEAD_LETTERED,
        detail="retries_exhausted: attempt 5 of 5: PublishFailed",
        correlation_id=message.correlation_id,
    )
    stored = row(database, tenant, call_id)
    assert (stored["Stage"], stored["StageStatus"]) == ("persist", "dead_lettered")


def test_persisting_an_unknown_call_is_a_permanent_error(
    stack: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    import pytest

    from callpipe.steps import PermanentError

    tenant = make_tenant()
    with pytest.raises(PermanentError, match="unknown_call"):
        PersistCall(database, Publisher(), "calls.completed")(
            analyzed(tenant, "CAL" + uuid.uuid4().hex)
        )


def test_the_pipeline_ends_stored_and_a_call_modified_updates_the_same_call(
    functions_running: LocalStack,
    make_tenant: Callable[..., Tenant],
    tap: Callable[[str], Tap],
    database: Any,
) -> None:
    tenant = make_tenant()
    completed = tap("calls.completed")
    call = add_call(functions_running, tenant, "bathroom")
    send(functions_running, tenant, call)
    wait_for(
        lambda: stage_of(database, tenant, call["id"]) == "persist", timeout=240, what="persist"
    )
    stored = row(database, tenant, call["id"])
    assert stored["StageStatus"] == "ok"
    assert stored["LeadScore"] is not None and stored["TranscriptSegments"]
    events = [m for m in completed.drain(expect=1) if m.attributes.get("call_id") == call["id"]]
    assert len(events) == 1

    # CallRail changes the call (a note and a tag): the same row is updated, no second call.
    (functions_running.simulator_data_dir / "calls" / f"{call['id']}.json").write_text(
        json.dumps({**call, "note": "Customer prefers mornings", "tags": [{"name": "VIP"}]})
    )
    send(
        functions_running, tenant, call, changes=["note", "tags"], note="Customer prefers mornings"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (row(database, tenant, call["id"])["CallRailCall"] or {}).get(
            "note"
        ) == "Customer prefers mornings":
            break
        time.sleep(0.5)
    updated = row(database, tenant, call["id"])
    assert updated["CallRailCall"]["note"] == "Customer prefers mornings"
    assert updated["LeadScore"] == stored["LeadScore"]
