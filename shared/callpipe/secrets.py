"""The secret store port: CallRail signing tokens and API keys live here, never in Spanner.

Production uses Secret Manager; local runs and tests use a directory of files (mode 0600)
that every local process shares. Secret values never appear in logs, errors or reprs.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_SECRET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class SecretNotFound(LookupError):
    pass


class SecretStoreUnavailable(RuntimeError):
    pass


class SecretStore(Protocol):
    def get(self, name: str) -> str: ...

    def put(self, name: str, value: str) -> None: ...


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name):
        raise ValueError(f"invalid secret name {name!r}")
    return name


def signing_token_secret_name(company_id: str, token_id: str) -> str:
    return check_secret_name(f"callrail-webhook-token-{company_id.lower()}-{token_id}")


def api_key_secret_name(tenant_id: str) -> str:
    return check_secret_name(f"callrail-api-key-{tenant_id}")


class LocalSecretStore:
    """Secrets as files under one directory, for the local stack and tests."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, name: str) -> str:
        path = self._root / check_secret_name(name)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretNotFound(f"secret {name} does not exist in the local store") from None

    def put(self, name: str, value: str) -> None:
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self._root / check_secret_name(name)
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


READ_TIMEOUT_SECONDS = 5.0


class SecretManagerStore:
    """Google Secret Manager: one secret per token/key, the newest version is the value."""

    def __init__(self, project: str, client: object | None = None) -> None:
        from google.cloud import secretmanager

        self._project = project
        self._client = client or secretmanager.SecretManagerServiceClient()

    def get(self, name: str) -> str:
        from google.api_core import exceptions

        path = f"projects/{self._project}/secrets/{check_secret_name(name)}/versions/latest"
        try:
            # bounded like the directory's Spanner lookup: a webhook may be waiting on it
            response = self._client.access_secret_version(  # type: ignore[attr-defined]
                request={"name": path}, timeout=READ_TIMEOUT_SECONDS
            )
        except exceptions.NotFound:
            raise SecretNotFound(f"secret {name} does not exist in Secret Manager") from None
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as error:
            raise SecretStoreUnavailable(
                f"Secret Manager did not answer for {name}: {error.__class__.__name__}"
            ) from None
        return str(response.payload.data.decode("utf-8"))

    def put(self, name: str, value: str) -> None:
        from google.api_core import exceptions

        parent = f"projects/{self._project}"
        secret_path = f"{parent}/secrets/{check_secret_name(name)}"
        try:
            self._client.create_secret(  # type: ignore[attr-defined]
                request={
                    "parent": parent,
                    "secret_id": name,
                    "secret": {"replication": {"automatic": {}}, "labels": {"app": "callpipe"}},
                }
            )
        except exceptions.AlreadyExists:
            pass
        self._client.add_secret_version(  # type: ignore[attr-defined]
            request={"parent": secret_path, "payload": {"data": value.encode("utf-8")}}
        )
