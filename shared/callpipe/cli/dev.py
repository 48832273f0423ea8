"""``callpipe dev``: the local stack."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run the whole pipeline locally on the emulators.",
    no_args_is_help=True,
)


@app.command("up")
def up(
    demo: Annotated[bool, typer.Option(help="Seed the demo tenant and send a demo call.")] = True,
    exit_after_demo: Annotated[
        bool, typer.Option(help="Stop everything after the demo instead of serving.")
    ] = False,
) -> None:
    """Start the emulators, provision, serve every function, send a demo call; Ctrl-C stops all."""
    from callpipe.devstack.run import run_local_stack

    raise typer.Exit(run_local_stack(demo=demo, exit_after_demo=exit_after_demo))
