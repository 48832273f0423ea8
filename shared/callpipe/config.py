"""Runtime configuration, loaded once per process from the environment.

Domain code never reads ``os.environ``: handlers build a :class:`Settings` once and pass
the values they need down explicitly.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from callpipe.ratelimit import RateLimit


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
    tenant_cache_stale_seconds: float = Field(
        default=900.0, ge=0, alias="TENANT_CACHE_STALE_SECONDS"
    )
    # Quarantine budgets, per instance, by who can send the webhook (see README, intake).
    quarantine_max_per_minute: int = Field(default=120, ge=0, alias="QUARANTINE_MAX_PER_MINUTE")
    quarantine_unusable_max_per_minute: int = Field(
        default=600, ge=0, alias="QUARANTINE_UNUSABLE_MAX_PER_MINUTE"
    )
    quarantine_outage_max_per_minute: int = Field(
        default=1200, ge=0, alias="QUARANTINE_OUTAGE_MAX_PER_MINUTE"
    )
    quarantine_unknown_max_body_bytes: int = Field(
        default=262_144, ge=1024, alias="QUARANTINE_UNKNOWN_MAX_BODY_BYTES"
    )
    publish_timeout_seconds: float = Field(default=10.0, gt=0, alias="PUBLISH_TIMEOUT_SECONDS")
    publish_batch_max_latency_ms: float = Field(
        default=0.0, ge=0, alias="PUBLISH_BATCH_MAX_LATENCY_MS"
    )

    calls_received_topic: str = Field(default="calls.received", alias="CALLS_RECEIVED_TOPIC")
    calls_registered_topic: str = Field(default="calls.registered", alias="CALLS_REGISTERED_TOPIC")
    quarantine_topic: str = Field(default="webhooks.quarantine", alias="QUARANTINE_TOPIC")
    calls_fetched_topic: str = Field(default="calls.fetched", alias="CALLS_FETCHED_TOPIC")
    recordings_topic: str = Field(default="recordings.stored", alias="RECORDINGS_TOPIC")
    calls_transcribed_topic: str = Field(
        default="calls.transcribed", alias="CALLS_TRANSCRIBED_TOPIC"
    )
    calls_analyzed_topic: str = Field(default="calls.analyzed", alias="CALLS_ANALYZED_TOPIC")
    calls_completed_topic: str = Field(default="calls.completed", alias="CALLS_COMPLETED_TOPIC")
    reconcile_topic: str = Field(default="reconcile.requested", alias="RECONCILE_TOPIC")
    dead_letter_topic: str | None = Field(default=None, alias="DEAD_LETTER_TOPIC")
    max_delivery_attempts: int = Field(default=5, ge=1, alias="MAX_DELIVERY_ATTEMPTS")

    callrail_api_base_url: str = Field(
        default="https://api.callrail.com/v3", alias="CALLRAIL_API_BASE_URL"
    )
    callrail_rate_limit_per_minute: int = Field(
        default=120, ge=1, alias="CALLRAIL_RATE_LIMIT_PER_MINUTE"
    )
    callrail_rate_limit_burst: int = Field(default=5, ge=1, alias="CALLRAIL_RATE_LIMIT_BURST")
    # CallRail's documented budget per account; 0 for none.
    callrail_rate_limit_per_hour: int = Field(
        default=1000, ge=0, alias="CALLRAIL_RATE_LIMIT_PER_HOUR"
    )
    callrail_rate_limit_per_day: int = Field(
        default=10000, ge=0, alias="CALLRAIL_RATE_LIMIT_PER_DAY"
    )
    callrail_max_attempts: int = Field(default=4, ge=1, le=10, alias="CALLRAIL_MAX_ATTEMPTS")
    callrail_timeout_seconds: float = Field(default=20.0, gt=0, alias="CALLRAIL_TIMEOUT_SECONDS")

    # The scheduled reconciliation (the reconcile step): how far back it looks, how many
    # missing calls it queues per tenant and run, how long after a call's end it waits.
    reconcile_lookback_hours: int = Field(
        default=48, ge=1, le=31 * 24, alias="RECONCILE_LOOKBACK_HOURS"
    )
    reconcile_max_calls_per_run: int = Field(default=200, ge=0, alias="RECONCILE_MAX_CALLS_PER_RUN")
    reconcile_settle_minutes: int = Field(
        default=30, ge=0, le=24 * 60, alias="RECONCILE_SETTLE_MINUTES"
    )

    recording_allowed_hosts: str = Field(
        default="api.callrail.com,app.callrail.com,*.callrail.com",
        alias="RECORDING_ALLOWED_HOSTS",
    )
    recording_insecure_hosts: str = Field(default="", alias="RECORDING_INSECURE_HOSTS")
    recording_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, alias="RECORDING_MAX_BYTES")
    recording_download_timeout_seconds: float = Field(
        default=120.0, gt=0, alias="RECORDING_DOWNLOAD_TIMEOUT_SECONDS"
    )
    download_max_attempts: int = Field(default=4, ge=1, le=4, alias="DOWNLOAD_MAX_ATTEMPTS")

    speech_engine: str | None = Field(default=None, alias="SPEECH_ENGINE")
    speech_to_text_model: str = Field(default="chirp_3", alias="SPEECH_TO_TEXT_MODEL")
    speech_language: str = Field(default="en-US", alias="SPEECH_LANGUAGE")
    speech_location: str = Field(default="us", alias="SPEECH_LOCATION")
    enable_diarization: bool = Field(default=True, alias="ENABLE_DIARIZATION")
    speech_max_speakers: int = Field(default=2, ge=1, le=6, alias="SPEECH_MAX_SPEAKERS")
    # Must stay under the transcribe function's timeout (its push subscription's ack
    # deadline, 600 s at most): an instance still waiting then is killed
    # before the step can record or count the failure.
    speech_batch_timeout_seconds: float = Field(
        default=480.0, gt=0, alias="SPEECH_BATCH_TIMEOUT_SECONDS"
    )
    local_whisper_model: str = Field(default="base", alias="LOCAL_WHISPER_MODEL")

    analysis_engine: str | None = Field(default=None, alias="ANALYSIS_ENGINE")
    vertex_ai_project: str | None = Field(default=None, alias="VERTEX_AI_PROJECT")
    vertex_ai_location: str = Field(default="us-central1", alias="VERTEX_AI_LOCATION")
    vertex_ai_model: str = Field(default="gemini-2.5-flash", alias="VERTEX_AI_MODEL")
    analysis_max_transcript_chars: int = Field(
        default=24_000, ge=1000, alias="ANALYSIS_MAX_TRANSCRIPT_CHARS"
    )
    # None (set to an empty value) sends no thinking setting, for models that take none;
    # 24,576 is the most the 2.5 Flash models accept.
    vertex_ai_thinking_budget: int | None = Field(
        default=1024, ge=-1, le=24_576, alias="VERTEX_AI_THINKING_BUDGET"
    )

    # All Gemini calls and waits of one analysis; below analyze's 300 s ack deadline, which
    # must also cover reading the call's context and recording the outcome.
    @field_validator("vertex_ai_thinking_budget", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    analysis_time_budget_seconds: float = Field(
        default=240.0, ge=10, le=280, alias="ANALYSIS_TIME_BUDGET_SECONDS"
    )

    # Read by the Storage client itself; the API also needs it to hand out playable URLs.
    storage_emulator_host: str | None = Field(default=None, alias="STORAGE_EMULATOR_HOST")
    # Read by the Pub/Sub client itself; intake's asyncio publisher opens its own channel.
    pubsub_emulator_host: str | None = Field(default=None, alias="PUBSUB_EMULATOR_HOST")
    # Read by the Spanner client itself; the CLI checks that the secret store goes with it.
    spanner_emulator_host: str | None = Field(default=None, alias="SPANNER_EMULATOR_HOST")

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

    @model_validator(mode="after")
    def _no_insecure_hosts_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION and self.recording_insecure_hosts.strip():
            raise ValueError(
                "RECORDING_INSECURE_HOSTS is for the local CallRail simulator only and must be "
                "empty in production"
            )
        return self

    @model_validator(mode="after")
    def _callrail_budgets(self) -> Settings:
        try:  # refused at start, not when a step first calls CallRail
            self.callrail_rate_limit()
        except ValueError as error:
            raise ValueError(
                f"CALLRAIL_RATE_LIMIT_PER_HOUR/_PER_DAY: {error}; 0 means no budget"
            ) from None
        return self

    def callrail_rate_limit(self) -> RateLimit:
        """The shared CallRail rate limit these settings describe."""
        return RateLimit(
            per_minute=self.callrail_rate_limit_per_minute,
            burst=self.callrail_rate_limit_burst,
            per_hour=self.callrail_rate_limit_per_hour or None,
            per_day=self.callrail_rate_limit_per_day or None,
        )

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
