"""Running a stored call through transcription and analysis again.

A call whose transcription or analysis failed for good (Speech-to-Text or Vertex AI
refused it, or stayed down past the retries) is not dead-lettered: it goes on and is
stored without the result, so there is nothing in a dead-letter hold to replay. Once the
cause is fixed, an operator re-announces the call on the recordings topic, as the bucket
notification did: transcribe reuses a transcript stored next to the recording (else it
transcribes), analyze runs again, and persist stores the new result over the failure.
A call without a stored recording is announced as such and analysed from what is known.
A call whose recording is gone is run again only if its analysis failed (from what is
known); when only its transcription failed, nothing can redo it, and it is left alone.

Each rerun is a new event of the call (a new correlation id), so the steps do not take it
for a redelivery of finished work. Running it twice analyses twice; the newest analysis
is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callpipe.callrail.webhook import EventType
from callpipe.messages import CallWithoutRecording, StoredObjectEvent
from callpipe.operations import CallLookup
from callpipe.publishing import Publisher
from callpipe.wiring import Lazy

# Calls stored without a result because a step failed, not because there was nothing to
# work on (no recording, no speech).
_FAILED = (
    "(c.AnalysisStatus = 'failed' "
    "OR STARTS_WITH(IFNULL(c.TranscriptReason, ''), 'transcription_failed'))"
)
_COLUMNS = (
    "c.TenantId, c.CallId, c.OfficeId, c.RecordingStatus, c.RecordingUri, "
    "c.RecordingContentType, c.RecordingBytes, c.RecordingDurationSeconds, "
    "c.TranscriptStatus, c.TranscriptReason, c.AnalysisStatus, c.ReceivedAt"
)


@dataclass(frozen=True)
class StoredCall:
    """What a rerun needs of a Calls row."""

    tenant_id: str
    call_id: str
    office_id: str
    recording_status: str | None
    recording_uri: str | None
    recording_content_type: str | None
    recording_bytes: int | None
    recording_seconds: float | None
    transcript_status: str | None
    transcript_reason: str | None
    analysis_status: str | None
    received_at: datetime

    @property
    def failure(self) -> str:
        """What failed, in a few words (for the operator's listing)."""
        failed = []
        if (self.transcript_reason or "").startswith("transcription_failed"):
            failed.append("transcription failed")
        if self.analysis_status == "failed":
            failed.append("analysis failed")
        return ", ".join(failed) or "nothing failed"


@dataclass(frozen=True)
class Planned:
    """A call to run again, and how: from its recording, or without one; or why not."""

    call: StoredCall
    from_recording: bool
    left_alone: str | None = None


@dataclass(frozen=True)
class Rerun:
    call: StoredCall
    correlation_id: str  # of the new event, to follow the call by


def plan(calls: list[StoredCall], recording_exists: Callable[[str], bool]) -> list[Planned]:
    """How each call is run again. A recording the bucket no longer has (retention, deleted
    by hand) cannot be transcribed: such a call goes on without it if its analysis failed,
    and is left alone when only the transcription did."""
    planned = []
    for call in calls:
        if not call.recording_uri:
            planned.append(Planned(call, from_recording=False))
        elif recording_exists(call.recording_uri):
            planned.append(Planned(call, from_recording=True))
        elif call.analysis_status == "failed":
            planned.append(Planned(call, from_recording=False))
        else:
            gone = "its recording is no longer in the bucket, so nothing can transcribe it"
            planned.append(Planned(call, from_recording=False, left_alone=gone))
    return planned


def _bucket_and_name(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def gcs_object_exists() -> Callable[[str], bool]:
    """Whether a ``gs://bucket/name`` object exists (the caller's credentials), with one
    Storage client for all the calls asked about."""
    client: Lazy[Any] = Lazy(_storage_client)

    def exists(uri: str) -> bool:
        bucket, name = _bucket_and_name(uri)
        return bool(client.get().bucket(bucket).blob(name).exists())

    return exists


def _storage_client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    return storage.Client()


def _stored(
    database: Any, tail: str, params: dict[str, Any], types: dict[str, Any]
) -> list[StoredCall]:
    """The rows of ``SELECT ... FROM Calls<tail>``, ``tail`` holding no input."""
    sql = f"SELECT {_COLUMNS} FROM Calls{tail}"  # noqa: S608 - fixed clauses; values bound
    with database.snapshot() as snapshot:
        return [StoredCall(*row) for row in snapshot.execute_sql(sql, params, types)]


def failed_calls(
    database: Any, since: datetime, tenant_id: str | None = None, limit: int = 100
) -> list[StoredCall]:
    """Calls received since ``since`` whose transcription or analysis failed, newest first."""
    from google.cloud.spanner_v1 import param_types

    params: dict[str, Any] = {"since": since, "limit": limit}
    types: dict[str, Any] = {"since": param_types.TIMESTAMP, "limit": param_types.INT64}
    where = f"c.ReceivedAt >= @since AND {_FAILED}"
    if tenant_id is not None:
        where += " AND c.TenantId = @tenant"
        params["tenant"] = tenant_id
        types["tenant"] = param_types.STRING
    return _stored(
        database, f" c WHERE {where} ORDER BY c.ReceivedAt DESC LIMIT @limit", params, types
    )


def stored_calls(database: Any, call_id: str, tenant_id: str | None = None) -> list[StoredCall]:
    """The call's rows: one per tenant that has a call of that id (one when ``tenant_id``)."""
    lookup = CallLookup.of(call_id, tenant_id)
    return _stored(database, f"{lookup.hint} c WHERE {lookup.where}", lookup.params, lookup.types)


def announcement(
    call: StoredCall, correlation_id: str, from_recording: bool = True
) -> tuple[bytes, dict[str, str]]:
    """The recordings-topic message that starts the call over from transcription: the
    bucket's notification of its recording, or the notice that it has none."""
    attributes = {"tenant_id": call.tenant_id, "call_id": call.call_id}
    attributes["correlation_id"] = correlation_id
    if from_recording and call.recording_uri and call.recording_uri.startswith("gs://"):
        bucket, name = _bucket_and_name(call.recording_uri)
        metadata = {"correlation_id": correlation_id, "office_id": call.office_id}
        if call.recording_seconds is not None:
            metadata["duration_seconds"] = str(round(call.recording_seconds))
        notification = StoredObjectEvent(
            kind="storage#object",
            name=name,
            bucket=bucket,
            content_type=call.recording_content_type,
            size=call.recording_bytes,
            metadata=metadata,
        )
        # the attributes a bucket notification has, so that tools reading them see one
        attributes |= {
            "bucketId": bucket,
            "objectId": name,
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
        }
        data = notification.model_dump_json(by_alias=True, exclude_none=True)
        return data.encode("utf-8"), attributes
    notice = CallWithoutRecording(
        tenant_id=call.tenant_id,
        office_id=call.office_id,
        call_id=call.call_id,
        event_type=EventType.POST_CALL,
        correlation_id=correlation_id,
        reason="download_failed" if call.recording_status == "download_failed" else "no_recording",
        detail="run again by an operator; the call has no stored recording"
        if not call.recording_uri
        else f"run again by an operator; its recording {call.recording_uri} is gone",
    )
    return notice.to_data(), {**notice.attributes(), **attributes}


def announce_again(
    item: Planned,
    publisher: Publisher,
    topic: str,
    new_correlation_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Rerun:
    """Announce a planned call (not one left alone) again on ``topic``, the recordings
    topic, as a new event of the call; raises what Pub/Sub's refusal raises."""
    correlation_id = new_correlation_id()
    data, attributes = announcement(item.call, correlation_id, item.from_recording)
    publisher.publish(topic, data, attributes)
    return Rerun(item.call, correlation_id)
