"""The download-recording step: store the call's audio under its tenant's prefix.

``gs://<bucket>/tenants/<tenant>/calls/<call>/recording.<ext>``, written once
(``if_generation_match=0``): a second run finds it and does nothing. The bucket's
OBJECT_FINALIZE notification then starts the transcribe step.

Nothing waits forever: a call without a recording, or whose download keeps failing
(``max_attempts`` counted in CallStages across redeliveries), goes on without audio with a
CallWithoutRecording message that says why, so it is still persisted later. A recording
URL that is not an allowed CallRail host is a security matter, not a glitch: it is
dead-lettered for an operator to look at.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol

from callpipe.callrail.client import (
    CallRailAuthError,
    CallRailClient,
    CallRailNotFound,
    CallRailRequestError,
)
from callpipe.fetching import ApiKeys, callrail_client_for, callrail_refusal
from callpipe.ids import check_resource_id, check_tenant_id
from callpipe.messages import CallFetched, CallWithoutRecording
from callpipe.progress import Progress, Stage, StageStatus, record_and_hand_on
from callpipe.publishing import Publisher
from callpipe.recordings.fetcher import (
    AudioRejected,
    DownloadedAudio,
    FetchFailed,
    RecordingGone,
    download_audio,
)
from callpipe.recordings.guard import UnsafeUrl
from callpipe.recordings.policy import FetchPolicy
from callpipe.steps import PermanentError


def recording_prefix(tenant_id: str, call_id: str) -> str:
    return f"tenants/{check_tenant_id(tenant_id)}/calls/{check_resource_id(call_id)}/recording"


@dataclass(frozen=True)
class StoredObject:
    uri: str
    name: str
    created: bool


@dataclass(frozen=True)
class FoundRecording:
    """A recording already stored, as its object describes it."""

    uri: str
    size: int | None = None
    content_type: str | None = None
    sha256: str | None = None
    stored_at: datetime | None = None


class RecordingStore(Protocol):
    def find(self, prefix: str) -> FoundRecording | None: ...

    def put(
        self, name: str, data: BinaryIO, content_type: str, metadata: dict[str, str]
    ) -> StoredObject: ...


class RecordingNotReady(Exception):
    """CallRail lists a recording it does not serve yet: a transient failure (redelivery)."""


class GcsRecordingStore:
    def __init__(self, bucket_name: str, client: Any | None = None) -> None:
        from google.cloud import storage  # type: ignore[attr-defined]

        self._client = client or storage.Client()
        self._bucket_name = bucket_name
        self._bucket = self._client.bucket(bucket_name)

    def find(self, prefix: str) -> FoundRecording | None:
        for blob in self._client.list_blobs(self._bucket_name, prefix=prefix + ".", max_results=5):
            return FoundRecording(
                f"gs://{self._bucket_name}/{blob.name}",
                blob.size,
                blob.content_type,
                (blob.metadata or {}).get("sha256"),
                blob.time_created,
            )
        return None

    def put(
        self, name: str, data: BinaryIO, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        from google.api_core import exceptions

        blob = self._bucket.blob(name)
        blob.metadata = metadata
        uri = f"gs://{self._bucket_name}/{name}"
        try:
            blob.upload_from_file(
                data, content_type=content_type, if_generation_match=0, rewind=True
            )
        except exceptions.PreconditionFailed:
            return StoredObject(uri, name, created=False)
        return StoredObject(uri, name, created=True)


class DownloadRecording:
    def __init__(
        self,
        api_keys: ApiKeys,
        clients: Callable[[str], CallRailClient],
        store: RecordingStore,
        policy: FetchPolicy,
        progress: Progress,
        publisher: Publisher,
        no_audio_topic: str,
        max_attempts: int = 4,
        download: Callable[..., DownloadedAudio] = download_audio,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api_keys = api_keys
        self._clients = clients
        self._store = store
        self._policy = policy
        self._progress = progress
        self._publisher = publisher
        self._no_audio_topic = no_audio_topic
        self._max_attempts = max_attempts
        self._download = download
        self._clock = clock

    def __call__(self, message: CallFetched) -> dict[str, Any]:
        prefix = recording_prefix(message.tenant_id, message.call_id)
        existing = self._store.find(prefix)
        if existing is not None:
            # A redelivery, or a later event of the call: the delivery that stored it may
            # have died before recording it, and nothing else would (the columns say where
            # the recording is). Written again, it changes nothing.
            self._record_stored(
                message,
                existing.uri,
                existing.sha256,
                existing.size,
                existing.content_type,
                existing.stored_at or self._clock(),
            )
            return {"outcome": "already_stored", "object": existing.uri}
        details = message.details
        if not (details.recording_available or details.recording_announced):
            return self._go_on_without(
                message, "no_recording", "CallRail has no recording for this call"
            )

        client, key = callrail_client_for(self._api_keys, self._clients, message.tenant_id)
        try:
            url = client.get_recording_url(message.callrail_account_id, message.call_id)
        except (CallRailNotFound, CallRailAuthError, CallRailRequestError) as error:
            raise callrail_refusal(error, self._api_keys, message.tenant_id, key) from None
        if url is None:
            # Listed (or announced by the webhook) but not served: CallRail makes recordings
            # available some time after the call, so it is asked again, within limits.
            detail = "CallRail lists a recording for this call but does not serve it yet"
            gave_up = self._count_attempt(message, "no_recording", detail)
            if gave_up is not None:
                return gave_up
            raise RecordingNotReady(detail)

        try:
            with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as sink:
                audio = self._download(url, self._policy, sink)
                stored = self._store.put(
                    f"{prefix}.{audio.extension}",
                    sink,  # type: ignore[arg-type]
                    audio.content_type,
                    self._metadata(message, audio),
                )
        except UnsafeUrl as error:
            raise PermanentError("unsafe_recording_url", str(error)) from None
        except (AudioRejected, FetchFailed, RecordingGone) as error:
            gave_up = self._count_attempt(
                message, "download_failed", f"{error.__class__.__name__}: {error}"
            )
            if gave_up is not None:
                return gave_up
            raise

        self._record_stored(
            message, stored.uri, audio.sha256, audio.size, audio.content_type, self._clock()
        )
        return {
            "outcome": "stored" if stored.created else "already_stored",
            "object": stored.uri,
            "bytes": audio.size,
            "sha256": audio.sha256,
        }

    def _count_attempt(
        self, message: CallFetched, reason: str, detail: str
    ) -> dict[str, Any] | None:
        """Count a failed attempt; once they are used up, go on without audio (its answer)."""
        attempts = self._progress.count_attempt(
            message.tenant_id, message.call_id, Stage.DOWNLOAD, detail
        )
        if attempts < self._max_attempts:
            return None
        return self._go_on_without(message, reason, f"{detail} (gave up after {attempts} attempts)")

    def _record_stored(
        self,
        message: CallFetched,
        uri: str,
        sha256: str | None,
        size: int | None,
        content_type: str | None,
        stored_at: datetime,
    ) -> None:
        self._progress.record(
            message.tenant_id,
            message.call_id,
            Stage.DOWNLOAD,
            StageStatus.OK,
            detail=uri,
            correlation_id=message.correlation_id,
            call_columns={
                "RecordingStatus": "stored",
                "RecordingDetail": None,
                "RecordingUri": uri,
                "RecordingSha256": sha256,
                "RecordingBytes": size,
                "RecordingContentType": content_type,
                "RecordingDurationSeconds": _duration(message),
                "RecordingStoredAt": stored_at,
            },
        )

    def _metadata(self, message: CallFetched, audio: DownloadedAudio) -> dict[str, str]:
        metadata = {
            "tenant_id": message.tenant_id,
            "office_id": message.office_id,
            "call_id": message.call_id,
            "correlation_id": message.correlation_id,
            "event_type": message.event_type.value,
            "sha256": audio.sha256,
            "source_host": audio.final_url_host,
        }
        duration = _duration(message)
        if duration is not None:
            metadata["duration_seconds"] = f"{duration:g}"
        return metadata

    def _go_on_without(self, message: CallFetched, reason: str, detail: str) -> dict[str, Any]:
        notice = CallWithoutRecording(
            tenant_id=message.tenant_id,
            office_id=message.office_id,
            call_id=message.call_id,
            event_type=message.event_type,
            correlation_id=message.correlation_id,
            reason=reason,  # type: ignore[arg-type]
            detail=detail,
        )
        record_and_hand_on(
            self._progress,
            self._publisher,
            self._no_audio_topic,
            notice,
            Stage.DOWNLOAD,
            StageStatus.SKIPPED if reason == "no_recording" else StageStatus.FAILED,
            detail,
            call_columns={"RecordingStatus": reason, "RecordingDetail": detail[:2000]},
        )
        return {"outcome": "without_audio", "reason": reason, "detail": detail}


def _duration(message: CallFetched) -> float | None:
    seconds = message.details.recording_duration_seconds
    return float(seconds) if seconds is not None else None
