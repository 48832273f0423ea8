"""A tenant's CallRail API key: the secret's name is on the Tenants row, the value in the
secret store. Both are cached briefly, so a rotated key is picked up within the TTL."""

from __future__ import annotations

from typing import Any

from callpipe.cache import TTLCache
from callpipe.secrets import SecretNotFound, SecretStore


class MissingApiKey(LookupError):
    """The tenant has no usable CallRail API key (permanent until an operator sets one)."""


class InvalidApiKey(ValueError):
    pass


def api_key_from_input(value: str) -> str:
    """A CallRail API key as an operator gave it, ready to store. It travels in an HTTP
    header (``Authorization: Token token="…"``): a pasted newline around it is dropped, and
    a key with spaces, quotes or control characters inside is refused here rather than by
    every fetch after it replaced a working key."""
    key = value.strip()
    if not key:
        raise InvalidApiKey("the CallRail API key is empty")
    if not all("!" <= char <= "~" and char not in '"\\' for char in key):
        raise InvalidApiKey(
            "the CallRail API key may hold only visible ASCII characters other than quotes "
            "and backslashes (is it the right value?)"
        )
    return key


class TenantApiKeys:
    def __init__(self, database: Any, secrets: SecretStore, ttl_seconds: float = 60.0) -> None:
        self._db = database
        self._secrets = secrets
        self._cache: TTLCache[str, str] = TTLCache(ttl_seconds)

    def forget(self, tenant_id: str) -> None:
        """Drop the cached key: CallRail refused it, and it may have been rotated since."""
        self._cache.invalidate(tenant_id)

    def key_for(self, tenant_id: str) -> str:
        hit, value = self._cache.get(tenant_id)
        if hit and value:
            return value
        from google.cloud import spanner

        with self._db.snapshot() as snapshot:
            rows = list(
                snapshot.read(
                    "Tenants", ["CallRailApiKeySecret"], spanner.KeySet(keys=[[tenant_id]])
                )
            )
        if not rows:
            raise MissingApiKey(f"tenant {tenant_id} does not exist")
        secret_name = rows[0][0]
        if not secret_name:
            raise MissingApiKey(
                f"tenant {tenant_id} has no CallRail API key; set one with "
                "`callpipe tenants set-api-key`"
            )
        try:
            key = api_key_from_input(self._secrets.get(secret_name))
        except SecretNotFound:
            raise MissingApiKey(
                f"the CallRail API key secret {secret_name} of tenant {tenant_id} is missing"
            ) from None
        except InvalidApiKey as error:
            # A value written to the secret by hand, past the CLI's check (the newline of
            # `echo KEY | gcloud secrets versions add` is only stripped): sent as it is, it
            # could not even make a request, and every call would wait out an "outage".
            raise MissingApiKey(
                f"the CallRail API key in secret {secret_name} of tenant {tenant_id} is not "
                f"usable: {error}; set it again with `callpipe tenants set-api-key`"
            ) from None
        self._cache.put(tenant_id, key)
        return key
