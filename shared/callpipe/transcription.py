"""The transcribe step: every call passes here once, with or without audio.

Triggered by recordings.stored, which carries the recordings bucket's OBJECT_FINALIZE
notifications and download-recording's CallWithoutRecording messages. A recording under
``tenants/<tenant>/calls/<call>/recording.<ext>`` is transcribed and the transcript JSON
is written next to it (``transcript.json``, once); anything else in the bucket is logged
and ignored. A transcript already written is reused, so a redelivery or a replay does
not pay for a second transcription.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from callpipe.ids import InvalidIdentifier, check_resource_id, check_tenant_id
from callpipe.messages import (
    CallTranscribed,
    CallWithoutRecording,
    RecordingsEvent,
    StoredObjectEvent,
)
from callpipe.progress import (
    Progress,
    Stage,
    StageStatus,
    count_failed_attempt,
    record_and_hand_on,
)
from callpipe.publishing import Publisher
from callpipe.transcripts import AudioInput, Transcriber, Transcript, TranscriptionFailed

logger = logging.getLogger(__name__)

_RECORDING = re.compile(r"^tenants/([^/]+)/calls/([^/]+)/recording\.([a-z0-9]{2,4})$")


class ObjectStore(Protocol):
    def download_to(self, name: str, path: Path) -> None:
        """Copy the object to ``path``; FileNotFoundError when there is no such object."""
        ...

    def read(self, name: str) -> bytes | None: ...

    def write_once(
        self, name: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> bool: ...

    def replace(
        self, name: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> None: ...


class GcsObjects:
    def __init__(self, bucket_name: str, client: Any | None = None) -> None:
        from google.cloud import storage  # type: ignore[attr-defined]

        self.bucket_name = bucket_name
        self._bucket = (client or storage.Client()).bucket(bucket_name)

    def download_to(self, name: str, path: Path) -> None:
        from google.api_core import exceptions

        try:
            self._bucket.blob(name).download_to_filename(str(path))
        except exceptions.NotFound:
            raise FileNotFoundError(f"gs://{self.bucket_name}/{name}") from None

    def read(self, name: str) -> bytes | None:
        from google.api_core import exceptions

        try:
            return bytes(self._bucket.blob(name).download_as_bytes())
        except exceptions.NotFound:
            return None

    def write_once(
        self, name: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> bool:
        from google.api_core import exceptions

        blob = self._bucket.blob(name)
        blob.metadata = metadata
        try:
            blob.upload_from_string(data, content_type=content_type, if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True

    def replace(self, name: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        blob = self._bucket.blob(name)
        blob.metadata = metadata
        blob.upload_from_string(data, content_type=content_type)


def message_call(attributes: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The tenant and call a step's message is about: from its attributes, or, for a Cloud
    Storage notification (which has none of ours), from its recording's object name."""
    tenant_id, call_id = attributes.get("tenant_id"), attributes.get("call_id")
    if not (tenant_id and call_id):
        parsed = parse_recording_name(attributes.get("objectId", ""))
        if parsed is not None:
            return parsed
    return tenant_id or None, call_id or None


def parse_recording_name(name: str) -> tuple[str, str] | None:
    """(tenant, call) of a recording object name, or None for anything else."""
    match = _RECORDING.fullmatch(name)
    if not match:
        return None
    try:
        return check_tenant_id(match.group(1)), check_resource_id(match.group(2))
    except InvalidIdentifier:
        return None


