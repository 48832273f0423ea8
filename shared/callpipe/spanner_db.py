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


def spanner_check(database: Any) -> dict[str, Any]:
    """Whether Spanner answers a trivial query (for /health)."""
    try:
        with database.snapshot() as snapshot:
            list(snapshot.execute_sql("SELECT 1", timeout=3))
    except Exception as error:  # noqa: BLE001 - health reports any failure as down
        return {"ok": False, "error": error.__class__.__name__}
    return {"ok": True}
