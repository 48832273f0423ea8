"""`callpipe calls rerun` on the running functions: calls whose analysis failed for good
(stored without it, not dead-lettered) are announced again, go through transcribe (the
stored transcript reused) and analyze, and end analysed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from callpipe.devstack.stack import LocalStack
from tests.conftest import Tenant
from tests.integration.test_cli_and_stack import run_cli
from tests.integration.test_fetch_and_download import add_call, send, wait_for


def analysis_of(database: Any, tenant: Tenant, call_id: str) -> dict[str, Any]:
    from google.cloud.spanner_v1 import param_types

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT Stage, StageStatus, TranscriptStatus, AnalysisStatus, LeadScore, "
                "RecordingUri FROM Calls WHERE TenantId = @t AND CallId = @c",
                params={"t": tenant.tenant_id, "c": call_id},
                param_types={"t": param_types.STRING, "c": param_types.STRING},
            )
        )
    if not rows:
        return {}
    keys = ("stage", "status", "transcript", "analysis", "lead_score", "recording")
    return dict(zip(keys, rows[0], strict=True))


def refused_by_vertex_ai(database: Any, tenant: Tenant, call_id: str) -> None:
    """The row as persist leaves it when the analysis failed for good."""

    def work(txn: Any) -> None:
        columns = ["TenantId", "CallId", "AnalysisStatus", "AnalysisReason", "Analysis"]
        columns += ["Intent", "LeadScore"]
        values = (tenant.tenant_id, call_id, "failed", "403 PERMISSION_DENIED", None, None, None)
        txn.update("Calls", columns, [values])

    database.run_in_transaction(work)


def test_calls_whose_analysis_failed_are_run_again_and_end_analysed(
    functions_running: LocalStack, make_tenant: Callable[..., Tenant], database: Any
) -> None:
    stack = functions_running
    tenant = make_tenant()
    recorded, missed = add_call(stack, tenant, "kitchen"), add_call(stack, tenant, "missed")
    for call in (recorded, missed):
        send(stack, tenant, call)

    def analysed(call_id: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            row = analysis_of(database, tenant, call_id)
            done = row.get("stage") == "persist" and row.get("analysis") == "analyzed"
            return row if done else None

        return check

    first = {c["id"]: wait_for(analysed(c["id"]), 240, "the call") for c in (recorded, missed)}
    assert first[recorded["id"]]["recording"] and not first[missed["id"]]["recording"]
    for call in (recorded, missed):
        refused_by_vertex_ai(database, tenant, call["id"])

    def rerun(*options: str) -> list[dict[str, Any]]:
        ran = run_cli(
            "calls", "rerun", "--failed", "--tenant", tenant.tenant_id, "--json", *options
        )
        assert ran.returncode == 0, ran.stderr
        result: list[dict[str, Any]] = json.loads(ran.stdout)
        return result

    listed = rerun("--dry-run")
    assert {(r["call_id"], r["failure"]) for r in listed} == {
        (recorded["id"], "analysis failed"),
        (missed["id"], "analysis failed"),
    }
    assert analysis_of(database, tenant, recorded["id"])["analysis"] == "failed"  # dry run

    announced = {r["call_id"]: r for r in rerun()}
    assert announced[recorded["id"]]["how"] == "from its recording"  # it is in the bucket
    assert announced[missed["id"]]["how"] == "without a recording"
    assert all(r["run_again"] and r["correlation_id"] for r in announced.values())
    for call in (recorded, missed):
        row = wait_for(analysed(call["id"]), 240, "the call to be analysed again")
        assert row["lead_score"] == first[call["id"]]["lead_score"]  # the same rules, again
    assert analysis_of(database, tenant, recorded["id"])["transcript"] == "transcribed"
    assert rerun("--dry-run") == []  # nothing failed any more

    one = run_cli("calls", "rerun", recorded["id"], "--failed")
    assert one.returncode == 1 and "not both" in one.stderr
    unknown = run_cli("calls", "rerun", "CALnope")
    assert unknown.returncode == 1 and "no call CALnope" in unknown.stderr
