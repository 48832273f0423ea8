"""JSON Schemas of the pipeline messages, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from callpipe.messages import MESSAGE_MODELS
from callpipe.topology import REPO_ROOT

MESSAGES_DIR = REPO_ROOT / "schemas" / "messages"


def render_schemas() -> dict[str, str]:
    """File name → JSON text, exactly as written to ``schemas/messages``."""
    rendered = {}
    for model in MESSAGE_MODELS:
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://callpipe.dev/schemas/messages/{model.kind}.schema.json"
        schema["x-pubsub-kind"] = model.kind
        rendered[f"{model.kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def write_schemas(directory: Path = MESSAGES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.schema.json"):
        if stale.name not in render_schemas():
            stale.unlink()
    return written


def stale_schemas(directory: Path = MESSAGES_DIR) -> list[str]:
    """Names of the files that differ from what the models generate (or are missing)."""
    problems = []
    expected = render_schemas()
    for name, text in expected.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            problems.append(name)
    for present in directory.glob("*.schema.json"):
        if present.name not in expected:
            problems.append(present.name)
    return sorted(problems)
