"""``callpipe tenants``: the signing tokens an operator gives are checked the same way by
``add`` and ``add-token`` before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from callpipe.cli import tenants
from callpipe.tenancy import OnboardingRequest
from tests.unit.conftest import COMPANY_ID, DictSecretStore


class FakeRepository:
    """What the commands hand to Spanner, kept instead."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str]] = []
        self.onboarded: list[OnboardingRequest] = []

    def add_signing_token(self, company_id: str, token: str, secrets: Any) -> str:
        self.added.append((company_id, token))
        return "tok00000001"

    def onboard(self, request: OnboardingRequest, secrets: Any) -> list[str]:
        self.onboarded.append(request)
        return ["tok00000001"]


@pytest.fixture
def repository(monkeypatch: pytest.MonkeyPatch) -> FakeRepository:
    repository = FakeRepository()
    monkeypatch.setattr(tenants, "_repository", lambda: repository)
    # the secret store that goes with the (fake) database; the backend check has its tests
    monkeypatch.setattr(tenants, "_secret_store", DictSecretStore)
    monkeypatch.delenv("CALLPIPE_SIGNING_TOKEN", raising=False)
    return repository


def add_token(token: str) -> Any:
    return CliRunner().invoke(
        tenants.app, ["add-token", "--company-id", COMPANY_ID, "--signing-token", token]
    )


def add_tenant(token: str) -> Any:
    return CliRunner().invoke(
        tenants.app,
        [
            "add",
            "--tenant-id",
            "acme",
            "--name",
            "Acme",
            "--callrail-account-id",
            "512345678",
            "--callrail-company-id",
            COMPANY_ID,
            "--signing-token",
            token,
        ],
    )


@pytest.mark.parametrize("command", [add_token, add_tenant], ids=["add-token", "add"])
def test_a_pasted_token_is_stored_without_its_surrounding_whitespace(
    repository: FakeRepository, command: Any
) -> None:
    result = command("  3f2a9c7e5b1d48e6\n")

    assert result.exit_code == 0, result.output
    stored = [token for _, token in repository.added] + [
        token for request in repository.onboarded for token in request.signing_tokens
    ]
    assert stored == ["3f2a9c7e5b1d48e6"]


@pytest.mark.parametrize("command", [add_token, add_tenant], ids=["add-token", "add"])
@pytest.mark.parametrize("token", ["short", "   abc    ", "       "])
def test_a_token_shorter_than_8_characters_is_refused_before_anything_is_stored(
    repository: FakeRepository, command: Any, token: str
) -> None:
    result = command(token)

    assert result.exit_code == 1
    assert "at least 8 characters" in result.output
    assert repository.added == [] and repository.onboarded == []