class TranscribeCall:
    def __init__(
        self,
        transcriber: Callable[[], Transcriber],
        objects: ObjectStore,
        audio_bucket: str,
        progress: Progress,
        publisher: Publisher,
        output_topic: str,
        max_attempts: int = 4,
    ) -> None:
        self._transcriber = transcriber
        self._objects = objects
        self._audio_bucket = audio_bucket
        self._progress = progress
        self._publisher = publisher
        self._output_topic = output_topic
        self._max_attempts = max_attempts

    def __call__(self, event: RecordingsEvent) -> dict[str, Any]:
        if event.without is not None:
            return self._without_audio(event.without)
        assert event.stored is not None
        return self._transcribe(event.stored)

    def _without_audio(self, notice: CallWithoutRecording) -> dict[str, Any]:
        transcribed = CallTranscribed(
            tenant_id=notice.tenant_id,
            office_id=notice.office_id,
            call_id=notice.call_id,
            correlation_id=notice.correlation_id,
            status="no_transcript",
            reason=notice.reason,
        )
        self._hand_on(transcribed, StageStatus.SKIPPED, f"{notice.reason}: {notice.detail}"[:2000])
        return {"outcome": "no_transcript", "reason": notice.reason}

    def _transcribe(self, stored: StoredObjectEvent) -> dict[str, Any]:
        ids = parse_recording_name(stored.name) if stored.bucket == self._audio_bucket else None
        if ids is None:
            return {"outcome": "ignored", "object": f"gs://{stored.bucket}/{stored.name}"}
        tenant_id, call_id = ids
        correlation_id = stored.metadata.get("correlation_id") or f"gcs-{stored.generation or 'x'}"
        office_id = stored.metadata.get("office_id")
        recording_uri = f"gs://{stored.bucket}/{stored.name}"
        transcript_name = stored.name.rsplit("/", 1)[0] + "/transcript.json"
        transcript_uri = f"gs://{stored.bucket}/{transcript_name}"

        existing = self._objects.read(transcript_name)
        transcript = _readable(existing, transcript_name)
        reused = transcript is not None
        if transcript is None:
            try:
                transcript = self._run_engine(stored, recording_uri)
            except TranscriptionFailed as error:
                return self._failed(
                    tenant_id, office_id, call_id, correlation_id, recording_uri, error
                )
            # once: a concurrent delivery's transcript is as good as this one; an
            # unreadable one is replaced, or every delivery would pay for it again
            write = self._objects.write_once if existing is None else self._objects.replace
            write(
                transcript_name,
                transcript.model_dump_json(indent=1).encode("utf-8"),
                "application/json",
                {
                    "tenant_id": tenant_id,
                    "call_id": call_id,
                    "correlation_id": correlation_id,
                    "engine": transcript.engine,
                    "model": transcript.model,
                },
            )

        self._hand_on(
            CallTranscribed(
                tenant_id=tenant_id,
                office_id=office_id,
                call_id=call_id,
                correlation_id=correlation_id,
                status="transcribed",
                recording_uri=recording_uri,
                transcript_uri=transcript_uri,
                transcript=transcript.model_copy(update={"words": []}),
            ),
            StageStatus.OK,
            f"{transcript.engine} {transcript.model}, {len(transcript.segments)} segments, "
            f"{transcript.speaker_count} speakers",
        )
        return {
            "outcome": "transcribed",
            "reused": reused,
            "segments": len(transcript.segments),
            "audio_seconds": transcript.audio_duration_seconds,
            "engine": transcript.engine,
        }

    def _run_engine(self, stored: StoredObjectEvent, recording_uri: str) -> Transcript:
        suffix = Path(stored.name).suffix
        with tempfile.TemporaryDirectory(prefix="callpipe-audio-") as tmp:
            local = Path(tmp) / f"recording{suffix}"
            try:
                self._objects.download_to(stored.name, local)
            except FileNotFoundError:
                # Deleted since it was stored (retention, or by hand) and its notification
                # redelivered or replayed: no retry brings it back.
                raise TranscriptionFailed(
                    f"the recording {recording_uri} is no longer in the bucket", permanent=True
                ) from None
            return self._transcriber().transcribe(
                AudioInput(
                    path=local,
                    content_type=stored.content_type or "application/octet-stream",
                    gcs_uri=recording_uri,
                    duration_seconds=_seconds(stored.metadata.get("duration_seconds")),
                )
            )

    def _failed(
        self,
        tenant_id: str,
        office_id: str | None,
        call_id: str,
        correlation_id: str,
        recording_uri: str,
        error: TranscriptionFailed,
    ) -> dict[str, Any]:
        detail = str(error)[:2000]
        if not error.permanent:
            attempts = count_failed_attempt(
                self._progress, tenant_id, call_id, Stage.TRANSCRIBE, detail
            )
            if attempts < self._max_attempts:
                raise error
            detail = f"{detail} (gave up after {attempts} attempts)"
        self._hand_on(
            CallTranscribed(
                tenant_id=tenant_id,
                office_id=office_id,
                call_id=call_id,
                correlation_id=correlation_id,
                status="no_transcript",
                reason=f"transcription_failed: {detail}"[:1000],
                recording_uri=recording_uri,
            ),
            StageStatus.FAILED,
            detail,
        )
        return {"outcome": "no_transcript", "reason": "transcription_failed", "detail": detail}

    def _hand_on(self, message: CallTranscribed, status: StageStatus, detail: str) -> None:
        record_and_hand_on(
            self._progress,
            self._publisher,
            self._output_topic,
            message,
            Stage.TRANSCRIBE,
            status,
            detail,
        )


def _readable(stored: bytes | None, name: str) -> Transcript | None:
    """The transcript a previous delivery wrote, unless there is none or it cannot be read
    (cut short, or written by an older release in a shape this one refuses): then the
    recording is transcribed again rather than the call held up for good."""
    if stored is None:
        return None
    try:
        return Transcript.model_validate_json(stored)
    except ValueError as error:
        # the error's text quotes the transcript (personal data): its type only
        logger.warning(
            "stored transcript unreadable, transcribing again",
            extra={"fields": {"object": name, "error": type(error).__name__}},
        )
        return None


def _seconds(value: str | None) -> float | None:
    """The recording's length from its object metadata, which anyone who drops a recording
    into the bucket by hand may fill in: a value that is not a number of seconds is ignored
    (the engines then measure the audio), rather than failing the call."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
