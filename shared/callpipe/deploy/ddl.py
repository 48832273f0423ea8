"""Idempotent Spanner schema migration: bring a deployed database up to schema.sql.

``schemas/spanner/schema.sql`` describes the schema as it should be; the local stack and
Terraform create a fresh database from it. A deployed database already holds data, so
deployment applies:

1. the ``CREATE`` statements of schema.sql whose object (table, index, ...) does not exist
   yet, in file order, which is also the order interleaved tables and indexes need;
2. then the steps of ``schemas/spanner/migrations.sql``, in file order, each only when its
   effect is missing: ``ALTER TABLE t ADD COLUMN c ...`` when the table exists without the
   column (per INFORMATION_SCHEMA; a table created in step 1 already has its columns),
   ``ALTER INDEX i ADD STORED COLUMN c`` when the index exists without storing it (an index
   created in step 1 already stores what the file says), ``ALTER TABLE t ADD ROW DELETION
   POLICY (...)`` when the table exists without one, and
   ``CREATE INDEX`` (or another ``CREATE``, but not of a table) when the object does not
   exist. An object that migrations.sql creates is created there, not in step 1, so an
   index can follow the ADD COLUMN it needs.

Each step must also be reflected in schema.sql (a new column at the end of its table, since
that is where ADD COLUMN puts it), so that a fresh database and a migrated one end up alike.
An existing object whose definition still differs from schema.sql afterwards is drift: new
code may rely on the file's definition, so the migration refuses it (before changing
anything when the plan does not touch the object) unless drift is explicitly allowed. Any
other kind of statement is refused instead of being silently skipped or run twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from callpipe.spanner_db import read_ddl_statements
from callpipe.topology import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / "schemas" / "spanner" / "schema.sql"
MIGRATIONS_FILE = REPO_ROOT / "schemas" / "spanner" / "migrations.sql"

_CREATE = re.compile(
    r"""
    ^\s*CREATE\s+
    (?P<kind>
        TABLE
      | (?:UNIQUE\s+)?(?:NULL_FILTERED\s+)?INDEX
      | SEARCH\s+INDEX
      | VECTOR\s+INDEX
      | CHANGE\s+STREAM
      | VIEW
      | SEQUENCE
      | ROLE
    )
    \s+(?:IF\s+NOT\s+EXISTS\s+)?
    (?P<name>`[^`]+`|[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.IGNORECASE | re.VERBOSE,
)


_NAME = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
_ADD_COLUMN = re.compile(
    rf"""
    ^\s*ALTER\s+TABLE\s+(?P<table>{_NAME})
    \s+ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<column>{_NAME})\s
    """,
    re.IGNORECASE | re.VERBOSE,
)
_ADD_TTL = re.compile(
    rf"""
    ^\s*ALTER\s+TABLE\s+(?P<table>{_NAME})\s+ADD\s+ROW\s+DELETION\s+POLICY\s*\(
    """,
    re.IGNORECASE | re.VERBOSE,
)
_ADD_STORED = re.compile(
    rf"""
    ^\s*ALTER\s+INDEX\s+(?P<index>{_NAME})
    \s+ADD\s+STORED\s+COLUMN\s+(?P<column>{_NAME})\s*$
    """,
    re.IGNORECASE | re.VERBOSE,
)


class InvalidSchema(ValueError):
    """The schema or migrations file cannot be applied as written."""


class UnsupportedStatement(InvalidSchema):
    """A desired statement that is not ``CREATE <object>``: it cannot be applied idempotently."""


class DatabaseNotFound(LookupError):
    pass


class SchemaDrift(RuntimeError):
    """Existing objects differ from the schema file, and drift was not allowed."""

    def __init__(self, drifted: Sequence[SchemaObject], applied: Sequence[str]) -> None:
        names = ", ".join(f"{obj.kind} {obj.name}" for obj in drifted)
        super().__init__(f"{names} differ(s) from the schema file")
        self.drifted = list(drifted)
        self.applied = list(applied)


@dataclass(frozen=True)
class SchemaObject:
    """A named schema object. Spanner names are case-insensitive, and so is equality here."""

    kind: str
    name: str = field(compare=False)
    key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.name.casefold())


def schema_object(statement: str) -> SchemaObject | None:
    """The object a ``CREATE`` statement creates, or None for any other statement."""
    match = _CREATE.match(statement)
    if match is None:
        return None
    words = match.group("kind").upper().split()
    # Every index flavour (UNIQUE, NULL_FILTERED, SEARCH, VECTOR) shares one namespace.
    kind = "INDEX" if words[-1] == "INDEX" else " ".join(words)
    return SchemaObject(kind=kind, name=match.group("name").strip("`"))


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE table ADD COLUMN column ...``; names compare case-insensitively."""

    table: str
    column: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.table.casefold(), self.column.casefold())

    @property
    def target(self) -> SchemaObject:
        return SchemaObject("TABLE", self.table)

    @property
    def effect(self) -> tuple[str, ...]:
        return ("column", *self.key)


@dataclass(frozen=True)
class AddStoredColumn:
    """``ALTER INDEX index ADD STORED COLUMN column``; names compare case-insensitively."""

    index: str
    column: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.index.casefold(), self.column.casefold())

    @property
    def target(self) -> SchemaObject:
        return SchemaObject("INDEX", self.index)

    @property
    def effect(self) -> tuple[str, ...]:
        return ("stored", *self.key)


@dataclass(frozen=True)
class AddRowDeletionPolicy:
    """``ALTER TABLE table ADD ROW DELETION POLICY (...)``: the table's rows expire."""

    table: str

    @property
    def key(self) -> str:
        return self.table.casefold()

    @property
    def target(self) -> SchemaObject:
        return SchemaObject("TABLE", self.table)

    @property
    def effect(self) -> tuple[str, ...]:
        return ("ttl", self.key)


