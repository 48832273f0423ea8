"""``callpipe tenants`` writes against the Spanner emulator: what it refuses, and that a
refusal leaves neither a row nor a secret behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from callpipe.devstack.stack import LocalStack
from tests.integration.test_cli_and_stack import run_cli


def _tenant_exists(database: Any, tenant_id: str) -> bool:
    from google.cloud import spanner

    with database.snapshot() as snapshot:
        rows = snapshot.read("Tenants", ["TenantId"], spanner.KeySet(keys=[[tenant_id]]))
        return bool(list(rows))


def _secret_files(stack: LocalStack) -> set[str]:
    return {p.name for p in Path(stack.secrets_dir).iterdir()}


def test_the_emulator_with_secret_manager_is_refused_before_anything_is_written(
    stack: LocalStack, database: Any
) -> None:
    tenant_id = f"mix-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "SECRET_BACKEND": "secret-manager"}
    before = _secret_files(stack)
    result = run_cli(
        "tenants",
        "add",
        "--tenant-id",
        tenant_id,
        "--name",
        "Mixed Backends",
        "--callrail-account-id",
        "728790660",
        "--callrail-company-id",
        f"COM{uuid.uuid4().hex}",
        "--signing-token",
        "mixed-backends-token",
        env=env,
    )
    assert result.returncode == 1
    assert "Spanner is the emulator" in result.stderr
    assert "SECRET_BACKEND=local" in result.stderr
    assert "Traceback" not in result.stderr
    assert not _tenant_exists(database, tenant_id)
    assert _secret_files(stack) == before
