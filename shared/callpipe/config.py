"""Runtime configuration, loaded once per process from the environment.

Domain code never reads ``os.environ``: handlers build a :class:`Settings` once and pass
the values they need down explicitly.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


class SecretBackend(StrEnum):
    LOCAL = "local"
    SECRET_MANAGER = "secret-manager"  # noqa: S105 - a backend name, not a secret


class Settings(BaseSettings):
    """Every environment variable the functions and the CLI read (see README, Configuration)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    environment: Environment = Field(default=Environment.LOCAL, alias="ENVIRONMENT")
    google_cloud_project: str = Field(default="callpipe-local", alias="GOOGLE_CLOUD_PROJECT")
    google_cloud_location: str = Field(default="us-central1", alias="GOOGLE_CLOUD_LOCATION")
    spanner_instance: str = Field(default="callpipe", alias="SPANNER_INSTANCE")
    spanner_database: str = Field(default="callpipe", alias="SPANNER_DATABASE")
    audio_storage_bucket: str = Field(default="callpipe-recordings", alias="AUDIO_STORAGE_BUCKET")
    webhook_archive_bucket: str = Field(default="callpipe-webhooks", alias="WEBHOOK_ARCHIVE_BUCKET")
    retention_days: int = Field(default=2555, ge=1, alias="RETENTION_DAYS")

    secret_backend: SecretBackend | None = Field(default=None, alias="SECRET_BACKEND")
    local_secrets_dir: Path = Field(default=Path(".local/secrets"), alias="LOCAL_SECRETS_DIR")

    webhook_max_body_bytes: int = Field(default=1_048_576, ge=1024, alias="WEBHOOK_MAX_BODY_BYTES")
    webhook_timestamp_tolerance_seconds: int = Field(
        default=86_400, ge=60, alias="WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS"
    )
    tenant_cache_ttl_seconds: float = Field(default=60.0, ge=0, alias="TENANT_CACHE_TTL_SECONDS")
    unknown_company_cache_ttl_seconds: float = Field(
        default=10.0, ge=0, alias="UNKNOWN_COMPANY_CACHE_TTL_SECONDS"
    )
    quarantine_max_per_minute: int = Field(default=120, ge=0, alias="QUARANTINE_MAX_PER_MINUTE")
    publish_timeout_seconds: float = Field(default=10.0, gt=0, alias="PUBLISH_TIMEOUT_SECONDS")
    publish_batch_max_latency_ms: float = Field(
        default=2.0, ge=0, alias="PUBLISH_BATCH_MAX_LATENCY_MS"
    )

    calls_received_topic: str = Field(default="calls.received", alias="CALLS_RECEIVED_TOPIC")
    calls_registered_topic: str = Field(default="calls.registered", alias="CALLS_REGISTERED_TOPIC")
    quarantine_topic: str = Field(default="webhooks.quarantine", alias="QUARANTINE_TOPIC")
    dead_letter_topic: str | None = Field(default=None, alias="DEAD_LETTER_TOPIC")

    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    port: int = Field(default=8080, alias="PORT")

    @model_validator(mode="after")
    def _default_secret_backend(self) -> Settings:
        if self.secret_backend is None:
            backend = (
                SecretBackend.SECRET_MANAGER
                if self.environment is Environment.PRODUCTION
                else SecretBackend.LOCAL
            )
            object.__setattr__(self, "secret_backend", backend)
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def spanner_database_path(self) -> str:
        return (
            f"projects/{self.google_cloud_project}/instances/{self.spanner_instance}"
            f"/databases/{self.spanner_database}"
        )

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.google_cloud_project}/topics/{topic}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
