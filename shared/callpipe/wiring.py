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
