"""Settings: defaults, environment aliases, and the secret backend per environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from callpipe.config import Environment, SecretBackend, Settings, get_settings

ALIASES = [f.alias for f in Settings.model_fields.values() if f.alias]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests see only the variables they set, whatever the machine exports."""
    for alias in ALIASES:
        monkeypatch.delenv(alias, raising=False)
        monkeypatch.delenv(alias.lower(), raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    s = Settings()
    assert s.environment is Environment.LOCAL
    assert s.google_cloud_project == "callpipe-local"
    assert s.calls_received_topic == "calls.received"
    assert s.calls_registered_topic == "calls.registered"
    assert s.quarantine_topic == "webhooks.quarantine"
    assert s.dead_letter_topic is None
    assert s.webhook_max_body_bytes == 1_048_576
    assert s.webhook_timestamp_tolerance_seconds == 86_400
    assert s.tenant_cache_ttl_seconds == 60.0
    assert s.unknown_company_cache_ttl_seconds == 10.0
    assert s.unknown_company_cache_ttl_seconds < s.tenant_cache_ttl_seconds
    assert s.quarantine_max_per_minute == 120
    assert s.quarantine_unusable_max_per_minute == 600
    assert s.quarantine_outage_max_per_minute == 1200
    assert s.quarantine_unknown_max_body_bytes == 262_144
    assert s.local_secrets_dir == Path(".local/secrets")
    assert s.port == 8080
    assert not s.is_production


def test_every_field_has_an_upper_case_env_alias() -> None:
    for name, field in Settings.model_fields.items():
        assert field.alias == name.upper(), name


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("GOOGLE_CLOUD_PROJECT", "acme-prod", "google_cloud_project", "acme-prod"),
        ("CALLS_RECEIVED_TOPIC", "calls.in", "calls_received_topic", "calls.in"),
        ("QUARANTINE_TOPIC", "q", "quarantine_topic", "q"),
        ("DEAD_LETTER_TOPIC", "calls.received.dlq", "dead_letter_topic", "calls.received.dlq"),
        ("WEBHOOK_MAX_BODY_BYTES", "2048", "webhook_max_body_bytes", 2048),
        ("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", "600", "webhook_timestamp_tolerance_seconds", 600),
        ("TENANT_CACHE_TTL_SECONDS", "2.5", "tenant_cache_ttl_seconds", 2.5),
        ("QUARANTINE_MAX_PER_MINUTE", "0", "quarantine_max_per_minute", 0),
        ("QUARANTINE_UNUSABLE_MAX_PER_MINUTE", "30", "quarantine_unusable_max_per_minute", 30),
        ("QUARANTINE_OUTAGE_MAX_PER_MINUTE", "0", "quarantine_outage_max_per_minute", 0),
        ("QUARANTINE_UNKNOWN_MAX_BODY_BYTES", "4096", "quarantine_unknown_max_body_bytes", 4096),
        ("LOCAL_SECRETS_DIR", "/tmp/s", "local_secrets_dir", Path("/tmp/s")),
        ("PORT", "9000", "port", 9000),
        ("spanner_instance", "lowercase-works", "spanner_instance", "lowercase-works"),
    ],
)
def test_environment_aliases(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBHOOK_MAX_BODY_BYTES", "10"),
        ("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", "5"),
        ("RETENTION_DAYS", "0"),
        ("PUBLISH_TIMEOUT_SECONDS", "0"),
        ("ENVIRONMENT", "staging"),
        ("SECRET_BACKEND", "vault"),
        ("PORT", "eighty"),
        ("CALLRAIL_RATE_LIMIT_PER_HOUR", "5"),
        ("CALLRAIL_RATE_LIMIT_PER_DAY", "-1"),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("environment", "backend"),
    [
        ("production", SecretBackend.SECRET_MANAGER),
        ("local", SecretBackend.LOCAL),
        ("test", SecretBackend.LOCAL),
    ],
)
def test_secret_backend_defaults_by_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, backend: SecretBackend
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    settings = Settings()
    assert settings.secret_backend is backend
    assert settings.is_production is (environment == "production")


def test_explicit_secret_backend_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_BACKEND", "local")
    assert Settings().secret_backend is SecretBackend.LOCAL
    monkeypatch.setenv("ENVIRONMENT", "local")
    monkeypatch.setenv("SECRET_BACKEND", "secret-manager")
    assert Settings().secret_backend is SecretBackend.SECRET_MANAGER


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().port = 1  # type: ignore[misc]


def test_derived_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p1")
    monkeypatch.setenv("SPANNER_INSTANCE", "i1")
    monkeypatch.setenv("SPANNER_DATABASE", "d1")
    s = Settings()
    assert s.spanner_database_path == "projects/p1/instances/i1/databases/d1"
    assert s.topic_path("calls.received") == "projects/p1/topics/calls.received"


def test_get_settings_is_built_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "changed-later")
    assert get_settings() is first
    assert get_settings().google_cloud_project == "callpipe-local"


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    undocumented = [alias for alias in ALIASES if f"`{alias}`" not in readme]
    assert undocumented == []


def test_an_empty_thinking_budget_sends_none_and_bounds_are_the_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().vertex_ai_thinking_budget == 1024
    monkeypatch.setenv("VERTEX_AI_THINKING_BUDGET", "")
    assert Settings().vertex_ai_thinking_budget is None
    monkeypatch.setenv("VERTEX_AI_THINKING_BUDGET", "32768")  # Flash takes at most 24,576
    with pytest.raises(ValidationError, match="VERTEX_AI_THINKING_BUDGET"):
        Settings()


def test_the_analysis_time_budget_stays_under_the_ack_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from callpipe.topology import load_topology

    (analyze,) = [s for s in load_topology().subscriptions() if s.step == "analyze"]
    monkeypatch.setenv("ANALYSIS_TIME_BUDGET_SECONDS", str(analyze.ack_deadline_seconds))
    with pytest.raises(ValidationError, match="ANALYSIS_TIME_BUDGET_SECONDS"):
        Settings()
    assert Settings.model_fields["analysis_time_budget_seconds"].default < (
        analyze.ack_deadline_seconds - 30
    )


def test_the_callrail_budgets_default_to_the_documented_ones_and_zero_means_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = Settings().callrail_rate_limit()
    assert (limit.per_minute, limit.burst, limit.per_hour, limit.per_day) == (120, 5, 1000, 10000)
    monkeypatch.setenv("CALLRAIL_RATE_LIMIT_PER_DAY", "0")
    assert [w.column for w in Settings().callrail_rate_limit().windows()] == ["Tat", "HourTat"]
