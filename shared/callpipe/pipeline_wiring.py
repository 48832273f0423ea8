"""Building each Pub/Sub step's handler and adapters from settings (once per process)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from callpipe.apikeys import TenantApiKeys
from callpipe.archive import WebhookArchive
from callpipe.callrail.client import CallRailClient, ClientSettings, RetryPolicy
from callpipe.config import Settings
from callpipe.downloading import DownloadRecording, GcsRecordingStore
from callpipe.fetching import CallRailClients, FetchCall
from callpipe.logs import log_event
from callpipe.progress import SpannerProgress, Stage, StageStatus
from callpipe.publishing import Publisher, PubSubPublisher
from callpipe.ratelimit import SpannerRateLimiter
from callpipe.recordings.policy import FetchPolicy
from callpipe.registration import RegisterCall, SpannerEventLedger
from callpipe.spanner_db import open_database
from callpipe.steps import PermanentError
from callpipe.transcription import message_call
from callpipe.wiring import Lazy, build_publisher, build_secret_store

if TYPE_CHECKING:
    from callpipe.reconcile import Reconciler

logger = logging.getLogger("callpipe.steps")


@dataclass
class StepRuntime:
    handler: Callable[[Any], dict[str, Any]]
    publisher: PubSubPublisher
    progress: SpannerProgress | None = None

    def dead_letter_recorder(
        self, stage: Stage, concerns_the_call: Callable[[dict[str, str]], bool] | None = None
    ) -> Callable[[dict[str, str], PermanentError], None]:
        """Records a dead letter on its call's ``stage``; with ``concerns_the_call``, only
        for the messages (by their attributes) it says are part of the call's progress."""

        def record(attributes: dict[str, str], error: PermanentError) -> None:
            tenant_id, call_id = message_call(attributes)
            if self.progress is None or not tenant_id or not call_id:
                return
            if concerns_the_call is not None and not concerns_the_call(attributes):
                return
            from google.api_core import exceptions

            try:
                self.progress.record(
                    tenant_id,
                    call_id,
                    stage,
                    StageStatus.DEAD_LETTERED,
                    detail=f"{error.reason}: {error.detail}"[:2000],
                    correlation_id=attributes.get("correlation_id"),
                )
            except exceptions.NotFound:
                # No Calls row to record on (a message that never passed register-call).
                log_event(
                    logger,
                    logging.WARNING,
                    "no call row to record the dead letter on",
                    tenant_id=tenant_id,
                    call_id=call_id,
                    step=stage.value,
                )

        return record


def build_register_call(settings: Settings) -> StepRuntime:
    database = open_database(settings)
    publisher = build_publisher(settings)
    handler = RegisterCall(
        WebhookArchive(settings.webhook_archive_bucket),
        SpannerEventLedger(database),
        publisher,
        settings.calls_registered_topic,
    )
    # progress for the dead-letter record only: the handler writes its stage itself
    return StepRuntime(handler, publisher, SpannerProgress(database))


def _step_adapters(settings: Settings) -> tuple[Any, PubSubPublisher, SpannerProgress]:
    """What every Spanner-backed step shares: the database, a publisher, progress records."""
    database = open_database(settings)
    return database, build_publisher(settings), SpannerProgress(database)


def callrail_clients(settings: Settings, database: Any) -> CallRailClients:
    limiter = SpannerRateLimiter(database, settings.callrail_rate_limit())
    client_settings = ClientSettings(
        base_url=settings.callrail_api_base_url,
        read_timeout=settings.callrail_timeout_seconds,
        retry=RetryPolicy(max_attempts=settings.callrail_max_attempts),
    )
    return CallRailClients(lambda key: CallRailClient(key, client_settings, rate_limiter=limiter))


def build_fetch_call(settings: Settings) -> StepRuntime:
    database, publisher, progress = _step_adapters(settings)
    handler = FetchCall(
        TenantApiKeys(database, build_secret_store(settings)),
        callrail_clients(settings, database),
        progress,
        publisher,
        settings.calls_fetched_topic,
    )
    return StepRuntime(handler, publisher, progress)


