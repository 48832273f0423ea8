"""Opening the Spanner database (the emulator when SPANNER_EMULATOR_HOST is set)."""

from __future__ import annotations

from typing import Any

from callpipe.config import Settings


def open_database(settings: Settings) -> Any:
    from google.cloud import spanner

    client = spanner.Client(project=settings.google_cloud_project)
    instance = client.instance(settings.spanner_instance)
    return instance.database(settings.spanner_database)


def read_ddl_statements(text: str) -> list[str]:
    """Split the schema file into statements (comments dropped, ';' separated)."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
