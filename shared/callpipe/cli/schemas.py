"""``callpipe schemas``: generate and check the JSON Schemas of the pipeline messages."""

from __future__ import annotations

import typer

from callpipe.schema_gen import MESSAGES_DIR, stale_schemas, write_schemas

app = typer.Typer(
    rich_markup_mode="markdown",
    help="JSON Schemas of the Pub/Sub messages, generated from the models.",
    no_args_is_help=True,
)


@app.command("generate")
def generate() -> None:
    """Write schemas/messages/*.schema.json from the pydantic models."""
    for path in write_schemas():
        typer.echo(f"wrote {path.relative_to(MESSAGES_DIR.parents[1])}")


@app.command("check")
def check() -> None:
    """Fail when schemas/messages is out of date with the models."""
    stale = stale_schemas()
    if stale:
        typer.secho(f"stale: {', '.join(stale)}; run `make schemas`", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo("schemas/messages is up to date")
