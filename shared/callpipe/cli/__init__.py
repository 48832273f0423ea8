"""The operator CLI, ``callpipe``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from callpipe.cli import (
    analyze,
    calls,
    deploy,
    dev,
    ops,
    reconcile,
    schedules,
    schemas,
    sim,
    tenants,
    tokens,
    transcribe,
    webhooks,
)
from callpipe.cli.common import cloud_error_message

app = typer.Typer(
    rich_markup_mode="markdown",
    help=(
        "Operate the CallRail call pipeline: onboard tenants, sign and send webhooks, "
        "replay quarantined and dead-lettered messages, run the local stack."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tenants.app, name="tenants")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(ops.quarantine_app, name="quarantine")
app.add_typer(ops.dlq_app, name="dlq")
app.command("reconcile")(reconcile.reconcile)
app.add_typer(schedules.app, name="schedules")
app.add_typer(schemas.app, name="schemas")
app.add_typer(dev.app, name="dev")
app.command("transcribe")(transcribe.transcribe)
app.command("analyze")(analyze.analyze)
app.add_typer(calls.app, name="calls")
app.add_typer(tokens.app, name="tokens")
app.command("status")(calls.status)
app.add_typer(deploy.app, name="deploy")
app.add_typer(sim.app, name="sim")


def load_stack_env(path: Path | None = None) -> None:
    """Point the CLI at a running local stack (``make run`` writes ``stack.env`` in its
    state folder: ``CALLPIPE_STATE_DIR``, or ``.local``).

    Variables already set in the environment win, and production never reads it.
    """
    if path is None:
        path = Path(os.environ.get("CALLPIPE_STATE_DIR") or ".local") / "stack.env"
    if os.environ.get("ENVIRONMENT") == "production" or not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key not in os.environ:
            os.environ[key] = value


def main() -> None:
    load_stack_env()
    try:
        app()
    except Exception as error:
        # A refused or failed Google Cloud call is the operator's to act on, not a bug:
        # one line instead of a traceback, whichever command made it.
        message = cloud_error_message(error)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(1)