Alteration = AddColumn | AddStoredColumn | AddRowDeletionPolicy
Step = Alteration | SchemaObject


def migration_step(statement: str) -> Step:
    """What a migrations.sql statement does, or UnsupportedStatement."""
    match = _ADD_COLUMN.match(statement)
    if match is not None:
        return AddColumn(match.group("table").strip("`"), match.group("column").strip("`"))
    ttl = _ADD_TTL.match(statement)
    if ttl is not None:
        return AddRowDeletionPolicy(ttl.group("table").strip("`"))
    stored = _ADD_STORED.match(statement)
    if stored is not None:
        return AddStoredColumn(stored.group("index").strip("`"), stored.group("column").strip("`"))
    obj = schema_object(statement)
    if obj is not None and obj.kind != "TABLE":
        return obj
    raise UnsupportedStatement(
        "a migration can only ALTER TABLE ... ADD COLUMN, ALTER TABLE ... ADD ROW DELETION "
        "POLICY, ALTER INDEX ... ADD STORED COLUMN or CREATE an object other than a table "
        "(tables are created from the schema file), "
        f"not: {_first_line(statement)}"
    )


def _first_line(statement: str) -> str:
    return statement.strip().splitlines()[0] if statement.strip() else statement


def objects_in(ddl_statements: Iterable[str]) -> set[SchemaObject]:
    """The objects a database's DDL (``database.ddl_statements``) creates; others ignored."""
    found = (schema_object(statement) for statement in ddl_statements)
    return {obj for obj in found if obj is not None}


def plan_migration(
    desired: Sequence[str],
    existing: Iterable[SchemaObject],
    migrations: Sequence[str] = (),
    columns: Iterable[tuple[str, str]] = (),
    stored: Iterable[tuple[str, str]] = (),
    expiring: Iterable[str] = (),
) -> list[str]:
    """What brings a database holding ``existing`` objects, ``columns`` ((table, column)
    pairs), ``stored`` ((index, stored column) pairs) and ``expiring`` tables (with a row
    deletion policy) up to ``desired``: its missing CREATE statements in desired order, then
    the ``migrations`` whose effect is missing, in their order."""
    present = set(existing)
    created_by_migrations = _check_migrations(desired, migrations)
    seen: set[SchemaObject] = set()
    missing: list[str] = []
    for statement in desired:
        obj = schema_object(statement)
        if obj is None:
            raise UnsupportedStatement(
                "only CREATE statements can be applied idempotently from the schema file, "
                f"not: {_first_line(statement)} (changes to existing objects go in "
                f"{MIGRATIONS_FILE.name})"
            )
        if obj in seen:
            raise InvalidSchema(f"{obj.kind} {obj.name} is created twice in the schema")
        seen.add(obj)
        if obj not in present and obj not in created_by_migrations:
            missing.append(statement)
    # An object created just now comes whole from the schema file (a table with its new
    # columns and row deletion policy, an index with its stored columns).
    before = set(present)
    done: set[tuple[str, ...]] = (
        {("column", table.casefold(), column.casefold()) for table, column in columns}
        | {("stored", index.casefold(), column.casefold()) for index, column in stored}
        | {("ttl", table.casefold()) for table in expiring}
    )
    for statement in migrations:
        step = migration_step(statement)
        if isinstance(step, SchemaObject):
            if step in present:
                continue
            present.add(step)
        else:
            if step.target not in before or step.effect in done:
                continue
            done.add(step.effect)
        missing.append(statement)
    return missing


