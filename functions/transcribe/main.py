"""Cloud Function (gen2, Pub/Sub recordings.stored): transcribe each call with speakers.

recordings.stored carries the recordings bucket's OBJECT_FINALIZE notifications and the
calls that go on without audio; both pass here once and leave as CallTranscribed. The
error contract is callpipe.steps.run_step's.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import RecordingsEvent
from callpipe.pipeline_wiring import StepRuntime, build_transcribe
from callpipe.progress import Stage
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "transcribe"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_transcribe(_settings))


@functions_framework.cloud_event
def transcribe(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        RecordingsEvent,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or "recordings.stored.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
        on_dead_letter=runtime.dead_letter_recorder(Stage.TRANSCRIBE),
    )
