"""Cloud Function (gen2, Pub/Sub calls.transcribed): analyze each call.

Publishes CallAnalyzed: the analysis (intent, lead score, spam...) or, when analysis fails
for good, why, so the call still reaches persist. The error contract is
callpipe.steps.run_step's.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import CallTranscribed
from callpipe.pipeline_wiring import StepRuntime, build_analyze
from callpipe.progress import Stage
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "analyze"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_analyze(_settings))


@functions_framework.cloud_event
def analyze(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        CallTranscribed,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or "calls.transcribed.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
        on_dead_letter=runtime.dead_letter_recorder(Stage.ANALYZE),
    )
