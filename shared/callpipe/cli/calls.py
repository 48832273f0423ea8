"""``callpipe calls show`` and ``callpipe status``: where every call is, what is stuck."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import typer

from callpipe.cli.common import fail, info, moment_option, print_json, settings
from callpipe.operations import find_calls, status_report

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Look up calls: every stage with its status, attempts and detail.",
    no_args_is_help=True,
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


@app.command("rerun")
def rerun(
    call_id: Annotated[
        str | None, typer.Argument(help="The call to run again (CAL…); or use --failed.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's calls.")] = None,
    failed: Annotated[
        bool,
        typer.Option(
            "--failed", help="Every call whose transcription or analysis failed, since --since."
        ),
    ] = False,
    since: Annotated[
        str, typer.Option(help="With --failed: an age (90m, 24h, 7d), a date or an ISO time.")
    ] = "24h",
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="With --failed: at most this many, newest first.")
    ] = 100,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the calls, run nothing again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per call.")] = False,
) -> None:
    """Run calls through transcription and analysis again (failed ones, or one to redo).

    For calls stored without a transcript or an analysis after Speech-to-Text or Vertex AI
    refused them or stayed down (such calls are not dead-lettered), or to analyse a call
    again. A transcript stored next to the recording is reused; the newest analysis is
    kept."""
    from callpipe.publishing import PublishFailed
    from callpipe.rerun import (
        Planned,
        Rerun,
        announce_again,
        failed_calls,
        gcs_object_exists,
        plan,
        stored_calls,
    )
    from callpipe.wiring import build_publisher

    if (call_id is None) == (not failed):
        fail("name one call, or pass --failed (not both)")
    database = _database()
    if call_id is not None:
        calls = stored_calls(database, call_id, tenant)
        if not calls:
            fail(f"no call {call_id}" + (f" for tenant {tenant}" if tenant else ""))
        if len(calls) > 1:
            tenants = ", ".join(sorted(c.tenant_id for c in calls))
            fail(f"call {call_id} is stored for several tenants ({tenants}): pass --tenant")
    else:
        start = moment_option(since, "--since")
        calls = failed_calls(database, start, tenant, limit)
    config = settings()
    planned = plan(calls, gcs_object_exists())
    shown: list[dict[str, Any]] = []

    def say(item: Planned, result: Rerun | None) -> None:
        call = item.call
        how = item.left_alone or (
            "from its recording" if item.from_recording else "without a recording"
        )
        entry = {
            "tenant_id": call.tenant_id,
            "call_id": call.call_id,
            "failure": call.failure,
            "run_again": item.left_alone is None,
            "how": how,
            "correlation_id": result.correlation_id if result else None,
        }
        if as_json:
            shown.append(entry)
            return
        verb = "left alone" if item.left_alone else ("run again" if result else "to run again")
        done = f", correlation id {result.correlation_id}" if result else ""
        typer.echo(f"{call.call_id} of {call.tenant_id}: {call.failure}; {verb}: {how}{done}")

    runnable = sum(item.left_alone is None for item in planned)
    publisher = None if dry_run else build_publisher(config)
    announced = 0
    stopped: str | None = None
    try:
        for item in planned:
            if publisher is None or item.left_alone is not None:
                say(item, None)
                continue
            say(item, announce_again(item, publisher, config.recordings_topic))
            announced += 1
    except PublishFailed as error:
        stopped = f"{error} (after {announced} of {runnable} calls); run it again to go on"
    if as_json:
        print_json(shown)  # what was done, also when Pub/Sub stopped it
    if stopped is not None:
        fail(stopped)
    if publisher is None:
        info(f"{runnable} of {len(planned)} calls to run again (dry run)")
        return
    info(
        f"{announced} of {len(planned)} calls announced on {config.recordings_topic}; "
        "follow one with `callpipe calls show CALL_ID`"
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
