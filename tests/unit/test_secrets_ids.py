"""The local secret store, secret names, and the identifier validators."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from callpipe.ids import InvalidIdentifier, check_resource_id, check_tenant_id
from callpipe.messages import CallReceived
from callpipe.secrets import (
    LocalSecretStore,
    SecretNotFound,
    api_key_secret_name,
    check_secret_name,
    signing_token_secret_name,
)
from tests.unit.conftest import make_call_received


def test_put_then_get(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    store.put("callrail-webhook-token-com1-tok1", "s3cr3t value\nwith newline")
    assert store.get("callrail-webhook-token-com1-tok1") == "s3cr3t value\nwith newline"


def test_put_overwrites(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path)
    store.put("name", "one")
    store.put("name", "two")
    assert store.get("name") == "two"


def test_secret_file_is_private_and_no_temp_files_remain(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    store = LocalSecretStore(root)
    store.put("callrail-api-key-acme", "key")
    assert stat.S_IMODE((root / "callrail-api-key-acme").stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) & 0o077 == 0
    assert [p.name for p in root.iterdir()] == ["callrail-api-key-acme"]


def test_two_stores_on_one_directory_share_secrets(tmp_path: Path) -> None:
    LocalSecretStore(tmp_path).put("shared", "value")
    assert LocalSecretStore(tmp_path).get("shared") == "value"


def test_missing_secret_raises_secret_not_found(tmp_path: Path) -> None:
    with pytest.raises(SecretNotFound, match="nope"):
        LocalSecretStore(tmp_path).get("nope")
    with pytest.raises(SecretNotFound):
        LocalSecretStore(tmp_path / "does-not-exist").get("nope")


@pytest.mark.parametrize(
    "name", ["", "../etc/passwd", "a/b", "..", "a b", "a.b", "x" * 256, "name\n", "ñame"]
)
def test_invalid_secret_names_are_rejected(tmp_path: Path, name: str) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    with pytest.raises(ValueError, match="invalid secret name"):
        store.put(name, "value")
    with pytest.raises(ValueError, match="invalid secret name"):
        store.get(name)
    assert not (tmp_path / "passwd").exists()
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "secrets"])


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 255])
def test_valid_secret_names(name: str) -> None:
    assert check_secret_name(name) == name


def test_signing_token_secret_name_format() -> None:
    assert (
        signing_token_secret_name("COM4c9e2b7a1f3d48e6b0a5c7d9e2f1a3b4", "tok1a2b3c4d")
        == "callrail-webhook-token-com4c9e2b7a1f3d48e6b0a5c7d9e2f1a3b4-tok1a2b3c4d"
    )


@pytest.mark.parametrize("company", ["../COM1", "COM 1", "COM/1"])
def test_signing_token_secret_name_refuses_unsafe_company_ids(company: str) -> None:
    with pytest.raises(ValueError, match="invalid secret name"):
        signing_token_secret_name(company, "tok1")


def test_api_key_secret_name_format() -> None:
    assert api_key_secret_name("acme-dental") == "callrail-api-key-acme-dental"


# -- identifiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant", ["a", "acme", "acme-dental", "a1", "0-9", "a--b", "a" * 63, "demo"]
)
def test_valid_tenant_ids(tenant: str) -> None:
    assert check_tenant_id(tenant) == tenant


@pytest.mark.parametrize(
    "tenant",
    [
        "",
        "Acme",
        "-acme",
        "acme-",
        "acme_dental",
        "acme.dental",
        "a" * 64,
        "../x",
        "..",
        "a/b",
        "acme\n",
        " acme",
        "acmé",
        "tenants/other",
    ],
)
def test_invalid_tenant_ids(tenant: str) -> None:
    with pytest.raises(InvalidIdentifier, match="invalid tenant id"):
        check_tenant_id(tenant)


@pytest.mark.parametrize(
    "resource", ["CALf3a91c2e7b5d4a08e6c1b9d7a2e4f530", "main", "a_b-C", "x" * 64, "2931847562"]
)
def test_valid_resource_ids(resource: str) -> None:
    assert check_resource_id(resource) == resource


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "..",
        "../x",
        "CAL1/../../other-tenant",
        "a/b",
        "a\\b",
        "x" * 65,
        "CAL123\n",
        "a b",
        "a.b",
        "%2e%2e",
        "CAL\x00",
    ],
)
def test_invalid_resource_ids(resource: str) -> None:
    with pytest.raises(InvalidIdentifier, match="invalid id"):
        check_resource_id(resource)


def test_invalid_id_error_is_bounded() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        check_resource_id("x" * 10_000)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "../other"),
        ("office_id", "a/b"),
        ("call_id", "../../x"),
        ("tenant_id", "UPPER"),
    ],
)
def test_messages_refuse_unsafe_ids(field: str, value: str) -> None:
    data = make_call_received().model_dump()
    data[field] = value
    with pytest.raises(ValidationError):
        CallReceived.model_validate(data)
