"""Where every call is: the queries behind `callpipe calls show` and `callpipe status`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TERMINAL_STAGE = "persist"
TROUBLE = ("retrying", "failed", "dead_lettered")
STUCK_SHOWN = 200


@dataclass
class StageRow:
    stage: str
    status: str
    attempts: int
    detail: str | None
    updated_at: datetime | None


@dataclass
class CallView:
    tenant_id: str
    call_id: str
    stage: str
    status: str
    received_at: datetime | None
    updated_at: datetime | None
    recording_status: str | None
    transcript_status: str | None
    analysis_status: str | None
    lead_score: int | None
    intent: str | None
    stages: list[StageRow] = field(default_factory=list)


@dataclass
class StatusReport:
    by_stage: dict[str, dict[str, int]]  # tenant -> "stage/status" -> count
    stuck: list[CallView]  # the most recently updated first, at most STUCK_SHOWN
    stuck_total: int = 0  # all of them


@dataclass(frozen=True)
class CallLookup:
    """How to read a call by its id, in one tenant or in every tenant that has one: the
    index hint after ``Calls``, the condition on ``c``, and their bound values."""

    hint: str
    where: str
    params: dict[str, Any]
    types: dict[str, Any]

    @staticmethod
    def of(call_id: str, tenant_id: str | None = None) -> CallLookup:
        from google.cloud.spanner_v1 import param_types

        params: dict[str, Any] = {"c": call_id}
        types: dict[str, Any] = {"c": param_types.STRING}
        if tenant_id:
            params["t"], types["t"] = tenant_id, param_types.STRING
            return CallLookup("", "c.CallId = @c AND c.TenantId = @t", params, types)
        # without the tenant, the key cannot find the call: the CallId index does
        return CallLookup("@{FORCE_INDEX=CallsByCallId}", "c.CallId = @c", params, types)


def find_calls(database: Any, call_id: str, tenant_id: str | None = None) -> list[CallView]:
    lookup = CallLookup.of(call_id, tenant_id)
    hint, where = lookup.hint, lookup.where
    sql = f"""
        SELECT c.TenantId, c.CallId, c.Stage, c.StageStatus, c.ReceivedAt, c.UpdatedAt,
               c.RecordingStatus, c.TranscriptStatus, c.AnalysisStatus, c.LeadScore, c.Intent,
               ARRAY(SELECT AS STRUCT s.Stage, s.Status, s.Attempts, s.Detail, s.UpdatedAt
                     FROM CallStages s WHERE s.TenantId = c.TenantId AND s.CallId = c.CallId
                     ORDER BY s.UpdatedAt) AS Stages
        FROM Calls{hint} c WHERE {where}
    """  # noqa: S608 - the only interpolations are fixed clauses
    with database.snapshot() as snapshot:
        rows = list(snapshot.execute_sql(sql, params=lookup.params, param_types=lookup.types))
    return [_view(row) for row in rows]


def status_report(
    database: Any, stuck_after: timedelta, now: datetime | None = None, shown: int = STUCK_SHOWN
) -> StatusReport:
    from google.cloud.spanner_v1 import param_types

    current = now or datetime.now(UTC)
    with database.snapshot(multi_use=True) as snapshot:
        counts = list(
            snapshot.execute_sql(
                "SELECT TenantId, Stage, StageStatus, COUNT(*) FROM Calls GROUP BY TenantId, Stage, StageStatus"
            )
        )
        where = (
            "c.StageStatus IN UNNEST(@trouble) OR (c.Stage != @terminal AND c.UpdatedAt < @cutoff)"
        )
        params = {
            "trouble": list(TROUBLE),
            "terminal": TERMINAL_STAGE,
            "cutoff": current - stuck_after,
        }
        types = {
            "trouble": param_types.Array(param_types.STRING),
            "terminal": param_types.STRING,
            "cutoff": param_types.TIMESTAMP,
        }
        # newest first: old dead letters stay until replayed, and must not hide new failures
        stuck_rows = list(
            snapshot.execute_sql(
                f"""
            SELECT c.TenantId, c.CallId, c.Stage, c.StageStatus, c.ReceivedAt, c.UpdatedAt,
                   c.RecordingStatus, c.TranscriptStatus, c.AnalysisStatus, c.LeadScore, c.Intent,
                   ARRAY(SELECT AS STRUCT s.Stage, s.Status, s.Attempts, s.Detail, s.UpdatedAt
                         FROM CallStages s WHERE s.TenantId = c.TenantId AND s.CallId = c.CallId
                         ORDER BY s.UpdatedAt) AS Stages
            FROM Calls c WHERE {where}
            ORDER BY c.UpdatedAt DESC, c.CallId LIMIT {int(shown)}
            """,  # noqa: S608 - fixed clauses only
                params=params,
                param_types=types,
            )
        )
        [(stuck_total,)] = list(
            snapshot.execute_sql(
                f"SELECT COUNT(*) FROM Calls c WHERE {where}",  # noqa: S608 - a fixed clause
                params=params,
                param_types=types,
            )
        )
    by_stage: dict[str, dict[str, int]] = {}
    for tenant, stage, status, count in counts:
        by_stage.setdefault(tenant, {})[f"{stage}/{status}"] = int(count)
    return StatusReport(
        by_stage=by_stage, stuck=[_view(row) for row in stuck_rows], stuck_total=int(stuck_total)
    )


def _view(row: Any) -> CallView:
    (
        tenant,
        call,
        stage,
        status,
        received,
        updated,
        recording,
        transcript,
        analysis,
        score,
        intent,
        stages,
    ) = row
    return CallView(
        tenant_id=tenant,
        call_id=call,
        stage=stage,
        status=status,
        received_at=received,
        updated_at=updated,
        recording_status=recording,
        transcript_status=transcript,
        analysis_status=analysis,
        lead_score=score,
        intent=intent,
        stages=[StageRow(s[0], s[1], int(s[2]), s[3], s[4]) for s in stages],
    )
