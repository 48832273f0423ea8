"""``callpipe reconcile``: queue the calls CallRail has and the pipeline never received."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from callpipe.callrail.client import CallRailError
from callpipe.cli.common import fail, info, moment_option, print_json, settings
from callpipe.publishing import PublishFailed
from callpipe.ratelimit import RateLimited
from callpipe.reconcile import OUTCOMES, ReconcileError


def reconcile(
    tenant_id: Annotated[str, typer.Argument(help="The tenant whose calls to check.")],
    since: Annotated[
        str | None,
        typer.Option(
            help="First day (YYYY-MM-DD, a UTC day) or time (ISO 8601); default "
            "RECONCILE_LOOKBACK_HOURS (48) ago."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day or time, inclusive; default now.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the missing calls, queue nothing.")
    ] = False,
    settle_minutes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Leave calls that ended less than this long ago alone: their Post-Call may "
            "still come. Default RECONCILE_SETTLE_MINUTES (30).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=0, help="Queue at most this many calls; list the rest as missing."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per call.")] = False,
) -> None:
    """Queue the tenant's calls that CallRail has and the pipeline missed (lost webhooks).

    Lists the tenant's calls from the CallRail API and queues each one the pipeline has no
    row of, as its Post-Call would have been (CallRail never sends a failed webhook again).
    Safe to run again: a call is queued under its Post-Call's event key, so it enters the
    pipeline once."""
    from callpipe.cli.tenants import _repository
    from callpipe.pipeline_wiring import build_reconciler
    from callpipe.wiring import build_publisher

    config = settings()
    lookback = timedelta(hours=config.reconcile_lookback_hours)
    start = moment_option(since, "--since") if since else datetime.now(UTC) - lookback
    end = moment_option(until, "--until", end_of_day=True) if until else None
    settle = config.reconcile_settle_minutes if settle_minutes is None else settle_minutes
    reconciler = build_reconciler(
        config, _repository().database, build_publisher(config), timedelta(minutes=settle)
    )
    counts: Counter[str] = Counter()
    try:
        for result in reconciler.run(tenant_id, start, end, dry_run=dry_run, limit=limit):
            counts[result.outcome] += 1
            if as_json:
                print_json(asdict(result))
            elif result.outcome in ("missing", "queued"):
                typer.echo(f"{result.outcome:8} {result.call_id}  started {result.started}")
    except ReconcileError as error:
        fail(str(error))
    except (CallRailError, PublishFailed, RateLimited) as error:
        # nothing is queued twice, so running it again later finishes the job
        fail(
            f"{error} (after {sum(counts.values())} calls: {_summary(counts)}); "
            "run it again later to go on"
        )
    total = sum(counts.values())
    info(f"{total} call{'' if total == 1 else 's'} since {start.isoformat()}: {_summary(counts)}")


def _summary(counts: Counter[str]) -> str:
    return ", ".join(
        f"{counts[key]} {key.replace('_', ' ')}" for key in OUTCOMES if counts[key]
    ) or ("none")
