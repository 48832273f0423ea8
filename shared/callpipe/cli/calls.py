"""``callpipe calls show`` and ``callpipe status``: where every call is, what is stuck."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import typer

from callpipe.cli.common import fail, print_json
from callpipe.operations import find_calls, status_report

app = typer.Typer(
    help="Look up calls: every stage with its status, attempts and detail.", no_args_is_help=True
)


def _database() -> Any:
    from callpipe.cli.tenants import _repository

    return _repository().database


@app.command("show")
def show(
    call_id: Annotated[str, typer.Argument(help="The CallRail call id (CAL…).")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's call.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a call's stages: status, attempts, detail and when each last changed."""
    views = find_calls(_database(), call_id, tenant)
    if not views:
        fail(f"no call {call_id}" + (f" for tenant {tenant}" if tenant else ""))
    if as_json:
        print_json([asdict(v) for v in views])
        return
    for view in views:
        typer.echo(
            f"call {view.call_id} of tenant {view.tenant_id}: {view.stage}/{view.status}, "
            f"received {view.received_at}, updated {view.updated_at}"
        )
        typer.echo(
            f"  recording {view.recording_status or '-'}, transcript {view.transcript_status or '-'}, "
            f"analysis {view.analysis_status or '-'}, lead score {view.lead_score or '-'}, "
            f"intent {view.intent or '-'}"
        )
        for stage in view.stages:
            typer.echo(
                f"  {stage.stage:<11} {stage.status:<14} attempts {stage.attempts}  "
                f"{stage.updated_at}  {stage.detail or ''}"
            )


def status(
    stuck_minutes: Annotated[
        int, typer.Option(help="A call not complete after this long counts as stuck.")
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Counts of calls per stage and tenant, and the calls that are stuck or failing."""
    report = status_report(_database(), timedelta(minutes=stuck_minutes))
    if as_json:
        print_json(
            {
                "by_stage": report.by_stage,
                "stuck_total": report.stuck_total,
                "stuck": [asdict(v) for v in report.stuck],
            }
        )
        return
    if not report.by_stage:
        typer.echo("no calls yet")
    for tenant, counts in sorted(report.by_stage.items()):
        total = sum(counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        typer.echo(f"{tenant:<20} {total:>6} calls: {parts}")
    if report.stuck:
        shown = (
            ""
            if len(report.stuck) == report.stuck_total
            else f" (the {len(report.stuck)} most recent shown)"
        )
        typer.echo(f"\n{report.stuck_total} call(s) stuck or failing{shown}:")
        for view in report.stuck:
            last = view.stages[-1] if view.stages else None
            detail = f"{last.detail}" if last and last.detail else ""
            typer.echo(
                f"  {view.tenant_id:<16} {view.call_id:<36} {view.stage}/{view.status} "
                f"since {view.updated_at}  {detail[:120]}"
            )
        typer.echo(
            "\nsee one with `callpipe calls show CALL_ID`; replay a step's dead letters with "
            "`callpipe dlq replay TOPIC`"
        )
    else:
        typer.echo("\nnothing stuck")
    # a message dead-lettered before its call had a row (register-call, reconcile) is only
    # in its hold
    typer.echo("dead letters without a call row: `callpipe dlq list TOPIC`")
