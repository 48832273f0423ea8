"""``callpipe deploy ddl`` against the Spanner emulator: drift fails the deploy, and the
migration steps bring an older database up to the schema file, once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callpipe.devstack.stack import LocalStack
from tests.integration.test_cli_and_stack import run_cli

T_OLD = "CREATE TABLE T (\n  a INT64 NOT NULL,\n  note STRING(20),\n) PRIMARY KEY (a)"
T_NEW = (
    "CREATE TABLE T (\n  a INT64 NOT NULL,\n  note STRING(20),\n  b STRING(MAX),\n) PRIMARY KEY (a)"
)
T_INDEX = "CREATE INDEX TByB ON T (b)"
ADD_B = "ALTER TABLE T ADD COLUMN b STRING(MAX)"
U_NEW = "CREATE TABLE U (\n  a INT64 NOT NULL,\n) PRIMARY KEY (a)"


@pytest.fixture
def make_database(stack: LocalStack) -> Iterator[Callable[[list[str]], Any]]:
    """A new database in the emulator holding ``ddl``, dropped after the test."""
    from google.cloud import spanner

    from callpipe.config import Settings

    instance = spanner.Client(project=stack.config.project).instance(Settings().spanner_instance)
    made: list[Any] = []

    def make(ddl: list[str]) -> Any:
        database = instance.database(f"ddl-{uuid.uuid4().hex[:12]}", ddl_statements=ddl)
        database.create().result(timeout=60)
        made.append(database)
        return database

    yield make
    for database in made:
        database.drop()


def _sql(tmp_path: Path, name: str, statements: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("-- test schema\n" + ";\n\n".join(statements) + (";\n" if statements else ""))
    return path


def _files(tmp_path: Path, schema: list[str], migrations: list[str]) -> tuple[str, ...]:
    """The deploy ddl options naming a schema file and a migrations file of these statements."""
    return (
        "--schema-file",
        str(_sql(tmp_path, "schema.sql", schema)),
        "--migrations-file",
        str(_sql(tmp_path, "migrations.sql", migrations)),
    )


def _assert_up_to_date(result: Any) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("is up to date")


def _ddl(database: Any, *args: str) -> Any:
    return run_cli(
        "deploy", "ddl", *args, env={**os.environ, "SPANNER_DATABASE": database.database_id}
    )


def _current(database: Any) -> list[str]:
    database.reload()
    return list(database.ddl_statements)


def _columns(database: Any, table: str) -> list[str]:
    from google.cloud.spanner_v1 import param_types

    with database.snapshot() as snapshot:
        rows = snapshot.execute_sql(
            "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t ORDER BY ORDINAL_POSITION",
            params={"t": table},
            param_types={"t": param_types.STRING},
        )
        return [row[0] for row in rows]


def test_a_changed_table_without_a_migration_fails_the_deploy_and_changes_nothing(
    make_database: Callable[[list[str]], Any], tmp_path: Path
) -> None:
    database = make_database([T_OLD])
    before = _current(database)
    files = _files(tmp_path, [T_NEW, U_NEW], [])

    refused = _ddl(database, *files)
    assert refused.returncode == 1
    assert "TABLE T differ" in refused.stderr
    assert "ADD COLUMN" in refused.stderr and "--allow-drift" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _current(database) == before  # not even the missing table U

    allowed = _ddl(database, *files, "--allow-drift")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: TABLE T differs" in allowed.stderr
    assert "applied: CREATE TABLE U (" in allowed.stdout
    assert _columns(database, "T") == ["a", "note"]


def test_migrations_bring_an_older_database_up_to_the_schema_file_once(
    make_database: Callable[[list[str]], Any], tmp_path: Path
) -> None:
    database = make_database([T_OLD])
    database.run_in_transaction(lambda txn: txn.insert("T", ["a", "note"], [(1, "kept")]))
    args = _files(tmp_path, [T_NEW, T_INDEX, U_NEW], [ADD_B, T_INDEX])

    planned = _ddl(database, *args, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines() == [
        "would apply: CREATE TABLE U (",
        f"would apply: {ADD_B}",
        f"would apply: {T_INDEX}",
    ]
    assert _columns(database, "T") == ["a", "note"]

    applied = _ddl(database, *args)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "applied: CREATE TABLE U (",
        f"applied: {ADD_B}",
        f"applied: {T_INDEX}",
    ]
    assert "warning" not in applied.stderr
    assert _columns(database, "T") == ["a", "note", "b"]
    assert _columns(database, "U") == ["a"]
    assert any(s.startswith("CREATE INDEX TByB") for s in _current(database))
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT a, note, b FROM T")) == [[1, "kept", None]]

    again = _ddl(database, *args)
    _assert_up_to_date(again)


def test_an_index_of_an_older_database_gets_its_stored_columns_once(
    make_database: Callable[[list[str]], Any], tmp_path: Path
) -> None:
    table = "CREATE TABLE S (\n  a INT64 NOT NULL,\n  b STRING(MAX),\n  c INT64,\n) PRIMARY KEY (a)"
    database = make_database([table, "CREATE INDEX SByB ON S (b DESC)"])
    args = _files(
        tmp_path,
        [table, "CREATE INDEX SByB ON S (b DESC) STORING (c)"],
        ["ALTER INDEX SByB ADD STORED COLUMN c"],
    )

    applied = _ddl(database, *args)
    assert applied.returncode == 0, applied.stderr  # the result is the file's index: no drift
    assert applied.stdout.splitlines() == ["applied: ALTER INDEX SByB ADD STORED COLUMN c"]
    assert "CREATE INDEX SByB ON S(b DESC) STORING (c)" in _current(database)

    again = _ddl(database, *args)
    _assert_up_to_date(again)


def test_a_database_created_from_the_schema_file_needs_no_migration(
    make_database: Callable[[list[str]], Any], tmp_path: Path
) -> None:
    database = make_database([T_NEW, T_INDEX, U_NEW])
    _assert_up_to_date(_ddl(database, *_files(tmp_path, [T_NEW, T_INDEX, U_NEW], [ADD_B, T_INDEX])))


def test_a_migration_that_does_not_match_the_schema_file_fails_after_applying(
    make_database: Callable[[list[str]], Any], tmp_path: Path
) -> None:
    database = make_database([T_OLD])
    # the file says STRING(MAX), the migration adds STRING(10): the result is drift
    files = _files(tmp_path, [T_NEW], ["ALTER TABLE T ADD COLUMN b STRING(10)"])
    result = _ddl(database, *files)
    assert result.returncode == 1
    assert "applied: ALTER TABLE T ADD COLUMN b STRING(10)" in result.stdout
    assert "TABLE T differ" in result.stderr
    assert _columns(database, "T") == ["a", "note", "b"]


def test_the_repository_schema_and_migrations_leave_the_stack_database_as_it_is(
    stack: LocalStack,
) -> None:
    result = run_cli("deploy", "ddl")
    _assert_up_to_date(result)
    assert not result.stderr.strip()


def test_a_database_of_the_previous_release_is_migrated_to_the_repository_schema(
    make_database: Callable[[list[str]], Any],
) -> None:
    """The released schemas had the listing index without stored columns, no row
    deletion policies, only the minute window of the CallRail rate limit, no source key
    and no change feed: the repository's migrations bring it to the file's definitions,
    which are then no drift."""
    import re

    from callpipe.deploy.ddl import read_schema

    def released(statement: str) -> str:
        if statement.startswith("CREATE INDEX CallsByTenantReceived"):
            return (
                "CREATE INDEX CallsByTenantReceived ON Calls (TenantId, ReceivedAt DESC),\n"
                "  INTERLEAVE IN Tenants"
            )
        if statement.startswith("CREATE TABLE CallRailRateLimits"):
            return re.sub(r"\n\s*(?:Hour|Day)Tat TIMESTAMP,", "", statement)
        statement = re.sub(
            r"\n\s*SourceKey STRING\(MAX\) AS \(.*\) STORED,", "", statement, flags=re.S
        )
        return re.sub(r",\s*ROW DELETION POLICY \(.*\)\)$", "", statement, flags=re.S)

    schema = [s for s in read_schema() if not s.startswith("CREATE INDEX CallsByTenantUpdated")]
    database = make_database([released(statement) for statement in schema])
    assert not any("SourceKey" in statement for statement in _current(database))
    assert not any("ROW DELETION" in statement for statement in _current(database))
    _insert_call_with_source(database, " Google   Ads ")
    result = _ddl(database)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        *(
            f"applied: ALTER INDEX CallsByTenantReceived ADD STORED COLUMN {column}"
            for column in ("StageStatus", "Intent", "LeadScore", "IsSpam")
        ),
        "applied: ALTER TABLE WebhookEvents ADD ROW DELETION POLICY "
        "(OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY))",
        "applied: ALTER TABLE Calls ADD ROW DELETION POLICY "
        "(OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY))",
        "applied: ALTER TABLE CallRailRateLimits ADD COLUMN HourTat TIMESTAMP",
        "applied: ALTER TABLE CallRailRateLimits ADD COLUMN DayTat TIMESTAMP",
        "applied: ALTER INDEX CallsByTenantReceived ADD STORED COLUMN OfficeId",
        "applied: ALTER TABLE Calls ADD COLUMN SourceKey STRING(MAX) AS (",
        "applied: ALTER INDEX CallsByTenantReceived ADD STORED COLUMN SourceKey",
        "applied: CREATE INDEX CallsByTenantUpdated ON Calls (TenantId, UpdatedAt)",
        *(
            f"applied: ALTER INDEX CallsByTenantReceived ADD STORED COLUMN {column}"
            for column in ("ProjectType", "FollowUpRequired", "AppointmentRequested")
        ),
    ]
    _assert_up_to_date(_ddl(database))
    # the calls already there got their source key when the column was added
    with database.snapshot() as snapshot:
        keys = list(snapshot.execute_sql("SELECT SourceKey FROM Calls"))
    assert keys == [["google ads"]]


def _insert_call_with_source(database: Any, source: str) -> None:
    from google.cloud.spanner_v1 import COMMIT_TIMESTAMP, JsonObject

    with database.batch() as batch:
        batch.insert(
            "Tenants",
            ["TenantId", "Name", "Status", "CreatedAt", "UpdatedAt"],
            [["acme", "Acme", "active", COMMIT_TIMESTAMP, COMMIT_TIMESTAMP]],
        )
        columns = ["TenantId", "CallId", "OfficeId", "CompanyId", "CorrelationId", "Stage"]
        columns += ["StageStatus", "Webhook", "ReceivedAt", "CreatedAt", "UpdatedAt"]
        values = ["acme", "CAL1", "main", "COM1", "c" * 32, "register", "ok"]
        values += [JsonObject({"source": source}), datetime.now(UTC), *[COMMIT_TIMESTAMP] * 2]
        batch.insert("Calls", columns, [values])