def _check_migrations(desired: Sequence[str], migrations: Sequence[str]) -> set[SchemaObject]:
    """The objects the migrations create; refuses steps that the schema file does not
    reflect (a fresh database would then differ from a migrated one) or that repeat."""
    definitions = {
        obj: statement for obj, statement in ((schema_object(s), s) for s in desired) if obj
    }
    created: set[SchemaObject] = set()
    done: set[tuple[str, ...]] = set()
    for statement in migrations:
        step = migration_step(statement)
        if isinstance(step, SchemaObject):
            if step not in definitions:
                raise InvalidSchema(
                    f"a migration creates {step.kind} {step.name}, which the schema file does "
                    "not declare: a fresh database would lack it"
                )
            if step in created:
                raise InvalidSchema(f"{step.kind} {step.name} is created twice in the migrations")
            created.add(step)
            continue
        if step.target not in definitions:
            raise InvalidSchema(
                f"a migration alters {step.target.kind.lower()} {step.target.name}, which the "
                f"schema file does not create: {_first_line(statement)}"
            )
        if step.effect in done:
            raise InvalidSchema(f"added twice in the migrations: {_first_line(statement)}")
        done.add(step.effect)
        declared = definitions[step.target]
        if isinstance(step, AddRowDeletionPolicy):
            # rows start being deleted as soon as it runs: it must be the file's, exactly
            wanted = _policy(declared)
            if wanted is None or wanted != _policy(statement):
                raise InvalidSchema(
                    f"the row deletion policy a migration gives table {step.table} is not the "
                    "one the schema file declares for it"
                )
        elif isinstance(step, AddStoredColumn) and step.key[1] not in _stored(declared):
            raise InvalidSchema(
                f"a migration stores {step.column} in index {step.index}, whose STORING "
                "list in the schema file does not name it"
            )
    return created


_POLICY = re.compile(r"ROW\s+DELETION\s+POLICY\s*(\(.*\))\s*$", re.IGNORECASE | re.DOTALL)
_STORING = re.compile(r"\bSTORING\s*\(([^)]*)\)", re.IGNORECASE)


def _policy(statement: str) -> str | None:
    """The normalized ``(OLDER_THAN(...))`` of a statement's row deletion policy, if any."""
    found = _POLICY.search(statement)
    return _normalized(found.group(1)) if found else None


def _stored(statement: str) -> set[str]:
    """The columns an index statement's STORING list names (case-folded)."""
    found = _STORING.search(statement)
    if found is None:
        return set()
    return {name.strip().strip("`").casefold() for name in found.group(1).split(",")}


# the tables that hold a call's data, whose rows expire after RETENTION_DAYS
RETAINED_TABLES = ("Calls", "WebhookEvents")
_INTERVAL = re.compile(r"INTERVAL\s+(\d+)\s+DAY", re.IGNORECASE)


def check_retention(desired: Sequence[str], retention_days: int) -> None:
    """Refuse a schema whose calls expire after another interval than ``retention_days``
    (the recordings' and archives' lifetime), before anything runs: once a policy is
    applied, rows start being deleted."""
    wanted = {name.casefold() for name in RETAINED_TABLES}
    for statement in desired:
        obj = schema_object(statement)
        if obj is None or obj.kind != "TABLE" or obj.key not in wanted:
            continue
        policy = _POLICY.search(statement)
        found = _INTERVAL.search(policy.group(1)) if policy else None
        if found is not None and int(found.group(1)) != retention_days:
            raise InvalidSchema(
                f"table {obj.name} expires rows after {found.group(1)} days but RETENTION_DAYS "
                f"is {retention_days}: they must say the same (see README, Changing the "
                "Spanner schema)"
            )


def touched_objects(statements: Sequence[str]) -> set[SchemaObject]:
    """The objects a plan creates or alters (their drift can only be judged afterwards)."""
    touched: set[SchemaObject] = set()
    for statement in statements:
        obj = schema_object(statement)
        if obj is not None:
            touched.add(obj)
            continue
        try:
            step = migration_step(statement)
        except UnsupportedStatement:
            continue
        if not isinstance(step, SchemaObject):
            touched.add(step.target)
    return touched


def _normalized(statement: str) -> str:
    # Spanner returns its own layout (line breaks inside OPTIONS, "PRIMARY KEY(" without a
    # space); whitespace and case carry no meaning in DDL outside literals.
    return re.sub(r"\s+", "", statement).casefold()


def drifted_objects(desired: Sequence[str], existing_ddl: Iterable[str]) -> list[SchemaObject]:
    """Objects in both the schema file and the database whose definitions differ.

    Only migrations.sql changes an existing object; whatever still differs is drift, which
    new code relying on the file's definition would trip over.
    """
    current: dict[SchemaObject, str] = {}
    for statement in existing_ddl:
        obj = schema_object(statement)
        if obj is not None:
            current[obj] = _normalized(statement)
    drifted: list[SchemaObject] = []
    for statement in desired:
        obj = schema_object(statement)
        if obj is not None and obj in current and current[obj] != _normalized(statement):
            drifted.append(obj)
    return drifted


