"""Building the adapters from settings, once per process (after gunicorn forks)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from callpipe.config import SecretBackend, Settings
from callpipe.publishing import PubSubPublisher
from callpipe.secrets import LocalSecretStore, SecretManagerStore, SecretStore

T = TypeVar("T")


def build_secret_store(settings: Settings) -> SecretStore:
    if settings.secret_backend is SecretBackend.SECRET_MANAGER:
        return SecretManagerStore(settings.google_cloud_project)
    return LocalSecretStore(settings.local_secrets_dir)


def backend_mismatch(settings: Settings) -> str | None:
    """Why the secret store does not go with the Spanner database, or None when it does.

    Spanner rows name secrets: a production row naming a secret that exists only in a local
    folder (or an emulator row naming one in Secret Manager) makes every webhook of that
    company fail verification. The secret store follows ENVIRONMENT, Spanner follows
    SPANNER_EMULATOR_HOST, so nothing else keeps the two together.
    """
    local_spanner = bool(settings.spanner_emulator_host)
    local_secrets = settings.secret_backend is SecretBackend.LOCAL
    if local_spanner == local_secrets:
        return None
    if local_secrets:
        return (
            f"Spanner is {settings.spanner_database_path} (SPANNER_EMULATOR_HOST is not set) "
            f"but secrets would go to the local folder {settings.local_secrets_dir}: set "
            "ENVIRONMENT=production (or SECRET_BACKEND=secret-manager) to use Secret Manager, "
            "or set SPANNER_EMULATOR_HOST to use the local emulator"
        )
    return (
        f"Spanner is the emulator at {settings.spanner_emulator_host} but secrets would go to "
        f"Secret Manager in {settings.google_cloud_project}: unset SPANNER_EMULATOR_HOST to "
        "use the real database, or set SECRET_BACKEND=local (and ENVIRONMENT other than "
        "production) to use the local stack's secrets"
    )


def build_publisher(settings: Settings) -> PubSubPublisher:
    return PubSubPublisher(
        settings.google_cloud_project,
        batch_max_latency_seconds=settings.publish_batch_max_latency_ms / 1000.0,
        timeout_seconds=settings.publish_timeout_seconds,
    )


class Lazy(Generic[T]):
    """A value built on first use, once per process, safely from several threads."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def peek(self) -> T | None:
        """The value if it is built already, without building it."""
        return self._value

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
        return self._value
