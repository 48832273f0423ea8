"""Builds the intake service and its health check from settings (once per process)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from callpipe.config import Settings
from callpipe.intake.ratelimit import QuarantineBudgets, TokenBucket
from callpipe.intake.service import IntakeConfig, WebhookIntake
from callpipe.publishing import PubSubPublisher
from callpipe.publishing_async import AsyncPubSubPublisher
from callpipe.spanner_db import open_database, spanner_check
from callpipe.tenancy import CompanyDirectory, TenantRepository
from callpipe.wiring import build_publisher, build_secret_store


@dataclass
class IntakeRuntime:
    intake: WebhookIntake
    health: HealthCheck
    # what the served function publishes with, from its event loop; ``intake`` keeps the
    # thread-based publisher for callers without one (replays, the quarantine CLI)
    publisher: AsyncPubSubPublisher


class HealthCheck:
    """Whether intake's dependencies answer; cached briefly so probes stay cheap."""

    def __init__(self, settings: Settings, publisher: PubSubPublisher, database: Any) -> None:
        self._settings = settings
        self._publisher = publisher
        self._database = database
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def report(self) -> dict[str, Any]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < 5.0:
                return self._cached[1]
        checks = {"pubsub": self._check_pubsub(), "spanner": self._check_spanner()}
        healthy = all(c["ok"] for c in checks.values())
        report = {"status": "ok" if healthy else "degraded", "checks": checks}
        with self._lock:
            self._cached = (time.monotonic(), report)
        return report

    def _check_pubsub(self) -> dict[str, Any]:
        topic = self._settings.calls_received_topic
        try:
            exists = self._publisher.topic_exists(topic)
        except Exception as error:  # noqa: BLE001 - health reports any failure as down
            return {"ok": False, "error": error.__class__.__name__}
        return (
            {"ok": exists, "topic": topic}
            if exists
            else {"ok": False, "error": f"topic {topic} missing"}
        )

    def _check_spanner(self) -> dict[str, Any]:
        return spanner_check(self._database)


def build_intake_runtime(settings: Settings) -> IntakeRuntime:
    publisher = build_publisher(settings)
    database = open_database(settings)
    repository = TenantRepository(database)
    directory = CompanyDirectory(
        repository.find_company,
        build_secret_store(settings),
        ttl_seconds=settings.tenant_cache_ttl_seconds,
        negative_ttl_seconds=settings.unknown_company_cache_ttl_seconds,
        stale_seconds=settings.tenant_cache_stale_seconds,
    )
    intake = WebhookIntake(
        IntakeConfig(
            calls_topic=settings.calls_received_topic,
            quarantine_topic=settings.quarantine_topic,
            max_body_bytes=settings.webhook_max_body_bytes,
            timestamp_tolerance=timedelta(seconds=settings.webhook_timestamp_tolerance_seconds),
            unknown_company_max_body_bytes=settings.quarantine_unknown_max_body_bytes,
        ),
        directory,
        publisher,
        QuarantineBudgets(
            unknown_company=TokenBucket(settings.quarantine_max_per_minute),
            unusable=TokenBucket(settings.quarantine_unusable_max_per_minute),
            directory_unavailable=TokenBucket(settings.quarantine_outage_max_per_minute),
        ),
    )
    return IntakeRuntime(
        intake=intake,
        health=HealthCheck(settings, publisher, database),
        publisher=AsyncPubSubPublisher(
            settings.google_cloud_project,
            timeout_seconds=settings.publish_timeout_seconds,
            batch_max_latency_seconds=settings.publish_batch_max_latency_ms / 1000.0,
            emulator_host=settings.pubsub_emulator_host,
        ),
    )
