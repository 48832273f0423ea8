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


def _tokens(database: Any, company_id: str) -> dict[str, tuple[str, bool, Any]]:
    """TokenId → (SecretName, Active, RevokedAt) of a company's signing tokens."""
    from google.cloud import spanner

    keys = spanner.KeySet(
        ranges=[spanner.KeyRange(start_closed=[company_id], end_closed=[company_id])]
    )
    with database.snapshot() as snapshot:
        rows = snapshot.read(
            "CompanySigningTokens", ["TokenId", "SecretName", "Active", "RevokedAt"], keys
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_add_token_by_legacy_id_files_the_token_under_the_company_resource_id(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    from callpipe.secrets import LocalSecretStore
    from callpipe.tenancy import TenantRepository

    tenant = make_tenant()
    added = run_cli(
        "tenants",
        "add-token",
        "--company-id",
        tenant.legacy_company_id,
        "--signing-token",
        "rotated-signing-token-by-legacy-id",
    )
    assert added.returncode == 0, added.stderr
    assert "rotated-signing-token-by-legacy-id" not in added.stdout + added.stderr
    tokens = _tokens(database, tenant.company_id)
    assert len(tokens) == 2
    new_id = next(t for t in tokens if t != tenant.token_id)
    secret_name, active, _ = tokens[new_id]
    assert active
    assert secret_name == f"callrail-webhook-token-{tenant.company_id.lower()}-{new_id}"
    store = LocalSecretStore(stack.secrets_dir)
    assert store.get(secret_name) == "rotated-signing-token-by-legacy-id"
    # no secret was filed under the legacy id
    assert not [p for p in _secret_files(stack) if f"-{tenant.legacy_company_id}-" in p]
    # intake's lookup by either id now sees both tokens as active
    mapping = TenantRepository(database).find_company(tenant.legacy_company_id)
    assert mapping is not None
    assert {t.token_id for t in mapping.tokens if t.active} == {tenant.token_id, new_id}


def test_a_failed_google_call_is_one_line_not_a_traceback(stack: LocalStack) -> None:
    env = {**os.environ, "SPANNER_DATABASE": f"missing-{uuid.uuid4().hex[:8]}"}
    result = run_cli("tenants", "list", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: a Google Cloud request failed (NotFound)")
    assert "missing-" in lines[0]
