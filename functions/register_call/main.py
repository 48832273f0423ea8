"""Cloud Function (gen2, Pub/Sub calls.received): register each call event once.

Archives the raw webhook, deduplicates the event, creates the call's row and publishes
CallRegistered. The error contract is callpipe.steps.run_step's.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import CallReceived
from callpipe.pipeline_wiring import StepRuntime, build_register_call
from callpipe.progress import Stage
from callpipe.registration import feeds_the_pipeline
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "register-call"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_register_call(_settings))


@functions_framework.cloud_event
def register_call(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        CallReceived,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or f"{_settings.calls_received_topic}.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
        on_dead_letter=runtime.dead_letter_recorder(Stage.REGISTER, feeds_the_pipeline),
    )
