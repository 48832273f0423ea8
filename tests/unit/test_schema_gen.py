"""Generated JSON Schemas of the pipeline messages stay in step with the models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from callpipe.messages import MESSAGE_MODELS
from callpipe.schema_gen import MESSAGES_DIR, render_schemas, stale_schemas, write_schemas


def test_committed_schemas_are_up_to_date() -> None:
    assert MESSAGES_DIR.is_dir(), "run `callpipe schemas generate` and commit schemas/messages"
    assert stale_schemas() == [], "schemas/messages is stale: run `make schemas`"


def test_one_schema_per_message_kind() -> None:
    assert sorted(render_schemas()) == sorted(f"{m.kind}.schema.json" for m in MESSAGE_MODELS)


def test_rendered_schemas_are_valid_json_with_identity() -> None:
    for name, text in render_schemas().items():
        schema = json.loads(text)
        kind = name.removesuffix(".schema.json")
        assert schema["x-pubsub-kind"] == kind
        assert schema["$id"].endswith(f"/{kind}.schema.json")
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False  # extra="forbid"
        assert text.endswith("\n")


def test_call_received_schema_requires_the_routing_fields() -> None:
    schema = json.loads(render_schemas()["call.received.schema.json"])
    assert {"tenant_id", "office_id", "call_id", "event_type", "event_key", "webhook"} <= set(
        schema["required"]
    )


def test_freshly_written_directory_is_not_stale(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert stale_schemas(tmp_path) == []


def test_modified_missing_and_extra_files_are_reported_stale(tmp_path: Path) -> None:
    for source in MESSAGES_DIR.glob("*.schema.json"):
        shutil.copy(source, tmp_path / source.name)
    assert stale_schemas(tmp_path) == []

    modified = tmp_path / "call.received.schema.json"
    schema = json.loads(modified.read_text())
    schema["properties"]["tenant_id"]["description"] = "edited by hand"
    modified.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    (tmp_path / "webhook.quarantined.schema.json").unlink()
    (tmp_path / "old.kind.schema.json").write_text("{}\n")

    assert stale_schemas(tmp_path) == [
        "call.received.schema.json",
        "old.kind.schema.json",
        "webhook.quarantined.schema.json",
    ]


def test_whitespace_only_change_is_stale(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    target = tmp_path / "call.registered.schema.json"
    target.write_text(target.read_text().rstrip("\n"))
    assert stale_schemas(tmp_path) == ["call.registered.schema.json"]


def test_write_schemas_removes_files_of_models_that_no_longer_exist(tmp_path: Path) -> None:
    (tmp_path / "gone.kind.schema.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("not a schema\n")
    write_schemas(tmp_path)
    assert not (tmp_path / "gone.kind.schema.json").exists()
    assert (tmp_path / "README.md").exists()
    assert stale_schemas(tmp_path) == []
