"""Cloud Function (gen2, Pub/Sub calls.fetched): store the call's recording in GCS.

Writes gs://<AUDIO_STORAGE_BUCKET>/tenants/<tenant>/calls/<call>/recording.<ext> once, or
publishes CallWithoutRecording when the call goes on without audio. The error contract is
callpipe.steps.run_step's.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from callpipe.config import get_settings
from callpipe.logs import configure_logging
from callpipe.messages import CallFetched
from callpipe.pipeline_wiring import StepRuntime, build_download_recording
from callpipe.progress import Stage
from callpipe.steps import run_step
from callpipe.wiring import Lazy

STEP = "download-recording"
_settings = get_settings()
configure_logging(_settings.log_level, _settings.google_cloud_project)
_runtime: Lazy[StepRuntime] = Lazy(lambda: build_download_recording(_settings))


@functions_framework.cloud_event
def download_recording(cloud_event: CloudEvent) -> None:
    runtime = _runtime.get()
    run_step(
        STEP,
        cloud_event.data,
        CallFetched,
        runtime.handler,
        runtime.publisher,
        _settings.dead_letter_topic or "calls.fetched.dlq",
        max_delivery_attempts=_settings.max_delivery_attempts,
        on_dead_letter=runtime.dead_letter_recorder(Stage.DOWNLOAD),
    )
