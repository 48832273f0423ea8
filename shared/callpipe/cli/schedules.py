"""``callpipe schedules``: the topology's scheduled messages (Cloud Scheduler jobs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from callpipe.cli.common import fail, print_json, settings

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The scheduled messages of schemas/pipeline.yaml (Cloud Scheduler jobs in production, "
    "run by `make run` locally).",
    no_args_is_help=True,
)


@app.command("list")
def list_schedules(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each schedule: its unix-cron expression, time zone, topic and next run."""
    from callpipe.schedules import next_run
    from callpipe.topology import load_topology

    now = datetime.now(UTC)
    rows = [
        {**spec.model_dump(), "name": name, "next_run": next_run(spec, now).isoformat()}
        for name, spec in load_topology().schedules.items()
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        typer.echo(
            f"{row['name']:<12} {row['cron']:<16} {row['time_zone']:<10} → {row['topic']}  "
            f"next {row['next_run']}"
        )
        typer.echo(f"{'':<12} {row['description']}")


@app.command("run")
def run_schedule(
    name: Annotated[str, typer.Argument(help="The schedule to run now (see `schedules list`).")],
) -> None:
    """Publish the schedule's message now, as its job would.

    In production, `gcloud scheduler jobs run` does the same."""
    from callpipe.schedules import scheduled_message
    from callpipe.topology import load_topology
    from callpipe.wiring import build_publisher

    try:
        message = scheduled_message(load_topology(), name)
    except LookupError as error:
        fail(str(error).strip("'\""))
    message_id = build_publisher(settings()).publish(
        message.topic, message.data, message.attributes
    )
    typer.echo(f"published to {message.topic} (message {message_id})")
