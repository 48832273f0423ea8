"""Cloud Function (gen2, Pub/Sub calls.registered): fetch the call from the CallRail API.

Publishes CallFetched. The error contract is callpipe.steps.run_step's.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import CallRegistered
from callpipe.pipeline_wiring import StepRuntime, build_fetch_call
from callpipe.progress import Stage
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "fetch-call"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_fetch_call(_settings))


@functions_framework.cloud_event
def fetch_call(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        CallRegistered,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or "calls.registered.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
        on_dead_letter=runtime.dead_letter_recorder(Stage.FETCH),
    )
