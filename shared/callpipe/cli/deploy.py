"""``callpipe deploy``: what cloudbuild.yaml runs to ship the pipeline.

Bundles each step's function source for Terraform to zip and upload, and brings the Spanner
schema up to schemas/spanner/schema.sql (with the steps of schemas/spanner/migrations.sql)
before new code is deployed against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from callpipe.cli.common import fail, info, settings

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Deployment: function source bundles and the Spanner schema (used by cloudbuild.yaml).",
    no_args_is_help=True,
)


@app.command("steps")
def steps(
    trigger: Annotated[
        str | None, typer.Option(help="Only steps with this trigger type (http or pubsub).")
    ] = None,
) -> None:
    """Print the topology's step names, one a line (for shell loops)."""
    from callpipe.topology import load_topology

    for name, step in load_topology().steps.items():
        if trigger is None or step.trigger.type == trigger:
            typer.echo(name)


@app.command("bundle")
def bundle(
    step: Annotated[str, typer.Argument(help="Step name from schemas/pipeline.yaml.")],
    out_dir: Annotated[Path, typer.Argument(help="Directory to write (missing or empty).")],
    replace: Annotated[
        bool, typer.Option(help="Replace an earlier bundle in OUT_DIR (only a callpipe bundle).")
    ] = False,
) -> None:
    """Write STEP's deployable source: main.py, callpipe/, schemas, requirements.txt."""
    from callpipe.deploy.bundle import BundleError, build_bundle

    try:
        result = build_bundle(step, out_dir, replace=replace)
    except BundleError as error:
        fail(str(error))
    info(f"{len(result.files)} files")
    typer.echo(f"bundled {result.step} (entry point {result.entry_point}) into {result.directory}")


@app.command("ddl")
def ddl(
    schema_file: Annotated[
        Path | None, typer.Option(help="DDL file; default schemas/spanner/schema.sql.")
    ] = None,
    migrations_file: Annotated[
        Path | None,
        typer.Option(help="Migration steps; default schemas/spanner/migrations.sql."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only print what would be applied.")] = False,
    allow_missing_database: Annotated[
        bool,
        typer.Option(help="Succeed without doing anything when the database does not exist yet."),
    ] = False,
    allow_drift: Annotated[
        bool,
        typer.Option(
            help="Succeed although existing tables or indexes differ from the schema file "
            "(new code may then fail against them)."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the schema change (index backfills).")
    ] = 1800.0,
) -> None:
    """Bring the database up to the schema file (what it lacks, then the migrations).

    Creates the tables and indexes it lacks, then runs the migration steps (ADD COLUMN,
    CREATE INDEX...) whose effect is missing.

    Targets SPANNER_INSTANCE / SPANNER_DATABASE in GOOGLE_CLOUD_PROJECT (the emulator when
    SPANNER_EMULATOR_HOST is set). Safe to run on every deploy: an up-to-date database is
    left alone. Fails when an existing object still differs from the schema file, unless
    --allow-drift.
    """
    from callpipe.deploy.ddl import (
        MIGRATIONS_FILE,
        SCHEMA_FILE,
        DatabaseNotFound,
        InvalidSchema,
        SchemaDrift,
        apply_migration,
        check_retention,
        read_migrations,
        read_schema,
    )
    from callpipe.spanner_db import open_database

    s = settings()
    schema_path = schema_file or SCHEMA_FILE
    migrations_path = migrations_file or MIGRATIONS_FILE
    if migrations_file is not None and not migrations_file.is_file():
        fail(f"{migrations_file} does not exist")
    try:
        desired = read_schema(schema_path)
        migrations = read_migrations(migrations_path)
        check_retention(desired, s.retention_days)
        migration = apply_migration(
            open_database(s),
            desired,
            migrations=migrations,
            timeout=timeout,
            dry_run=dry_run,
            allow_drift=allow_drift,
        )
    except DatabaseNotFound:
        if allow_missing_database:
            typer.echo(f"{s.spanner_database_path} does not exist yet; nothing to migrate")
            return
        fail(f"{s.spanner_database_path} does not exist")
    except InvalidSchema as error:
        fail(str(error))
    except SchemaDrift as error:
        for statement in error.applied:
            typer.echo(f"applied: {statement.splitlines()[0]}")
        fail(
            f"{error} ({schema_path}) in {s.spanner_database_path}. Only {migrations_path.name} "
            "changes existing objects: add the step there (ALTER TABLE ... ADD COLUMN, with the "
            "column at the end of its table in the schema file; CREATE INDEX), or pass "
            "--allow-drift to deploy anyway"
        )
    for obj in migration.drifted:
        typer.secho(
            f"warning: {obj.kind} {obj.name} differs from the schema file and was left as it "
            "is (--allow-drift)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if not migration.statements:
        typer.echo(f"{s.spanner_database_path} is up to date")
        return
    verb = "would apply" if dry_run else "applied"
    for statement in migration.statements:
        typer.echo(f"{verb}: {statement.splitlines()[0]}")
    for obj in migration.unverified:
        info(f"{obj.kind} {obj.name} is compared with the schema file once the plan is applied")
