"""callpipe.deploy.ddl: create what is missing, run the missing migrations, refuse drift."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from callpipe.deploy.ddl import (
    MIGRATIONS_FILE,
    SCHEMA_FILE,
    AddColumn,
    AddRowDeletionPolicy,
    AddStoredColumn,
    InvalidSchema,
    SchemaDrift,
    SchemaObject,
    UnsupportedStatement,
    apply_migration,
    check_retention,
    drifted_objects,
    migration_step,
    objects_in,
    plan_migration,
    read_migrations,
    read_schema,
    schema_object,
    touched_objects,
)

DESIRED = read_schema(SCHEMA_FILE)

# How Spanner itself returns DDL (GetDatabaseDdl, as recorded from the emulator): its own
# layout, not the file's. Existing objects are recognised by name whatever the formatting.
CANONICAL_TENANTS = (
    "CREATE TABLE Tenants (\n  TenantId STRING(63) NOT NULL,\n  Name STRING(MAX) NOT NULL,\n"
    "  Status STRING(16) NOT NULL,\n  CallRailAccountId STRING(32),\n"
    "  CallRailApiKeySecret STRING(255),\n  CreatedAt TIMESTAMP NOT NULL OPTIONS (\n"
    "    allow_commit_timestamp = true\n  ),\n  UpdatedAt TIMESTAMP NOT NULL OPTIONS (\n"
    "    allow_commit_timestamp = true\n  ),\n) PRIMARY KEY(TenantId)"
)
CANONICAL_LEGACY_INDEX = (
    "CREATE UNIQUE NULL_FILTERED INDEX CallRailCompaniesByLegacyId "
    "ON CallRailCompanies(LegacyCompanyId)"
)
CANONICAL_STAGE_INDEX = "CREATE INDEX CallsByStage ON Calls(Stage, StageStatus, UpdatedAt DESC)"


# One table as written in a schema file, as Spanner returns it, and as later edited.
TOKENS_IN_FILE = """CREATE TABLE CompanySigningTokens (
  CompanyId STRING(64) NOT NULL,
  TokenId STRING(64) NOT NULL,
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  RevokedAt TIMESTAMP,
) PRIMARY KEY (CompanyId, TokenId),
  INTERLEAVE IN PARENT CallRailCompanies ON DELETE CASCADE"""
TOKENS_IN_DATABASE = (
    "CREATE TABLE CompanySigningTokens (\n  CompanyId STRING(64) NOT NULL,\n"
    "  TokenId STRING(64) NOT NULL,\n  CreatedAt TIMESTAMP NOT NULL OPTIONS (\n"
    "    allow_commit_timestamp = true\n  ),\n  RevokedAt TIMESTAMP,\n"
    ") PRIMARY KEY(CompanyId, TokenId),\n  INTERLEAVE IN PARENT CallRailCompanies ON DELETE CASCADE"
)
TOKENS_IN_FILE_CHANGED = TOKENS_IN_FILE.replace(
    "RevokedAt TIMESTAMP,", "RevokedAt TIMESTAMP OPTIONS (allow_commit_timestamp = true),"
)


def _objects(statements: Sequence[str]) -> list[SchemaObject]:
    found = [schema_object(s) for s in statements]
    assert None not in found
    return [obj for obj in found if obj is not None]


def test_the_schema_file_is_all_create_statements_of_distinct_objects() -> None:
    objects = _objects(DESIRED)
    assert len(set(objects)) == len(DESIRED)
    kinds = {obj.kind for obj in objects}
    assert kinds == {"TABLE", "INDEX"}
    assert ("TABLE", "Tenants") in {(o.kind, o.name) for o in objects}


def test_nothing_to_do_when_everything_exists() -> None:
    assert plan_migration(DESIRED, objects_in(DESIRED)) == []


def test_everything_to_do_on_an_empty_database() -> None:
    assert plan_migration(DESIRED, objects_in([])) == DESIRED


@pytest.mark.parametrize("present", [1, 3, 5, len(DESIRED) - 1])
def test_exactly_the_missing_statements_come_out_in_file_order(present: int) -> None:
    existing = DESIRED[:present]
    assert plan_migration(DESIRED, objects_in(existing)) == DESIRED[present:]


def test_a_gap_in_the_middle_is_filled_in_file_order() -> None:
    # Every other statement exists: the missing ones come out in the order of the file.
    existing = DESIRED[::2]
    assert plan_migration(DESIRED, objects_in(existing)) == DESIRED[1::2]


def test_existing_ddl_in_spanner_formatting_is_recognised() -> None:
    existing = objects_in(
        [
            CANONICAL_TENANTS,
            CANONICAL_LEGACY_INDEX,
            CANONICAL_STAGE_INDEX,
            # What the database may hold besides CREATE statements is ignored.
            "ALTER DATABASE callpipe SET OPTIONS (version_retention_period = '7d')",
        ]
    )
    missing = plan_migration(DESIRED, existing)
    missing_names = {obj.name for obj in _objects(missing)}
    assert missing_names == {obj.name for obj in _objects(DESIRED)} - {
        "Tenants",
        "CallRailCompaniesByLegacyId",
        "CallsByStage",
    }
    assert missing == [s for s in DESIRED if s in missing]


def test_names_are_case_insensitive_and_namespaced_by_kind() -> None:
    existing = objects_in(["create table TENANTS (x INT64) primary key (x)"])
    missing = plan_migration(DESIRED, existing)
    assert not [s for s in missing if schema_object(s) == SchemaObject("TABLE", "Tenants")]
    # An index does not stand in for a table of the same name.
    index_named_like_table = objects_in(["CREATE INDEX Tenants ON Other(x)"])
    assert DESIRED[0] in plan_migration(DESIRED, index_named_like_table)


@pytest.mark.parametrize(
    ("statement", "kind", "name"),
    [
        ("CREATE TABLE Calls (\n  TenantId STRING(63)) PRIMARY KEY (TenantId)", "TABLE", "Calls"),
        ("  create table if not exists `Order` (x INT64) PRIMARY KEY (x)", "TABLE", "Order"),
        ("CREATE INDEX CallsByStage ON Calls (Stage)", "INDEX", "CallsByStage"),
        ("CREATE UNIQUE INDEX U ON T (x)", "INDEX", "U"),
        ("CREATE NULL_FILTERED INDEX N ON T (x)", "INDEX", "N"),
        ("CREATE UNIQUE NULL_FILTERED INDEX UN ON T (x)", "INDEX", "UN"),
        ("CREATE INDEX IF NOT EXISTS I ON T (x)", "INDEX", "I"),
        ("CREATE SEARCH INDEX S ON T (tokens)", "INDEX", "S"),
        ("CREATE CHANGE STREAM CallsStream FOR Calls", "CHANGE STREAM", "CallsStream"),
        ("CREATE VIEW V SQL SECURITY INVOKER AS SELECT 1 AS x", "VIEW", "V"),
        (
            "CREATE SEQUENCE Seq OPTIONS (sequence_kind = 'bit_reversed_positive')",
            "SEQUENCE",
            "Seq",
        ),
        ("CREATE ROLE analyst", "ROLE", "analyst"),
    ],
)
def test_schema_object_of_create_statements(statement: str, kind: str, name: str) -> None:
    obj = schema_object(statement)
    assert obj is not None
    assert (obj.kind, obj.name) == (kind, name)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE Calls ADD COLUMN Note STRING(MAX)",
        "DROP INDEX CallsByStage",
        "GRANT SELECT ON TABLE Calls TO ROLE analyst",
        "CREATE OR REPLACE VIEW V SQL SECURITY INVOKER AS SELECT 1 AS x",
    ],
)
def test_other_statements_are_refused_not_skipped(statement: str) -> None:
    assert schema_object(statement) is None
    with pytest.raises(UnsupportedStatement):
        plan_migration([*DESIRED, statement], objects_in(DESIRED))


def test_spanner_layout_of_the_same_definition_is_not_drift() -> None:
    assert drifted_objects([TOKENS_IN_FILE], [TOKENS_IN_DATABASE]) == []
    assert drifted_objects([TOKENS_IN_FILE.lower()], [TOKENS_IN_DATABASE]) == []


def test_a_changed_definition_is_drift_but_not_replanned() -> None:
    assert drifted_objects([TOKENS_IN_FILE_CHANGED], [TOKENS_IN_DATABASE]) == [
        SchemaObject("TABLE", "CompanySigningTokens")
    ]
    assert plan_migration([TOKENS_IN_FILE_CHANGED], objects_in([TOKENS_IN_DATABASE])) == []
    # Objects only on one side are not drift: missing ones are created, extra ones ignored.
    assert drifted_objects(DESIRED, []) == []
    assert drifted_objects([], [TOKENS_IN_DATABASE]) == []


def test_an_object_created_twice_in_the_schema_is_an_error() -> None:
    with pytest.raises(ValueError, match="created twice"):
        plan_migration([DESIRED[0], DESIRED[0].replace("Tenants", "tenants", 1)], set())


class _Operation:
    def __init__(self, log: list[object]) -> None:
        self._log = log

    def result(self, timeout: float | None = None) -> object:
        self._log.append(("waited", timeout))
        return None


class _InMemoryDatabase:
    """Implements the SpannerDatabase protocol of callpipe.deploy.ddl over a list of DDL."""

    def __init__(self, ddl: list[str] | None) -> None:
        self._exists = ddl is not None
        self._stored = list(ddl or [])
        self._loaded: list[str] = []
        self.log: list[object] = []

    @property
    def ddl_statements(self) -> Sequence[str]:
        return tuple(self._loaded)

    def exists(self) -> bool:
        return self._exists

    def reload(self) -> None:
        self._loaded = list(self._stored)

    def update_ddl(self, ddl_statements: Sequence[str]) -> _Operation:
        self.log.append(("update_ddl", list(ddl_statements)))
        self._stored.extend(ddl_statements)
        return _Operation(self.log)


def test_apply_runs_the_missing_statements_once_and_is_then_a_no_op() -> None:
    database = _InMemoryDatabase(DESIRED[:2])
    migration = apply_migration(database, DESIRED, timeout=42.0)
    assert migration.statements == DESIRED[2:]
    assert migration.drifted == []
    assert database.log == [("update_ddl", DESIRED[2:]), ("waited", 42.0)]
    assert apply_migration(database, DESIRED).statements == []
    assert len(database.log) == 2


def test_dry_run_reports_without_changing() -> None:
    database = _InMemoryDatabase(DESIRED[:2])
    assert apply_migration(database, DESIRED, dry_run=True).statements == DESIRED[2:]
    assert database.log == []


def test_drift_is_refused_before_anything_is_applied() -> None:
    database = _InMemoryDatabase([TOKENS_IN_DATABASE])
    with pytest.raises(SchemaDrift) as refused:
        apply_migration(database, [TOKENS_IN_FILE_CHANGED, "CREATE INDEX I ON T (x)"])
    assert refused.value.drifted == [SchemaObject("TABLE", "CompanySigningTokens")]
    assert refused.value.applied == []
    assert database.log == []
    with pytest.raises(SchemaDrift):
        apply_migration(database, [TOKENS_IN_FILE_CHANGED], dry_run=True)


def test_allowed_drift_is_reported_and_the_object_left_alone() -> None:
    database = _InMemoryDatabase([TOKENS_IN_DATABASE])
    migration = apply_migration(
        database, [TOKENS_IN_FILE_CHANGED, "CREATE INDEX I ON T (x)"], allow_drift=True
    )
    assert migration.statements == ["CREATE INDEX I ON T (x)"]
    assert migration.drifted == [SchemaObject("TABLE", "CompanySigningTokens")]


# -- migrations.sql ---------------------------------------------------------------------

T_OLD = "CREATE TABLE T (a INT64 NOT NULL) PRIMARY KEY (a)"
T_NEW = "CREATE TABLE T (a INT64 NOT NULL, b STRING(MAX)) PRIMARY KEY (a)"
T_INDEX = "CREATE INDEX TByB ON T (b)"
ADD_B = "ALTER TABLE T ADD COLUMN b STRING(MAX)"
U_NEW = "CREATE TABLE U (a INT64 NOT NULL) PRIMARY KEY (a)"


def test_a_missing_column_is_added_and_its_index_follows_it() -> None:
    existing = objects_in([T_OLD])
    plan = plan_migration([T_NEW, T_INDEX, U_NEW], existing, [ADD_B, T_INDEX], [("T", "a")])
    # the index the schema file declares waits for the migration that adds its column
    assert plan == [U_NEW, ADD_B, T_INDEX]


def test_migrations_whose_effect_is_there_are_skipped() -> None:
    migrated = objects_in([T_NEW, T_INDEX])
    columns = [("t", "A"), ("t", "B")]  # names are case-insensitive
    assert plan_migration([T_NEW, T_INDEX], migrated, [ADD_B, T_INDEX], columns) == []


def test_a_table_created_now_needs_none_of_its_migrations() -> None:
    assert plan_migration([T_NEW, T_INDEX], set(), [ADD_B, T_INDEX], []) == [T_NEW, T_INDEX]


I_OLD = "CREATE INDEX TByB ON T (b)"
I_NEW = "CREATE INDEX TByB ON T (b) STORING (a2)"
T2 = "CREATE TABLE T (a INT64 NOT NULL, b STRING(MAX), a2 INT64) PRIMARY KEY (a)"
STORE_A2 = "ALTER INDEX TByB ADD STORED COLUMN a2"


def test_a_column_an_existing_index_lacks_is_stored_and_then_skipped() -> None:
    existing = objects_in([T2, I_OLD])
    assert plan_migration([T2, I_NEW], existing, [STORE_A2], stored=[]) == [STORE_A2]
    stored = [("tbyb", "A2")]  # names are case-insensitive
    assert plan_migration([T2, I_NEW], existing, [STORE_A2], stored=stored) == []


TTL = "ALTER TABLE T ADD ROW DELETION POLICY (OLDER_THAN(r, INTERVAL 30 DAY))"
T_TTL = (
    "CREATE TABLE T (a INT64 NOT NULL, r TIMESTAMP NOT NULL) PRIMARY KEY (a), "
    "ROW DELETION POLICY (OLDER_THAN(r, INTERVAL 30 DAY))"
)
T_NO_TTL = "CREATE TABLE T (a INT64 NOT NULL, r TIMESTAMP NOT NULL) PRIMARY KEY (a)"


def test_a_row_deletion_policy_is_added_to_a_table_without_one_once() -> None:
    existing = objects_in([T_NO_TTL])
    assert plan_migration([T_TTL], existing, [TTL]) == [TTL]
    assert plan_migration([T_TTL], existing, [TTL], expiring=["t"]) == []
    assert plan_migration([T_TTL], set(), [TTL]) == [T_TTL]  # created with it
    assert touched_objects([TTL]) == {SchemaObject("TABLE", "T")}
    assert migration_step(TTL.lower()) == AddRowDeletionPolicy("t")
    with pytest.raises(ValueError, match="does not create"):
        plan_migration([T_TTL], existing, [TTL.replace("TABLE T", "TABLE Nope")])
    with pytest.raises(ValueError, match="twice"):
        plan_migration([T_TTL], existing, [TTL, TTL])


@pytest.mark.parametrize(
    ("schema", "migration"),
    [
        (T_TTL, TTL.replace("30 DAY", "3 DAY")),  # a typo deletes rows before any check
        (T_TTL, TTL.replace("(r,", "(a,")),
        (T_NO_TTL, TTL),  # the file keeps its rows
    ],
)
def test_a_row_deletion_policy_other_than_the_files_is_refused_before_it_runs(
    schema: str, migration: str
) -> None:
    with pytest.raises(ValueError, match="not the one the schema file declares"):
        plan_migration([schema], objects_in([T_NO_TTL]), [migration])
    # the same policy, spelt otherwise, is the file's
    respelt = "alter table T add row deletion policy ( older_than ( r , interval 30 day ) )"
    assert plan_migration([T_TTL], objects_in([T_NO_TTL]), [respelt]) == [respelt]


def test_a_stored_column_the_files_index_does_not_store_is_refused() -> None:
    with pytest.raises(ValueError, match="does not name it"):
        plan_migration(
            [T2, I_NEW], objects_in([T2, I_OLD]), ["ALTER INDEX TByB ADD STORED COLUMN b"]
        )


def test_an_index_created_now_stores_its_columns_without_migrations() -> None:
    assert plan_migration([T2, I_NEW], objects_in([T2]), [STORE_A2]) == [I_NEW]


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        (["ALTER INDEX Nope ADD STORED COLUMN a2"], "does not create"),
        ([STORE_A2, STORE_A2.lower()], "twice"),
    ],
)
def test_stored_column_migrations_the_schema_file_does_not_reflect_are_refused(
    migrations: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_migration([T2, I_NEW], objects_in([T2, I_OLD]), migrations)


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        (["ALTER TABLE Nope ADD COLUMN b STRING(MAX)"], "does not create"),
        (["CREATE INDEX Other ON T (b)"], "does not declare"),
        ([ADD_B, ADD_B.lower()], "added twice"),
        ([T_INDEX, T_INDEX], "created twice"),
    ],
)
def test_migrations_the_schema_file_does_not_reflect_are_refused(
    migrations: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_migration([T_NEW, T_INDEX], objects_in([T_OLD]), migrations, [("T", "a")])


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE T ALTER COLUMN b STRING(100)",
        "ALTER TABLE T DROP COLUMN b",
        "DROP INDEX TByB",
        "ALTER INDEX TByB DROP STORED COLUMN a2",
        U_NEW,
    ],
)
def test_migrations_other_than_add_column_or_create_are_refused(statement: str) -> None:
    with pytest.raises(UnsupportedStatement):
        migration_step(statement)
    with pytest.raises(UnsupportedStatement):
        plan_migration([T_NEW, U_NEW], objects_in([T_OLD]), [statement], [("T", "a")])


def test_migration_step_names() -> None:
    assert migration_step("alter table `T` add column if not exists `b` INT64") == AddColumn(
        "T", "b"
    )
    assert migration_step(T_INDEX) == SchemaObject("INDEX", "TByB")
    assert migration_step("alter index `TByB` add stored column `a2`") == AddStoredColumn(
        "TByB", "a2"
    )


def test_the_repository_migrations_agree_with_the_schema_file() -> None:
    # every step is reflected in schema.sql, so a fresh database is the schema file exactly
    plan = plan_migration(DESIRED, set(), read_migrations(MIGRATIONS_FILE), [])
    assert sorted(plan) == sorted(DESIRED)


def test_the_calls_must_expire_after_retention_days_before_anything_runs() -> None:
    calls = (
        "CREATE TABLE Calls (TenantId STRING(63) NOT NULL, ReceivedAt TIMESTAMP NOT NULL) "
        "PRIMARY KEY (TenantId), ROW DELETION POLICY (OLDER_THAN(ReceivedAt, INTERVAL 365 DAY))"
    )
    check_retention([calls, T_TTL], 365)  # T's own 30 days are its business
    with pytest.raises(
        InvalidSchema, match="Calls expires rows after 365 days but RETENTION_DAYS is 2555"
    ):
        check_retention([calls], 2555)
    check_retention(DESIRED, 2555)  # the repository's schema and the default agree
