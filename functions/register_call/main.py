"""Cloud Function (gen2, Pub/Sub calls.received): register each call event once.

Archives the raw webhook, deduplicates the event, creates the call's row and publishes
CallRegistered. The error contract is callpipe.steps.run_step's.
"""

from __future__ import annotations

from dataclasses import dataclass

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.archive import WebhookArchive
from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import CallReceived
from callpipe.publishing import PubSubPublisher
from callpipe.registration import RegisterCall, SpannerEventLedger
from callpipe.spanner_db import open_database
from callpipe.steps import run_step
from callpipe.wiring import Lazy, build_publisher

STEP = "register-call"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)


@dataclass
class _Runtime:
    publisher: PubSubPublisher
    register: RegisterCall


def _build() -> _Runtime:
    publisher = build_publisher(_settings)
    register = RegisterCall(
        WebhookArchive(_settings.webhook_archive_bucket),
        SpannerEventLedger(open_database(_settings)),
        publisher,
        _settings.calls_registered_topic,
    )
    return _Runtime(publisher, register)


_runtime = Lazy(_build)


@functions_framework.cloud_event
def register_call(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        CallReceived,
        runtime.register,
        runtime.publisher,
        _settings.dead_letter_topic or f"{_settings.calls_received_topic}.dlq",
    )
