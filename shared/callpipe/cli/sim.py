"""``callpipe sim``: the CallRail API v3 simulator and its demo calls.

The commands themselves live in ``callpipe.simulator.commands`` so that
``python -m callpipe.simulator`` runs the same code without importing the operator CLI.
"""

from __future__ import annotations

import typer

from callpipe.simulator.commands import build_demo, serve

app = typer.Typer(
    rich_markup_mode="markdown",
    help="A local CallRail API v3 simulator (calls, recordings, rate limits, faults).",
    no_args_is_help=True,
)
app.command("serve")(serve)
app.command("build-demo")(build_demo)
