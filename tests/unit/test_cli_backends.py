"""The CLI never pairs a real Spanner database with local secrets, nor the emulator with
Secret Manager: rows would name secrets that the pipeline reading them cannot find."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from callpipe.cli import tenants
from callpipe.config import Settings


@pytest.fixture
def production_spanner_local_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reviewer's case: only GOOGLE_CLOUD_PROJECT set, no emulator, no ENVIRONMENT."""
    for name in ("SPANNER_EMULATOR_HOST", "ENVIRONMENT", "SECRET_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "acme-prod")
    secrets_dir = tmp_path / "secrets"
    monkeypatch.setenv("LOCAL_SECRETS_DIR", str(secrets_dir))
    # Were Spanner reached anyway, fail fast instead of asking the metadata server.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    return secrets_dir


@pytest.mark.parametrize(
    "args",
    [
        [
            "add",
            "--tenant-id",
            "acme",
            "--name",
            "Acme",
            "--callrail-account-id",
            "728790660",
            "--callrail-company-id",
            "COMabc123",
            "--signing-token",
            "a-long-signing-token",
        ],
        ["add-token", "--company-id", "COMabc123", "--signing-token", "a-long-signing-token"],
        ["set-api-key", "--tenant-id", "acme"],
    ],
    ids=["add", "add-token", "set-api-key"],
)
def test_writes_to_production_spanner_with_local_secrets_are_refused(
    production_spanner_local_secrets: Path, args: list[str]
) -> None:
    result = CliRunner().invoke(tenants.app, args, input="an-api-key-value\n")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr
    assert "projects/acme-prod/instances/callpipe/databases/callpipe" in message
    assert "ENVIRONMENT=production" in message and "SPANNER_EMULATOR_HOST" in message
    assert not production_spanner_local_secrets.exists()
    assert "a-long-signing-token" not in result.output


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "SPANNER_EMULATOR_HOST is not set"),
        ({"ENVIRONMENT": "production"}, None),
        ({"SECRET_BACKEND": "secret-manager"}, None),
        ({"SPANNER_EMULATOR_HOST": "127.0.0.1:9010"}, None),
        ({"SPANNER_EMULATOR_HOST": "127.0.0.1:9010", "ENVIRONMENT": "test"}, None),
        (
            {"SPANNER_EMULATOR_HOST": "127.0.0.1:9010", "ENVIRONMENT": "production"},
            "unset SPANNER_EMULATOR_HOST",
        ),
        (
            {"SPANNER_EMULATOR_HOST": "127.0.0.1:9010", "SECRET_BACKEND": "secret-manager"},
            "set SECRET_BACKEND=local",
        ),
        (
            {"ENVIRONMENT": "production", "SECRET_BACKEND": "local"},
            "SPANNER_EMULATOR_HOST is not set",
        ),
    ],
)
def test_backend_mismatch(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str | None
) -> None:
    from callpipe.wiring import backend_mismatch

    # only what the case sets: what other tests' stacks export (RECORDING_INSECURE_HOSTS for
    # the CallRail simulator) is refused in production and would fail Settings() itself
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = backend_mismatch(Settings())
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:", "127.0.0.1:spanner", "[::1]:99999"])
def test_an_emulator_address_without_a_port_is_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SPANNER_EMULATOR_HOST", value)
    result = CliRunner().invoke(tenants.app, ["list"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "is not host:port: set it like 127.0.0.1:9010" in result.stderr
