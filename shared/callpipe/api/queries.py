"""Tenant-scoped Spanner reads for the API, and the validation of their parameters.

Every query binds ``TenantId`` as the first key part, so a read can only ever touch one
tenant's interleaved rows; the tenant comes from the caller's token (or, for an operator,
the path), never from a free-form filter. ``request_id`` is the CallRail call id.

Listing uses keyset pagination on (ReceivedAt DESC, CallId ASC), the order of the
``CallsByTenantReceived`` index. The cursor is the last row's key, base64-encoded: a row
inserted between two pages either sorts before the cursor (it is simply not on later
pages) or after it (it shows up once), so no page skips or repeats a row, unlike OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from callpipe.analysis import Intent, ProjectType
from callpipe.ids import ResourceId, TenantId, is_resource_id
from callpipe.progress import StageStatus

MAX_PAGE_SIZE = 200


class InvalidParameters(ValueError):
    """Bad query parameters: the API answers 400 with ``details``."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


# what analytics calls the calls whose source CallRail did not name
UNKNOWN_SOURCE = "unknown"
# The whitespace that Calls.SourceKey's expression collapses: RE2's [[:space:]] is ASCII
# only, so a no-break space stays one; str.split() would collapse it too, and a source
# named with one would be shown under a name the listing's filter cannot find.
_SOURCE_SPACES = re.compile(r"[\t\n\v\f\r ]+")


def source_name(raw: str | None) -> str | None:
    """A call's marketing source as a call shows it: trimmed, each run of spaces as one;
    None when CallRail named none."""
    return _SOURCE_SPACES.sub(" ", (raw or "").strip()) or None


def source_label(raw: str | None) -> str:
    """A call's marketing source as analytics shows it: its name, or "unknown"."""
    return source_name(raw) or UNKNOWN_SOURCE


def source_key(name: str) -> str:
    """A marketing source as Calls.SourceKey keeps it (schema.sql): its name in lower case;
    "" when there is none."""
    return (source_name(name) or "").lower()


def utc_datetime(value: datetime | None) -> datetime | None:
    """In UTC; one without an offset is read as UTC rather than refused (simpler for curl).

    Converting can leave the representable range (0001-01-01T00:00+05:00 is in year 0), so
    that is a ValueError here, i.e. a 400, instead of an OverflowError later, i.e. a 500.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("the date-time is out of range") from None


class ListParams(BaseModel):
    """Query parameters of a tenant's request listing (unknown parameters are refused)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    limit: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=1024)
    received_from: datetime | None = Field(default=None, alias="from")
    received_to: datetime | None = Field(default=None, alias="to")
    intent: Intent | None = None
    project_type: ProjectType | None = None
    min_lead_score: int | None = Field(default=None, ge=0, le=100)
    spam: bool | None = None
    # the callback list and the booked calls (as spam, a call not analysed yet is "false")
    follow_up_required: bool | None = None
    appointment_requested: bool | None = None
    status: StageStatus | None = None
    office_id: ResourceId | None = None
    # CallRail's marketing source, as analytics' lead_sources names it (any case)
    source: str | None = Field(default=None, min_length=1, max_length=200)
    # The change feed: calls changed at or after this moment, oldest change first.
    updated_since: datetime | None = None

    @field_validator("received_from", "received_to", "updated_since")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return utc_datetime(value)

    @field_validator("source")
    @classmethod
    def _source_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = source_key(value)
        if not key:
            raise ValueError("the source must name one")
        return key

    @model_validator(mode="after")
    def _ordered(self) -> ListParams:
        if self.received_from and self.received_to and self.received_from >= self.received_to:
            raise ValueError("'from' must be before 'to'")
        return self


class RequestsListParams(ListParams):
    """``GET /api/v1/requests``: an operator names the tenant; a tenant may name only itself."""

    tenant_id: TenantId | None = None