def read_schema(path: Path = SCHEMA_FILE) -> list[str]:
    return read_ddl_statements(path.read_text(encoding="utf-8"))


def read_migrations(path: Path = MIGRATIONS_FILE) -> list[str]:
    """The migration steps, in order; a missing file has none."""
    return read_ddl_statements(path.read_text(encoding="utf-8")) if path.is_file() else []


class SpannerDatabase(Protocol):
    """The part of ``google.cloud.spanner_v1.database.Database`` the migration uses."""

    @property
    def ddl_statements(self) -> Sequence[str]: ...

    def exists(self) -> bool: ...

    def reload(self) -> None: ...

    def update_ddl(self, ddl_statements: Sequence[str]) -> _Operation: ...

    def snapshot(self) -> Any: ...


class _Operation(Protocol):
    def result(self, timeout: float | None = None) -> object: ...


@dataclass(frozen=True)
class Migration:
    statements: list[str]
    """What was run (or, in a dry run, would be), in order."""
    drifted: list[SchemaObject]
    """Existing objects that differ from the schema file (only with ``allow_drift``)."""
    unverified: list[SchemaObject] = field(default_factory=list)
    """In a dry run: objects the plan changes, whose result is only checked when applied."""


# What a database already has of each ALTER kind, from INFORMATION_SCHEMA (user objects only).
_EXISTING: dict[type, str] = {
    # (table, column) of every column
    AddColumn: "SELECT TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
    "WHERE TABLE_SCHEMA = ''",
    # (index, column) of every stored column (key columns have a position)
    AddStoredColumn: "SELECT INDEX_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS "
    "WHERE TABLE_SCHEMA = '' AND ORDINAL_POSITION IS NULL",
    # (table,) of every table with a row deletion policy
    AddRowDeletionPolicy: "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES "
    "WHERE TABLE_SCHEMA = '' AND ROW_DELETION_POLICY_EXPRESSION IS NOT NULL",
}


def _existing(database: SpannerDatabase, kind: type, needed: bool) -> set[tuple[str, ...]]:
    """What ``database`` has of the ``kind`` of ALTER, read only when a migration needs it."""
    if not needed:
        return set()
    with database.snapshot() as snapshot:
        return {tuple(str(value) for value in row) for row in snapshot.execute_sql(_EXISTING[kind])}


def apply_migration(
    database: SpannerDatabase,
    desired: Sequence[str],
    *,
    migrations: Sequence[str] = (),
    timeout: float = 1800.0,
    dry_run: bool = False,
    allow_drift: bool = False,
) -> Migration:
    """Bring ``database`` up to ``desired``: create what it lacks, run the missing
    ``migrations``, then check that nothing differs from ``desired``.

    Drift of an object the plan does not touch is refused before anything changes; drift
    that remains after the plan ran is refused afterwards (the plan's changes only add, and
    a rerun skips them). ``allow_drift`` reports drift instead (``Migration.drifted``).

    The statements go in one ``update_ddl`` call: Spanner validates them together and
    applies them in order, and the call returns once the long-running operation is done
    (an index backfill can take minutes, hence the generous timeout).
    """
    if not database.exists():
        raise DatabaseNotFound("the Spanner database does not exist")
    database.reload()
    current = list(database.ddl_statements)
    kinds = {type(migration_step(statement)) for statement in migrations}
    columns, stored, expiring = (
        _existing(database, kind, kind in kinds)
        for kind in (AddColumn, AddStoredColumn, AddRowDeletionPolicy)
    )
    statements = plan_migration(
        desired,
        objects_in(current),
        migrations,
        [(table, column) for table, column in columns],
        [(index, column) for index, column in stored],
        [table for (table,) in expiring],
    )
    touched = touched_objects(statements)
    drifted = [obj for obj in drifted_objects(desired, current) if obj not in touched]
    if drifted and not allow_drift:
        raise SchemaDrift(drifted, applied=[])
    if dry_run:
        unverified = sorted(touched & objects_in(current), key=lambda obj: obj.key)
        return Migration(statements=statements, drifted=drifted, unverified=unverified)
    if statements:
        database.update_ddl(statements).result(timeout=timeout)
        database.reload()
        current = list(database.ddl_statements)
        drifted = drifted_objects(desired, current)
        if drifted and not allow_drift:
            raise SchemaDrift(drifted, applied=statements)
    return Migration(statements=statements, drifted=drifted)
