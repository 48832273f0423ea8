"""Pydantic models of CallRail webhook payloads as they arrive in real traffic.

Real payloads carry booleans as ``"true"``/``"false"`` strings, durations as strings,
legacy numeric ids next to the ``...resource_id`` ones, and fields that CallRail adds over
time: unknown fields are kept (``extra="allow"``) and the raw body is archived anyway.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


class EventType(StrEnum):
    PRE_CALL = "pre_call"
    CALL_ROUTING_COMPLETE = "call_routing_complete"
    POST_CALL = "post_call"
    CALL_MODIFIED = "call_modified"
    OUTBOUND_POST_CALL = "outbound_post_call"
    OUTBOUND_CALL_MODIFIED = "outbound_call_modified"
    TEXT_MESSAGE_RECEIVED = "text_message_received"
    TEXT_MESSAGE_SENT = "text_message_sent"
    FORM_SUBMISSION = "form_submission"
    CONVERT_ASSIST_COMPLETE = "convert_assist_complete"

    @property
    def is_call_completion(self) -> bool:
        return self in {EventType.POST_CALL, EventType.OUTBOUND_POST_CALL}

    @property
    def is_call_modification(self) -> bool:
        return self in {EventType.CALL_MODIFIED, EventType.OUTBOUND_CALL_MODIFIED}

    @property
    def feeds_pipeline(self) -> bool:
        """Whether the event starts or updates a call in the processing pipeline."""
        return self.is_call_completion or self.is_call_modification

    @classmethod
    def from_hint(cls, hint: str) -> EventType | None:
        """Map a URL path hint such as ``post-call`` or ``Call Modified`` to an event type."""
        normalized = re.sub(r"[\s-]+", "_", hint.strip().lower())
        try:
            return cls(normalized)
        except ValueError:
            return None


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "t"}:
            return True
        if lowered in {"false", "0", "no", "f"}:
            return False
        if lowered in {"", "null", "none"}:
            return None
    return value


def _to_int(value: Any) -> Any:
    if isinstance(value, str):
        stripped = value.strip()
        if stripped == "" or stripped.lower() in {"null", "none"}:
            return None
        try:
            return int(float(stripped))
        except (ValueError, OverflowError):  # "abc", "1e400", "nan"
            return value  # let pydantic report it
    return value


def id_text(value: Any) -> Any:
    """A numeric id as text, as CallRail's legacy ids are numbers; anything else unchanged.

    Integers of any size stay exact (no trip through float); a float only when it is a
    whole number. An infinite or NaN float, or a bool, is no id and is left for the
    caller to refuse.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return str(int(value)) if value.is_integer() else str(value)
        return value
    return value


def _to_str(value: Any) -> Any:
    value = id_text(value)
    if isinstance(value, str):
        return value.strip() or None
    return value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


LooseBool = Annotated[bool | None, BeforeValidator(_to_bool)]


def _int64(value: int | None) -> int | None:
    # the columns these land in (Calls.DurationSeconds) are INT64: a larger number is no
    # duration, and Spanner would refuse it in register-call, after intake said 202
    if value is not None and not -(2**63) <= value < 2**63:
        raise ValueError("out of range for a 64-bit integer")
    return value


LooseInt = Annotated[int | None, BeforeValidator(_to_int), AfterValidator(_int64)]
LooseId = Annotated[str | None, BeforeValidator(_to_str)]
LooseTime = Annotated[datetime | None, BeforeValidator(_blank_to_none)]

_ACCOUNT_IN_URL = re.compile(r"/a/(\d+)(?:/|$)")


class CallRailWebhook(BaseModel):
    """The fields the pipeline reads; every other field is kept as an extra."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    resource_id: LooseId = None
    id: LooseId = None
    company_resource_id: LooseId = None
    company_id: LooseId = None
    person_resource_id: LooseId = None
    tracker_resource_id: LooseId = None
    timestamp: LooseTime = None
    start_time: LooseTime = None
    created_at: LooseTime = None
    direction: str | None = None
    answered: LooseBool = None
    voicemail: LooseBool = None
    spam: LooseBool = None
    first_call: LooseBool = None
    duration: LooseInt = None
    recording_duration: LooseInt = None
    recording: str | None = None
    call_type: str | None = None
    timeline_url: str | None = None
    company_name: str | None = None
    changes: list[Any] | None = None
    tags: list[Any] | None = None
    form_data: Any = Field(default=None)
    content: str | None = None

    @property
    def call_id(self) -> str | None:
        return self.resource_id or self.id

    @property
    def company_keys(self) -> list[str]:
        """Ids to look the company up by: the resource id first, then the legacy number."""
        return [key for key in (self.company_resource_id, self.company_id) if key]

    @property
    def callrail_account_id(self) -> str | None:
        if not self.timeline_url:
            return None
        match = _ACCOUNT_IN_URL.search(self.timeline_url)
        return match.group(1) if match else None

    @property
    def has_recording_fields(self) -> bool:
        """Post-Call payloads carry the recording fields (null when there is no recording);
        Pre-Call and routing events, sent while the call is still going, do not. A missed
        call's Post-Call has ``duration "0"`` and ``answered false`` just like a Pre-Call,
        so those two fields cannot tell the events apart."""
        extras = self.model_extra or {}
        return bool(
            {"recording", "recording_duration"} & self.model_fields_set
            or {"recording_player", "recording_redirect"} & extras.keys()
        )

    @property
    def is_outbound(self) -> bool:
        return (self.direction or "").lower() == "outbound"

    def classify(self, hint: EventType | None = None) -> EventType:
        """Tell the event type apart from the payload's shape (or trust the URL's hint)."""
        if hint is not None:
            return hint
        resource = (self.resource_id or "").upper()
        if self.form_data is not None or resource.startswith("FOR"):
            return EventType.FORM_SUBMISSION
        if self.content is not None or resource.startswith(("SMS", "MSG", "TXT")):
            return (
                EventType.TEXT_MESSAGE_SENT if self.is_outbound else EventType.TEXT_MESSAGE_RECEIVED
            )
        if self.changes is not None:
            return EventType.OUTBOUND_CALL_MODIFIED if self.is_outbound else EventType.CALL_MODIFIED
        if self.has_recording_fields:
            return EventType.OUTBOUND_POST_CALL if self.is_outbound else EventType.POST_CALL
        return EventType.PRE_CALL