class RequestParams(BaseModel):
    """Query parameters of the per-request endpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: TenantId | None = None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_params(model: type[BaseModel], query: dict[str, str]) -> Any:
    try:
        return model.model_validate(query)
    except ValidationError as error:
        details = [
            {
                "parameter": ".".join(str(p) for p in e["loc"]) or "query",
                "message": e["msg"],
            }
            for e in error.errors(include_url=False, include_input=False)
        ]
        raise InvalidParameters("invalid query parameters", details) from None


@dataclass(frozen=True)
class Cursor:
    """A position in a tenant's listing: newest received first, or, in the change feed
    (``updated``), oldest change first."""

    tenant_id: str
    at: str  # RFC 3339 with nanoseconds, exactly as Spanner stored it
    call_id: str  # in the feed, "" is the position before every call changed at ``at``
    updated: bool = False

    def encode(self) -> str:
        position = "u" if self.updated else "r"
        raw = json.dumps({"t": self.tenant_id, position: self.at, "c": self.call_id})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(text: str, tenant_id: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            of_feed = "u" in data
            at = data["u"] if of_feed else data["r"]
            cursor = Cursor(str(data["t"]), str(at), str(data["c"]), of_feed)
            _timestamp(cursor.at)
            start = of_feed and cursor.call_id == ""
            if not start and not is_resource_id(cursor.call_id):  # it goes into the query
                raise ValueError("not a call id")
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise InvalidParameters(
                "invalid cursor",
                [{"parameter": "cursor", "message": "not a cursor this API issued"}],
            ) from None
        # A cursor from another tenant's listing is refused rather than reinterpreted.
        if cursor.tenant_id != tenant_id:
            raise _other_listing()
        return cursor


def _other_listing() -> InvalidParameters:
    return InvalidParameters(
        "invalid cursor",
        [{"parameter": "cursor", "message": "the cursor belongs to another listing"}],
    )


def _timestamp(text: str) -> Any:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    return DatetimeWithNanoseconds.from_rfc3339(text)


def rfc3339(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "rfc3339"):
        return str(value.rfc3339())
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def plain_json(value: Any) -> Any:
    """Spanner JSON values come back as JsonObject; make them ordinary JSON data."""
    if value is None:
        return None
    if hasattr(value, "serialize"):
        serialized = value.serialize()
        return None if serialized is None else json.loads(serialized)
    return value


SUMMARY_COLUMNS = (
    "CallId",
    "TenantId",
    "OfficeId",
    "CompanyId",
    "ReceivedAt",
    "StartTime",
    "Direction",
    "DurationSeconds",
    "Answered",
    "Voicemail",
    "Stage",
    "StageStatus",
    "RecordingStatus",
    "TranscriptStatus",
    "AnalysisStatus",
    "Intent",
    "ProjectType",
    "LeadScore",
    "IsSpam",
    "Sentiment",
    "Urgency",
    "AppointmentRequested",
    "FollowUpRequired",
    "UpdatedAt",
    "Source",
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    "StageDetail",
    "CallRailSpam",
    "RecordingUri",
    "RecordingContentType",
    "RecordingDurationSeconds",
    "TranscriptReason",
    "TranscriptEngine",
    "TranscriptModel",
    "TranscriptLanguage",
    "SpeakerCount",
    "AnalysisReason",
    "Timeline",
    "BudgetIndicator",
    "SpamLikelihood",
    "AnalysisEngine",
    "AnalysisModel",
    "AnalyzedAt",
    "CompletedAt",
    "Analysis",
)
_FIELD_NAMES = {
    "CallId": "request_id",
    "TenantId": "tenant_id",
    "OfficeId": "office_id",
    "CompanyId": "company_id",
    "ReceivedAt": "received_at",
    "StartTime": "start_time",
    "Direction": "direction",
    "DurationSeconds": "duration_seconds",
    "Answered": "answered",
    "Voicemail": "voicemail",
    "Stage": "stage",
    "StageStatus": "stage_status",
    "RecordingStatus": "recording_status",
    "TranscriptStatus": "transcript_status",
    "AnalysisStatus": "analysis_status",
    "Intent": "intent",
    "ProjectType": "project_type",
    "LeadScore": "lead_score",
    "IsSpam": "is_spam",
    "Sentiment": "sentiment",
    "Urgency": "urgency",
    "AppointmentRequested": "appointment_requested",
    "FollowUpRequired": "follow_up_required",
    "UpdatedAt": "updated_at",
    "Source": "source",
    "StageDetail": "stage_detail",
    "CallRailSpam": "callrail_spam",
    "RecordingUri": "recording_uri",
    "RecordingContentType": "recording_content_type",
    "RecordingDurationSeconds": "recording_duration_seconds",
    "TranscriptReason": "transcript_reason",
    "TranscriptEngine": "transcript_engine",
    "TranscriptModel": "transcript_model",
    "TranscriptLanguage": "transcript_language",
    "SpeakerCount": "speaker_count",
    "AnalysisReason": "analysis_reason",
    "Timeline": "timeline",
    "BudgetIndicator": "budget_indicator",
    "SpamLikelihood": "spam_likelihood",
    "AnalysisEngine": "analysis_engine",
    "AnalysisModel": "analysis_model",
    "AnalyzedAt": "analyzed_at",
    "CompletedAt": "completed_at",
    "Analysis": "analysis",
}
# Where the call came from, in CallRail's words, all from one record: the webhook (where
# the medium is utm_medium) when it names a source, else CallRail's API view of the call
# (a reconciled call's "webhook" is a listing entry without them). Names of the detail's
# "attribution" object: (webhook path, API path).
ATTRIBUTION: dict[str, tuple[str, str]] = {
    "source": ("$.source", "$.source"),
    "source_name": ("$.source_name", "$.source_name"),
    "campaign": ("$.campaign", "$.campaign"),
    "medium": ("$.utm_medium", "$.medium"),
    "keywords": ("$.keywords", "$.keywords"),
}
# CallRail's marketing source of the call ("Google Ads", "Google Organic", "Direct"...):
# the webhook's, else its API view's (a reconciled call's "webhook" is a listing entry).
# Its source_key() is Calls.SourceKey (schema.sql), which the listing's source filter
# reads, so each source a call or analytics names finds its calls there.
SOURCE_EXPRESSION = (
    "COALESCE(JSON_VALUE(Webhook, '$.source'), JSON_VALUE(CallRailCall, '$.source'))"
)
# what is selected for a column that is not one of the table's
_SELECTED = {"Source": SOURCE_EXPRESSION}
_SUMMARY_SELECT = ", ".join(_SELECTED.get(column, column) for column in SUMMARY_COLUMNS)
_DETAIL_SELECT = ", ".join(
    [
        *(_SELECTED.get(column, column) for column in DETAIL_COLUMNS),
        *(
            "IF(JSON_VALUE(Webhook, '$.source') IS NOT NULL, "
            f"JSON_VALUE(Webhook, '{webhook}'), JSON_VALUE(CallRailCall, '{api}'))"
            for webhook, api in ATTRIBUTION.values()
        ),
    ]
)
_TIMESTAMPS = {"ReceivedAt", "StartTime", "AnalyzedAt", "CompletedAt", "UpdatedAt"}
_RECEIVED_AT = SUMMARY_COLUMNS.index("ReceivedAt")
_UPDATED_AT = SUMMARY_COLUMNS.index("UpdatedAt")


def _row_to_dict(columns: tuple[str, ...], row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, value in zip(columns, row, strict=True):
        if column in _TIMESTAMPS:
            value = rfc3339(value)
        elif column == "Analysis":
            value = plain_json(value)
        elif column == "Source":
            value = source_name(value)
        out[_FIELD_NAMES[column]] = value
    return out


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class CallQueries:
    """The reads behind the API; ``tenant_id`` is always the authorised tenant."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def _rows(self, sql: str, params: dict[str, Any], types: dict[str, Any]) -> list[Any]:
        with self._db.snapshot() as snapshot:
            return list(snapshot.execute_sql(sql, params=params, param_types=types))

    def tenant_exists(self, tenant_id: str) -> bool:
        return self._has_tenant(tenant_id, active_only=False)

    def tenant_active(self, tenant_id: str) -> bool:
        """Whether the tenant exists and is active (as intake requires to queue its calls)."""
        return self._has_tenant(tenant_id, active_only=True)

    def tenant_time_zone(self, tenant_id: str) -> str | None:
        """The time zone of the tenant's offices when they name exactly one, else None."""
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT DISTINCT TimeZone FROM Offices WHERE TenantId = @t AND TimeZone IS NOT NULL "
            "LIMIT 2",
            {"t": tenant_id},
            {"t": param_types.STRING},
        )
        return str(rows[0][0]) if len(rows) == 1 else None

    def office_time_zone(self, tenant_id: str, office_id: str) -> tuple[bool, str | None]:
        """Whether the tenant has the office, and the time zone its row names (if any)."""
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT TimeZone FROM Offices WHERE TenantId = @t AND OfficeId = @o",
            {"t": tenant_id, "o": office_id},
            {"t": param_types.STRING, "o": param_types.STRING},
        )
        return (True, rows[0][0]) if rows else (False, None)

    def _has_tenant(self, tenant_id: str, active_only: bool) -> bool:
        from google.cloud.spanner_v1 import param_types

        active = " AND Status = 'active'" if active_only else ""
        rows = self._rows(
            f"SELECT TenantId FROM Tenants WHERE TenantId = @t{active}",  # noqa: S608 - fixed text
            {"t": tenant_id},
            {"t": param_types.STRING},
        )
        return bool(rows)

    def tenants_of_call(self, call_id: str) -> list[str]:
        """Operators only: which tenants hold a call id (through the CallId index)."""
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT TenantId FROM Calls@{FORCE_INDEX=CallsByCallId} WHERE CallId = @c LIMIT 2",
            {"c": call_id},
            {"c": param_types.STRING},
        )
        return [row[0] for row in rows]

    def list_calls(self, tenant_id: str, params: ListParams) -> Page:
        from google.cloud.spanner_v1 import param_types

        where = ["TenantId = @tenant"]
        values: dict[str, Any] = {"tenant": tenant_id, "limit": params.limit + 1}
        types: dict[str, Any] = {"tenant": param_types.STRING, "limit": param_types.INT64}
        if params.received_from is not None:
            where.append("ReceivedAt >= @from")
            values["from"], types["from"] = params.received_from, param_types.TIMESTAMP
        if params.received_to is not None:
            where.append("ReceivedAt < @to")
            values["to"], types["to"] = params.received_to, param_types.TIMESTAMP
        if params.intent is not None:
            where.append("Intent = @intent")
            values["intent"], types["intent"] = params.intent, param_types.STRING
        if params.min_lead_score is not None:
            where.append("LeadScore >= @min_score")
            values["min_score"], types["min_score"] = params.min_lead_score, param_types.INT64
        if params.project_type is not None:
            where.append("ProjectType = @project")
            values["project"], types["project"] = params.project_type, param_types.STRING
        # A call not (yet) analysed has these NULL: it counts as "false".
        for column, flag, wanted in (
            ("IsSpam", "spam", params.spam),
            ("FollowUpRequired", "follow_up", params.follow_up_required),
            ("AppointmentRequested", "appointment", params.appointment_requested),
        ):
            if wanted is not None:
                where.append(f"IFNULL({column}, FALSE) = @{flag}")
                values[flag], types[flag] = wanted, param_types.BOOL
        if params.status is not None:
            where.append("StageStatus = @status")
            values["status"], types["status"] = params.status.value, param_types.STRING
        if params.office_id is not None:
            where.append("OfficeId = @office")
            values["office"], types["office"] = params.office_id, param_types.STRING
        if params.source is not None:
            # analytics counts the calls without a source under "unknown"
            unnamed = " OR SourceKey IS NULL" if params.source == UNKNOWN_SOURCE else ""
            where.append(f"(SourceKey = @source{unnamed})")
            values["source"], types["source"] = params.source, param_types.STRING
        cursor = None if params.cursor is None else Cursor.decode(params.cursor, tenant_id)
        # the change feed is read with updated_since, or from a position in it
        feed = params.updated_since is not None or (cursor is not None and cursor.updated)
        if cursor is not None and cursor.updated != feed:
            raise _other_listing()  # a position in the listing is none in the feed
        if params.updated_since is not None:
            where.append("UpdatedAt >= @since")
            values["since"], types["since"] = params.updated_since, param_types.TIMESTAMP
        if cursor is not None:
            after = ">" if feed else "<"
            column = "UpdatedAt" if feed else "ReceivedAt"
            # the first bound alone is what the index seeks to; the second orders ties
            where.append(f"{column} {after}= @cursor_at")
            where.append(
                f"({column} {after} @cursor_at OR ({column} = @cursor_at AND CallId > @cursor_id))"
            )
            values["cursor_at"] = _timestamp(cursor.at)
            values["cursor_id"] = cursor.call_id
            types["cursor_at"], types["cursor_id"] = param_types.TIMESTAMP, param_types.STRING
        if feed:
            source, order = "CallsByTenantUpdated", "UpdatedAt, CallId"
        else:
            source, order = "CallsByTenantReceived", "ReceivedAt DESC, CallId"
        # Only fixed column names and clauses are joined into the SQL; values are bound.
        sql = (
            f"SELECT {_SUMMARY_SELECT} FROM Calls@{{FORCE_INDEX={source}}} "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT @limit"
        )
        rows = self._rows(sql, values, types)
        more = len(rows) > params.limit
        rows = rows[: params.limit]
        items = [_row_to_dict(SUMMARY_COLUMNS, row) for row in rows]
        next_cursor = None
        if rows and (more or feed):
            # The feed's position is kept even on its last page: a strong read sees every
            # change committed before it, and Spanner gives any later change a later commit
            # timestamp, so nothing can appear behind a position once it was read.
            last = rows[-1]
            at = last[_UPDATED_AT] if feed else last[_RECEIVED_AT]
            next_cursor = Cursor(tenant_id, str(rfc3339(at)), str(last[0]), feed).encode()
        elif feed:
            # nothing new: poll again from the same position, or from where the feed was
            # asked to start
            next_cursor = params.cursor or (
                Cursor(tenant_id, str(rfc3339(params.updated_since)), "", True).encode()
            )
        return Page(items=items, next_cursor=next_cursor)

    def get_call(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        from google.cloud.spanner_v1 import param_types

        key = {"t": tenant_id, "c": call_id}
        types = {"t": param_types.STRING, "c": param_types.STRING}
        with self._db.snapshot(multi_use=True) as snapshot:
            rows = list(
                snapshot.execute_sql(
                    f"SELECT {_DETAIL_SELECT} FROM Calls "  # noqa: S608 - fixed column names
                    "WHERE TenantId = @t AND CallId = @c",
                    params=key,
                    param_types=types,
                )
            )
            if not rows:
                return None
            stages = list(
                snapshot.execute_sql(
                    "SELECT Stage, Status, Detail, Attempts, UpdatedAt FROM CallStages "
                    "WHERE TenantId = @t AND CallId = @c ORDER BY UpdatedAt",
                    params=key,
                    param_types=types,
                )
            )
        columns = len(DETAIL_COLUMNS)
        call = _row_to_dict(DETAIL_COLUMNS, rows[0][:columns])
        call["attribution"] = dict(zip(ATTRIBUTION, rows[0][columns:], strict=True))
        call["stages"] = [
            {
                "stage": stage,
                "status": status,
                "detail": detail,
                "attempts": attempts,
                "updated_at": rfc3339(updated),
            }
            for stage, status, detail, attempts, updated in stages
        ]
        return call

    def get_transcript(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT TranscriptStatus, TranscriptReason, TranscriptText, TranscriptSegments, "
            "TranscriptEngine, TranscriptModel, TranscriptLanguage, SpeakerCount, AudioSeconds "
            "FROM Calls WHERE TenantId = @t AND CallId = @c",
            {"t": tenant_id, "c": call_id},
            {"t": param_types.STRING, "c": param_types.STRING},
        )
        if not rows:
            return None
        status, reason, text, segments, engine, model, language, speakers, seconds = rows[0]
        return {
            "request_id": call_id,
            "status": status,
            "reason": reason,
            "text": text,
            "segments": plain_json(segments) or [],
            "engine": engine,
            "model": model,
            "language": language,
            "speaker_count": speakers,
            "audio_seconds": seconds,
        }

    def get_analysis(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT AnalysisStatus, AnalysisReason, Analysis, AnalysisEngine, AnalysisModel, "
            "AnalyzedAt FROM Calls WHERE TenantId = @t AND CallId = @c",
            {"t": tenant_id, "c": call_id},
            {"t": param_types.STRING, "c": param_types.STRING},
        )
        if not rows:
            return None
        status, reason, analysis, engine, model, analyzed_at = rows[0]
        return {
            "request_id": call_id,
            "status": status,
            "reason": reason,
            "analysis": plain_json(analysis),
            "engine": engine,
            "model": model,
            "analyzed_at": rfc3339(analyzed_at),
        }

    def get_recording(self, tenant_id: str, call_id: str) -> tuple[str | None, str | None] | None:
        """(RecordingUri, RecordingContentType), or None when the call does not exist."""
        from google.cloud.spanner_v1 import param_types

        rows = self._rows(
            "SELECT RecordingUri, RecordingContentType FROM Calls "
            "WHERE TenantId = @t AND CallId = @c",
            {"t": tenant_id, "c": call_id},
            {"t": param_types.STRING, "c": param_types.STRING},
        )
        if not rows:
            return None
        return rows[0][0], rows[0][1]
