"""Typed messages that travel between pipeline steps.

Payloads are JSON in the Pub/Sub message data; the routing and correlation fields are
repeated in the message attributes so that operators and filters can read them without
decoding the payload. JSON Schemas of these models are generated into ``schemas/messages``
(``callpipe schemas generate``) and a test fails when they are stale.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from callpipe.analysis import AnalysisResult
from callpipe.callrail.webhook import EventType, LooseBool, LooseInt, LooseTime
from callpipe.ids import ResourceId, TenantId
from callpipe.transcripts import Transcript


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str]
    # Fields repeated as Pub/Sub attributes, so operators and filters can route without
    # decoding the payload (None values are left out).
    routing: ClassVar[tuple[str, ...]] = ()
    schema_version: Literal[1] = 1

    def to_data(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode("utf-8")

    @classmethod
    def from_data(cls, data: bytes) -> Any:
        return cls.model_validate_json(data)

    def attributes(self) -> dict[str, str]:
        attributes = {"kind": self.kind, "schema_version": str(self.schema_version)}
        for name in self.routing:
            value = getattr(self, name)
            if value is not None:
                attributes[name] = value.value if isinstance(value, EventType) else str(value)
        return attributes


class RawWebhook(BaseModel):
    """The authentic request exactly as received, enough to verify and replay it later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    body_base64: str = Field(description="The raw request body, base64-encoded, byte for byte.")
    headers: dict[str, str] = Field(
        description="The headers that matter for verification and replay (Signature, Content-Type, User-Agent)."
    )
    path: str
    received_at: datetime

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_base64)

    def payload(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        return parsed if isinstance(parsed, dict) else {}

    @classmethod
    def capture(
        cls, body: bytes, headers: dict[str, str], path: str, received_at: datetime
    ) -> RawWebhook:
        return cls(
            body_base64=base64.b64encode(body).decode("ascii"),
            headers=headers,
            path=path,
            received_at=received_at,
        )


class CallReceived(Message):
    """Intake → register-call: an authentic CallRail webhook mapped to its tenant."""

    kind: ClassVar[str] = "call.received"

    tenant_id: TenantId
    office_id: ResourceId
    company_id: str
    callrail_account_id: str | None = None
    call_id: ResourceId
    event_type: EventType
    event_key: str = Field(description="Deduplication key of the event within its tenant.")
    correlation_id: str
    signing_token_id: str
    webhook: RawWebhook

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "office_id",
        "call_id",
        "event_type",
        "event_key",
        "correlation_id",
    )


class CallRegistered(Message):
    """register-call → fetch-call: a new call (or a change to one) entered the pipeline once."""

    kind: ClassVar[str] = "call.registered"

    tenant_id: TenantId
    office_id: ResourceId
    company_id: str
    callrail_account_id: str | None = None
    call_id: ResourceId
    event_type: EventType
    event_key: str
    correlation_id: str
    received_at: datetime
    registered_at: datetime
    webhook_archive_uri: str = Field(description="gs:// URI of the archived raw webhook.")
    webhook: dict[str, Any] = Field(description="The parsed webhook payload, unknown fields kept.")

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "office_id",
        "call_id",
        "event_type",
        "event_key",
        "correlation_id",
    )


class QuarantinedWebhook(Message):
    """A signed webhook from a company that is not onboarded yet, kept for a later replay."""

    kind: ClassVar[str] = "webhook.quarantined"

    company_key: str
    reason: str
    correlation_id: str
    webhook: RawWebhook

    routing: ClassVar[tuple[str, ...]] = ("company_key", "reason", "correlation_id")


class CallDetails(BaseModel):
    """The pipeline's typed view of a call: the webhook merged with CallRail's API answer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    call_id: str = Field(validation_alias=AliasChoices("call_id", "id"))
    direction: str | None = None
    answered: LooseBool = None
    voicemail: LooseBool = None
    first_call: LooseBool = None
    callrail_spam: LooseBool = Field(
        default=None, validation_alias=AliasChoices("callrail_spam", "spam")
    )
    duration_seconds: LooseInt = Field(
        default=None, validation_alias=AliasChoices("duration_seconds", "duration")
    )
    start_time: LooseTime = None
    recording_available: bool = False
    # the webhook named a recording: CallRail's API may not list or serve it yet
    recording_announced: bool = False
    recording_duration_seconds: LooseInt = Field(
        default=None,
        validation_alias=AliasChoices("recording_duration_seconds", "recording_duration"),
    )
    call_type: str | None = None
    source: str | None = None
    source_name: str | None = None
    customer_name: str | None = None
    customer_phone_number: str | None = None
    customer_city: str | None = None
    customer_state: str | None = None
    customer_country: str | None = None
    tracking_phone_number: str | None = None
    business_phone_number: str | None = None
    lead_status: str | None = None
    note: str | None = None
    tags: list[str] = Field(default_factory=list)

    @classmethod
    def from_callrail(cls, call: dict[str, Any], announced: bool = False) -> CallDetails:
        """From CallRail's call object; ``announced``: the webhook named a recording."""
        tags = [(t.get("name") if isinstance(t, dict) else t) for t in (call.get("tags") or [])]
        return cls.model_validate(
            {
                **call,
                "call_id": call.get("id") or call.get("resource_id"),
                "recording_available": bool(call.get("recording")),
                "recording_announced": announced,
                "tags": [str(t) for t in tags if t],
            }
        )


class CallFetched(Message):
    """fetch-call → download-recording: the call as CallRail's API knows it."""

    kind: ClassVar[str] = "call.fetched"

    tenant_id: TenantId
    office_id: ResourceId
    company_id: str
    callrail_account_id: str
    call_id: ResourceId
    event_type: EventType
    event_key: str
    correlation_id: str
    received_at: datetime
    fetched_at: datetime
    details: CallDetails
    callrail_call: dict[str, Any] = Field(
        description="The webhook payload overlaid with the API's answer (API fields win)."
    )

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "office_id",
        "call_id",
        "event_type",
        "event_key",
        "correlation_id",
    )


