"""``callpipe tenants`` writes against the Spanner emulator: what it refuses, and that a
refusal leaves neither a row nor a secret behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def _revoke(company_id: str, token_id: str, *extra: str) -> Any:
    return run_cli(
        "tenants", "revoke-token", "--company-id", company_id, "--token-id", token_id, *extra
    )


def test_rotation_add_token_then_revoke_the_old_one_once(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    from callpipe.secrets import LocalSecretStore

    tenant = make_tenant()
    added = run_cli(
        "tenants",
        "add-token",
        "--company-id",
        tenant.company_id,
        env={**os.environ, "CALLPIPE_SIGNING_TOKEN": "the-replacement-signing-token"},
    )
    assert added.returncode == 0, added.stderr
    assert "the-replacement-signing-token" not in added.stdout + added.stderr
    tokens = _tokens(database, tenant.company_id)
    new_id = next(t for t in tokens if t != tenant.token_id)
    assert new_id in added.stdout
    secret = LocalSecretStore(stack.secrets_dir).get(tokens[new_id][0])
    assert secret == "the-replacement-signing-token"
    assert {t for t, (_, active, _) in tokens.items() if active} == {tenant.token_id, new_id}

    revoked = _revoke(tenant.company_id, tenant.token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"token {tenant.token_id} of {tenant.company_id} revoked" in revoked.stdout
    assert "warning" not in revoked.stderr
    secret_name, active, revoked_at = _tokens(database, tenant.company_id)[tenant.token_id]
    assert not active and revoked_at is not None

    again = _revoke(tenant.company_id, tenant.token_id)
    assert again.returncode == 0, again.stderr
    assert "already revoked" in again.stdout and "nothing changed" in again.stdout
    # the first revocation's time stands
    assert _tokens(database, tenant.company_id)[tenant.token_id] == (secret_name, False, revoked_at)

    shown = run_cli("tenants", "show", tenant.tenant_id)
    assert f"token  {tenant.token_id} revoked" in shown.stdout
    assert f"token  {new_id} active" in shown.stdout


def test_the_last_active_token_is_kept_unless_forced(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    tenant = make_tenant()
    kept = _revoke(tenant.company_id, tenant.token_id)
    assert kept.returncode == 1
    assert "last active token" in kept.stderr and "--force" in kept.stderr
    assert "add-token" in kept.stderr
    assert _tokens(database, tenant.company_id)[tenant.token_id][1:] == (True, None)

    forced = _revoke(tenant.company_id, tenant.token_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "revoked" in forced.stdout
    assert "no active token left" in forced.stderr
    _, active, revoked_at = _tokens(database, tenant.company_id)[tenant.token_id]
    assert not active and revoked_at is not None


def test_revoking_or_adding_for_what_does_not_exist_is_refused(
    stack: LocalStack, make_tenant: Any
) -> None:
    tenant = make_tenant()
    unknown_token = run_cli(
        "tenants", "revoke-token", "--company-id", tenant.company_id, "--token-id", "toknope00"
    )
    assert unknown_token.returncode == 1
    assert f"company {tenant.company_id} has no token toknope00" in unknown_token.stderr

    before = _secret_files(stack)
    unknown_company = f"COM{uuid.uuid4().hex}"
    added = run_cli(
        "tenants",
        "add-token",
        "--company-id",
        unknown_company,
        "--signing-token",
        "a-token-for-nobody-123",
    )
    assert added.returncode == 1
    assert "is not mapped to any tenant" in added.stderr
    assert _secret_files(stack) == before


def _add(tenant_id: str, company_id: str, *extra: str) -> Any:
    return run_cli(
        "tenants",
        "add",
        "--tenant-id",
        tenant_id,
        "--name",
        "Validated Remodeling",
        "--callrail-company-id",
        company_id,
        "--signing-token",
        "validated-signing-token",
        *extra,
    )


def _company_row(database: Any, company_id: str) -> tuple[Any, ...] | None:
    from google.cloud import spanner

    with database.snapshot() as snapshot:
        rows = list(
            snapshot.read(
                "CallRailCompanies",
                ["CompanyId", "LegacyCompanyId", "CallRailAccountId"],
                spanner.KeySet(keys=[[company_id]]),
            )
        )
    return tuple(rows[0]) if rows else None


def test_a_legacy_company_id_already_used_is_refused_before_any_secret(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    other = make_tenant()
    tenant_id = f"dup-{uuid.uuid4().hex[:6]}"
    before = _secret_files(stack)
    result = _add(
        tenant_id,
        f"COM{uuid.uuid4().hex}",
        "--callrail-account-id",
        "728790660",
        "--legacy-company-id",
        other.legacy_company_id,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        f"legacy company id {other.legacy_company_id} is already used by company "
        f"{other.company_id} of tenant {other.tenant_id}"
    ) in result.stderr
    assert not _tenant_exists(database, tenant_id)
    assert _secret_files(stack) == before


@pytest.mark.parametrize(
    ("account_id", "legacy_id", "message"),
    [
        ("7" * 40, None, "invalid CallRail account id"),
        ("", None, "invalid CallRail account id"),
        ("ACC-728790660", None, "invalid CallRail account id"),
        ("728790660", "COM155920786", "invalid legacy company id"),
        ("728790660", "9" * 33, "invalid legacy company id"),
    ],
)
def test_ids_the_database_would_refuse_are_refused_up_front(
    stack: LocalStack, database: Any, account_id: str, legacy_id: str | None, message: str
) -> None:
    tenant_id = f"bad-{uuid.uuid4().hex[:6]}"
    before = _secret_files(stack)
    extra = ["--callrail-account-id", account_id]
    if legacy_id is not None:
        extra += ["--legacy-company-id", legacy_id]
    result = _add(tenant_id, f"COM{uuid.uuid4().hex}", *extra)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr and "1-32 digits" in result.stderr
    assert not _tenant_exists(database, tenant_id)
    assert _secret_files(stack) == before


def test_an_empty_legacy_company_id_is_stored_as_null(stack: LocalStack, database: Any) -> None:
    company_id = f"COM{uuid.uuid4().hex}"
    result = _add(
        f"nol-{uuid.uuid4().hex[:6]}",
        company_id,
        "--callrail-account-id",
        "728790660",
        "--legacy-company-id",
        "",
    )
    assert result.returncode == 0, result.stderr
    assert _company_row(database, company_id) == (company_id, None, "728790660")
    # a second company without a legacy id is no duplicate of the first
    second = f"COM{uuid.uuid4().hex}"
    again = _add(
        f"nol-{uuid.uuid4().hex[:6]}",
        second,
        "--callrail-account-id",
        "728790660",
        "--legacy-company-id",
        "",
    )
    assert again.returncode == 0, again.stderr
    assert _company_row(database, second) == (second, None, "728790660")


class _RacedDatabase:
    """The emulator's database, where another onboarding commits the same legacy id between
    the checks and this onboarding's commit."""

    def __init__(self, database: Any, rival: Callable[[], None]) -> None:
        self._database = database
        self._rival = rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)

    def batch(self) -> Any:
        self._rival()
        return self._database.batch()


