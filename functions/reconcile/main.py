"""Cloud Function (gen2, Pub/Sub reconcile.requested): queue the calls CallRail has and the
pipeline never received (their webhook was lost). Cloud Scheduler asks hourly for every
tenant; the step answers with one request per tenant. The error contract is
callpipe.steps.run_step's."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import ReconcileRequested
from callpipe.pipeline_wiring import StepRuntime, build_reconcile
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "reconcile"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_reconcile(_settings))


@functions_framework.cloud_event
def reconcile(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        ReconcileRequested,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or f"{_settings.reconcile_topic}.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
    )