class CallWithoutRecording(Message):
    """download-recording → transcribe: the call goes on without audio, and says why.

    Published on the same topic as the recordings bucket's OBJECT_FINALIZE notifications,
    so the transcribe step sees every call exactly once, with or without audio.
    """

    kind: ClassVar[str] = "call.no_recording"

    tenant_id: TenantId
    office_id: ResourceId
    call_id: ResourceId
    event_type: EventType
    correlation_id: str
    reason: Literal["no_recording", "download_failed"]
    detail: str

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "office_id",
        "call_id",
        "event_type",
        "correlation_id",
        "reason",
    )


class StoredObjectEvent(BaseModel):
    """The JSON_API_V1 payload of a Cloud Storage OBJECT_FINALIZE notification."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kind: Literal["storage#object"]
    name: str
    bucket: str
    content_type: str | None = Field(default=None, alias="contentType")
    size: int | None = None
    generation: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class RecordingsEvent(Message):
    """What arrives on recordings.stored: a bucket notification or a call without audio."""

    kind: ClassVar[str] = "recordings.event"

    stored: StoredObjectEvent | None = None
    without: CallWithoutRecording | None = None

    @classmethod
    def from_data(cls, data: bytes) -> RecordingsEvent:
        parsed = json.loads(data)
        if isinstance(parsed, dict) and parsed.get("kind") == "storage#object":
            return cls(stored=StoredObjectEvent.model_validate(parsed))
        return cls(without=CallWithoutRecording.model_validate(parsed))


class CallTranscribed(Message):
    """transcribe → analyze: the transcript, or why there is none."""

    kind: ClassVar[str] = "call.transcribed"

    tenant_id: TenantId
    office_id: str | None = None
    call_id: ResourceId
    correlation_id: str
    status: Literal["transcribed", "no_transcript"]
    reason: str | None = Field(
        default=None,
        description="Why there is no transcript (no_recording, download_failed, transcription_failed).",
    )
    recording_uri: str | None = None
    transcript_uri: str | None = None
    transcript: Transcript | None = Field(
        default=None, description="Segments and text (word timings stay in the stored JSON)."
    )

    routing: ClassVar[tuple[str, ...]] = ("tenant_id", "call_id", "correlation_id", "status")


class CallAnalyzed(Message):
    """analyze → persist: the analysis, or why there is none; the transcript travels along."""

    kind: ClassVar[str] = "call.analyzed"

    tenant_id: TenantId
    office_id: str | None = None
    call_id: ResourceId
    correlation_id: str
    transcript_status: Literal["transcribed", "no_transcript"]
    transcript_reason: str | None = None
    recording_uri: str | None = None
    transcript_uri: str | None = None
    transcript: Transcript | None = None
    analysis_status: Literal["analyzed", "failed"]
    analysis_reason: str | None = None
    result: AnalysisResult | None = None
    analyzed_at: datetime

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "call_id",
        "correlation_id",
        "analysis_status",
    )

    def attributes(self) -> dict[str, str]:
        attributes = super().attributes()
        if self.result is not None:
            attributes["lead_score"] = str(self.result.analysis.lead_score)
            attributes["intent"] = self.result.analysis.intent
        return attributes


class CallCompleted(Message):
    """persist → downstream consumers (CRM sync, hot-lead alerts): a call is fully stored."""

    kind: ClassVar[str] = "call.completed"

    tenant_id: TenantId
    office_id: str | None = None
    call_id: ResourceId
    correlation_id: str
    completed_at: datetime
    transcript_status: Literal["transcribed", "no_transcript"]
    analysis_status: Literal["analyzed", "failed"]
    lead_score: int | None = None
    intent: str | None = None
    is_spam: bool | None = None
    links: dict[str, str] = Field(
        description="recording and transcript gs:// URIs and the API path of the call."
    )

    routing: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "call_id",
        "correlation_id",
        "analysis_status",
        "lead_score",
        "intent",
    )


class ReconcileRequested(Message):
    """Cloud Scheduler (or an operator) → reconcile: look for calls whose webhook never came.

    Without a tenant it asks for every active tenant: the step answers with one request per
    tenant, each carrying the window's start, so a retried tenant looks at the same calls."""

    kind: ClassVar[str] = "reconcile.requested"

    tenant_id: TenantId | None = Field(
        default=None, description="One tenant; none for every active tenant."
    )
    since: AwareDatetime | None = Field(
        default=None,
        description="Calls that started from this time; default RECONCILE_LOOKBACK_HOURS ago.",
    )
    until: AwareDatetime | None = Field(
        default=None, description="Calls that started up to this time; default now."
    )
    limit: int | None = Field(
        default=None,
        ge=0,
        description="Queue at most this many calls per tenant; default RECONCILE_MAX_CALLS_PER_RUN.",
    )
    correlation_id: str | None = None

    routing: ClassVar[tuple[str, ...]] = ("tenant_id", "correlation_id")


MESSAGE_MODELS: tuple[type[Message], ...] = (
    CallReceived,
    CallRegistered,
    QuarantinedWebhook,
    CallFetched,
    CallWithoutRecording,
    CallTranscribed,
    CallAnalyzed,
    CallCompleted,
    ReconcileRequested,
)


def summarize_validation_error(error: ValidationError) -> str:
    """Where and why a document did not fit its model, without the offending values (they
    may hold a caller's data)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        location = ".".join(str(p) for p in item["loc"]) or "(document)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
