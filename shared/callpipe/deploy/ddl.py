"""Idempotent Spanner schema migration: create what schema.sql declares and the database lacks.

``schemas/spanner/schema.sql`` describes the schema as it should be; the local stack creates
a fresh database from it. A deployed database already holds data, so deployment applies only
the statements whose object (table, index, ...) does not exist yet, in file order, which is
also the order interleaved tables and indexes need. Changes to an existing object (a new
column, say) need an explicit ``ALTER`` and are out of scope: a statement of any kind other
than ``CREATE <object>`` is refused instead of being silently skipped or run twice, and an
existing object whose definition differs from the file is reported as drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from callpipe.spanner_db import read_ddl_statements
from callpipe.topology import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / "schemas" / "spanner" / "schema.sql"

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


class UnsupportedStatement(ValueError):
    """A desired statement that is not ``CREATE <object>``: it cannot be applied idempotently."""


class DatabaseNotFound(LookupError):
    pass


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


def objects_in(ddl_statements: Iterable[str]) -> set[SchemaObject]:
    """The objects a database's DDL (``database.ddl_statements``) creates; others ignored."""
    found = (schema_object(statement) for statement in ddl_statements)
    return {obj for obj in found if obj is not None}


def plan_migration(desired: Sequence[str], existing: Iterable[SchemaObject]) -> list[str]:
    """The desired statements whose object is not among ``existing``, in desired order."""
    present = set(existing)
    seen: set[SchemaObject] = set()
    missing: list[str] = []
    for statement in desired:
        obj = schema_object(statement)
        if obj is None:
            first_line = statement.strip().splitlines()[0] if statement.strip() else statement
            raise UnsupportedStatement(
                f"only CREATE statements can be applied idempotently, not: {first_line}"
            )
        if obj in seen:
            raise ValueError(f"{obj.kind} {obj.name} is created twice in the schema")
        seen.add(obj)
        if obj not in present:
            missing.append(statement)
    return missing


def _normalized(statement: str) -> str:
    # Spanner returns its own layout (line breaks inside OPTIONS, "PRIMARY KEY(" without a
    # space); whitespace and case carry no meaning in DDL outside literals.
    return re.sub(r"\s+", "", statement).casefold()


def drifted_objects(desired: Sequence[str], existing_ddl: Iterable[str]) -> list[SchemaObject]:
    """Objects in both the schema file and the database whose definitions differ.

    They are never altered by the migration; the caller should say so, since new code may
    rely on the file's definition.
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


class SpannerDatabase(Protocol):
    """The part of ``google.cloud.spanner_v1.database.Database`` the migration uses."""

    @property
    def ddl_statements(self) -> Sequence[str]: ...

    def exists(self) -> bool: ...

    def reload(self) -> None: ...

    def update_ddl(self, ddl_statements: Sequence[str]) -> _Operation: ...


class _Operation(Protocol):
    def result(self, timeout: float | None = None) -> object: ...


@dataclass(frozen=True)
class Migration:
    statements: list[str]
    """What was run (or, in a dry run, would be), in order."""
    drifted: list[SchemaObject]
    """Existing objects that differ from the schema file and were left as they are."""


def apply_migration(
    database: SpannerDatabase,
    desired: Sequence[str],
    *,
    timeout: float = 1800.0,
    dry_run: bool = False,
) -> Migration:
    """Create the objects of ``desired`` that ``database`` lacks.

    The statements go in one ``update_ddl`` call: Spanner validates them together and
    applies them in order, and the call returns once the long-running operation is done
    (an index backfill can take minutes, hence the generous timeout).
    """
    if not database.exists():
        raise DatabaseNotFound("the Spanner database does not exist")
    database.reload()
    current = list(database.ddl_statements)
    statements = plan_migration(desired, objects_in(current))
    if statements and not dry_run:
        database.update_ddl(statements).result(timeout=timeout)
    return Migration(statements=statements, drifted=drifted_objects(desired, current))