def test_a_commit_refused_after_the_secrets_names_them(
    stack: LocalStack, make_tenant: Any, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from callpipe.cli import tenants
    from callpipe.tenancy import TenantRepository

    legacy_id = str(uuid.uuid4().int % 10**12)
    raced = _RacedDatabase(database, lambda: make_tenant(legacy_company_id=legacy_id))
    monkeypatch.setattr(tenants, "_repository", lambda: TenantRepository(raced))
    tenant_id = f"race-{uuid.uuid4().hex[:6]}"
    company_id = f"COM{uuid.uuid4().hex}"
    result = CliRunner().invoke(
        tenants.app,
        [
            "add",
            "--tenant-id",
            tenant_id,
            "--name",
            "Raced",
            "--callrail-account-id",
            "728790660",
            "--callrail-company-id",
            company_id,
            "--legacy-company-id",
            legacy_id,
            "--signing-token",
            "raced-signing-token",
            "--api-key-env",
            "RACED_API_KEY",
        ],
        env={"RACED_API_KEY": "raced-api-key"},
    )
    assert result.exit_code == 1
    assert not _tenant_exists(database, tenant_id)
    # named after the tenant, the API key's secret may be the winner's: never "delete it"
    assert f"callrail-api-key-{tenant_id}" not in result.stderr
    ours = [
        name
        for name in _secret_files(stack)
        if name.startswith(f"callrail-webhook-token-{company_id.lower()}-")
    ]
    assert len(ours) == 1
    assert ours[0] in result.stderr
    assert "another change wrote the same tenant, company or legacy id meanwhile" in result.stderr
    assert "Nothing was written to Spanner" in result.stderr
    assert "raced-signing-token" not in result.output


@pytest.mark.parametrize(
    ("source", "given", "refusal"),
    [
        ("environment", "   ", "empty"),
        ("prompt", "   ", "empty"),
        ("environment", "first-key second-key", "visible ASCII"),
        ("prompt", 'Token token="pasted-with-its-header"', "visible ASCII"),
    ],
)
def test_an_empty_or_mangled_api_key_does_not_replace_the_tenants_key(
    stack: LocalStack, make_tenant: Any, database: Any, source: str, given: str, refusal: str
) -> None:
    from callpipe.apikeys import TenantApiKeys
    from callpipe.secrets import LocalSecretStore

    tenant = make_tenant(api_key="the-working-api-key")
    if source == "environment":
        env = {**os.environ, "BLANK_CALLRAIL_KEY": given}
        result = run_cli(
            "tenants",
            "set-api-key",
            "--tenant-id",
            tenant.tenant_id,
            "--api-key-env",
            "BLANK_CALLRAIL_KEY",
            env=env,
        )
    else:
        result = run_cli(
            "tenants", "set-api-key", "--tenant-id", tenant.tenant_id, input=f"{given}\n"
        )
    assert result.returncode == 1
    assert refusal in result.stderr and "nothing was changed" in result.stderr
    keys = TenantApiKeys(database, LocalSecretStore(stack.secrets_dir))
    assert keys.key_for(tenant.tenant_id) == "the-working-api-key"


def test_an_api_key_written_to_its_secret_by_hand_is_read_trimmed_or_refused_for_good(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    """Past the CLI: `echo KEY | gcloud secrets versions add` leaves a newline, which would
    make every request unsendable (taken for an outage and retried for hours)."""
    from callpipe.apikeys import MissingApiKey, TenantApiKeys
    from callpipe.secrets import LocalSecretStore, api_key_secret_name

    tenant = make_tenant(api_key="the-working-api-key")
    store = LocalSecretStore(stack.secrets_dir)
    store.put(api_key_secret_name(tenant.tenant_id), "the-rotated-api-key\n")
    assert TenantApiKeys(database, store).key_for(tenant.tenant_id) == "the-rotated-api-key"

    store.put(api_key_secret_name(tenant.tenant_id), "the rotated api key")
    with pytest.raises(MissingApiKey, match="set-api-key") as refused:
        TenantApiKeys(database, store).key_for(tenant.tenant_id)
    assert "rotated api key" not in str(refused.value)  # the value is a secret


def test_a_token_is_revoked_by_the_legacy_company_id_too(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    """add-token takes the legacy numeric id; revoke-token must find the same company."""
    tenant = make_tenant()
    revoked = _revoke(tenant.legacy_company_id, tenant.token_id, "--force")
    assert revoked.returncode == 0, revoked.stderr
    assert not _tokens(database, tenant.company_id)[tenant.token_id][1]