def give_up_after(settings: Settings) -> int:
    """Failed attempts after which transcribe and analyze let the call go on without their
    result: one short of the subscription's dead-letter policy, so that the step, not
    Pub/Sub, has the last word, and as late as that, so that an outage of Speech-to-Text or
    Vertex AI is ridden out across Pub/Sub's backoff rather than ending calls early."""
    return max(1, settings.max_delivery_attempts - 1)


def build_transcribe(settings: Settings) -> StepRuntime:
    from callpipe.engines import build_transcriber
    from callpipe.transcription import GcsObjects, TranscribeCall

    _database, publisher, progress = _step_adapters(settings)
    engine: Lazy[Any] = Lazy(lambda: build_transcriber(settings))
    handler = TranscribeCall(
        engine.get,
        GcsObjects(settings.audio_storage_bucket),
        settings.audio_storage_bucket,
        progress,
        publisher,
        settings.calls_transcribed_topic,
        max_attempts=give_up_after(settings),
    )
    return StepRuntime(handler, publisher, progress)


def build_analyze(settings: Settings) -> StepRuntime:
    from callpipe.analyzing import AnalyzeCall, SpannerCallContext
    from callpipe.engines import build_analyzer

    database, publisher, progress = _step_adapters(settings)
    engine: Lazy[Any] = Lazy(lambda: build_analyzer(settings))
    handler = AnalyzeCall(
        engine.get,
        SpannerCallContext(database),
        progress,
        publisher,
        settings.calls_analyzed_topic,
        max_attempts=give_up_after(settings),
    )
    return StepRuntime(handler, publisher, progress)


def build_persist(settings: Settings) -> StepRuntime:
    from callpipe.persisting import PersistCall

    database, publisher, progress = _step_adapters(settings)
    handler = PersistCall(database, publisher, settings.calls_completed_topic)
    return StepRuntime(handler, publisher, progress)


def build_reconciler(
    settings: Settings, database: Any, publisher: Publisher, settle: timedelta
) -> Reconciler:
    """Reconciliation over the tenant rows, API keys and shared CallRail rate limit of
    ``database`` (the reconcile step's, and ``callpipe reconcile``'s)."""
    from callpipe.reconcile import Reconciler, SpannerKnownCalls
    from callpipe.tenancy import TenantRepository

    repository = TenantRepository(database)
    return Reconciler(
        repository.get_tenant,
        repository.find_company,
        TenantApiKeys(database, build_secret_store(settings)).key_for,
        callrail_clients(settings, database),
        SpannerKnownCalls(database),
        publisher,
        settings.calls_received_topic,
        settle=settle,
    )


def build_reconcile(settings: Settings) -> StepRuntime:
    from callpipe.reconciling import ReconcileStep
    from callpipe.tenancy import TenantRepository

    database = open_database(settings)
    publisher = build_publisher(settings)
    reconciler = build_reconciler(
        settings, database, publisher, timedelta(minutes=settings.reconcile_settle_minutes)
    )
    handler = ReconcileStep(
        TenantRepository(database).list_tenants,
        reconciler,
        publisher,
        settings.reconcile_topic,
        lookback=timedelta(hours=settings.reconcile_lookback_hours),
        max_calls=settings.reconcile_max_calls_per_run,
    )
    # no progress records: a reconcile request is about a tenant, not a call
    return StepRuntime(handler, publisher)


def build_fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy.from_strings(
        allowed_hosts=settings.recording_allowed_hosts,
        insecure_hosts=settings.recording_insecure_hosts,
        max_bytes=settings.recording_max_bytes,
        total_timeout=settings.recording_download_timeout_seconds,
    )


def build_download_recording(settings: Settings) -> StepRuntime:
    database, publisher, progress = _step_adapters(settings)
    handler = DownloadRecording(
        TenantApiKeys(database, build_secret_store(settings)),
        callrail_clients(settings, database),
        GcsRecordingStore(settings.audio_storage_bucket),
        build_fetch_policy(settings),
        progress,
        publisher,
        settings.recordings_topic,
        max_attempts=settings.download_max_attempts,
    )
    return StepRuntime(handler, publisher, progress)
