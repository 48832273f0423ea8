"""Per-tenant analytics over a date range: one Spanner query, aggregated in Python.

A tenant's calls over a bounded range (at most :data:`MAX_RANGE_DAYS`) are few enough to
aggregate in the function: one indexed range read on ``CallsByTenantReceived`` is cheaper
and far easier to keep correct than a dozen GROUP BY queries. Figures are over the calls
*received* in [from, to). Rates are ``null`` when their denominator is zero. Days are
calendar days of the ``tz`` parameter (an IANA time zone; by default the one time zone the
tenant's offices name, if they name exactly one, else UTC): a business in California sees a call at 6 pm on
the day it took it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from callpipe.api.queries import (
    SOURCE_EXPRESSION,
    plain_json,
    rfc3339,
    source_key,
    source_label,
    utc_datetime,
)
from callpipe.ids import ResourceId
from callpipe.timezones import UTC_ZONE, known_zone

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
TOP_KEY_DETAILS = 10
TOP_SOURCES = 20
# Lead-score histogram buckets (scores are 1-100).
SCORE_BUCKETS: tuple[tuple[int, int], ...] = ((1, 20), (21, 40), (41, 60), (61, 80), (81, 100))


class AnalyticsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    received_from: datetime | None = Field(default=None, alias="from")
    received_to: datetime | None = Field(default=None, alias="to")
    # None: the one time zone the tenant's offices name, if exactly one, else UTC
    tz: str | None = Field(default=None, max_length=64)
    # one office's calls only (and, without tz, that office's time zone)
    office_id: ResourceId | None = None

    @field_validator("received_from", "received_to")
    @classmethod
    def _representable(cls, value: datetime | None) -> datetime | None:
        # one without an offset stays as given: it is a time of the analytics' zone, known
        # only once the tenant is (window())
        return value if value is None or value.tzinfo is None else utc_datetime(value)

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if known_zone(value) is None:
            raise ValueError(
                f"unknown time zone {value!r}: give an IANA name such as America/Los_Angeles"
            )
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz) if self.tz else UTC_ZONE

    def window(self, now: datetime, zone: ZoneInfo | None = None) -> tuple[datetime, datetime]:
        """The effective [from, to), in UTC: by default the 30 days of ``zone`` (default
        ``tz``'s) that end with the one ``to`` (default now) falls in, from midnight: 30 day
        buckets, not 31 partial ones. A ``from`` or ``to`` without an offset (a bare date
        included) is a time of ``zone``: "2026-01-01" is the business's New Year midnight."""
        zone = zone or self.zone
        end = _in_zone(self.received_to, zone) or now
        start = _in_zone(self.received_from, zone)
        if start is None:
            try:
                last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
                first_day = last_day - timedelta(days=DEFAULT_RANGE_DAYS - 1)
                midnight = datetime.combine(first_day, time.min, tzinfo=zone)
                start = midnight.astimezone(UTC)
            except (OverflowError, ValueError):
                raise ValueError("'to' is too early for a 30-day range; give 'from'") from None
        if start >= end:
            raise ValueError("'from' must be before 'to' (which defaults to now)")
        try:  # the day buckets are dates of the zone: both ends must have one
            first, last = start.astimezone(zone), end.astimezone(zone)
            (end - timedelta(microseconds=1)).astimezone(zone)
        except (OverflowError, ValueError):
            raise ValueError(f"the range has no dates in {zone.key}") from None
        # days on the zone's clock: a year of dates spans an hour more or less across a
        # daylight-saving change, and is still a year
        if last.replace(tzinfo=None) - first.replace(tzinfo=None) > timedelta(days=MAX_RANGE_DAYS):
            raise ValueError(f"the range may span at most {MAX_RANGE_DAYS} days")
        return start, end


def _in_zone(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """``value`` in UTC, read as a time of ``zone`` when it has no offset."""
    if value is None or value.tzinfo is not None:
        return value
    try:
        return value.replace(tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("the date-time is out of range") from None


_COLUMNS = (
    "ReceivedAt",
    "Answered",
    "Voicemail",
    "IsSpam",
    "LeadScore",
    "Intent",
    "ProjectType",
    "Sentiment",
    "AppointmentRequested",
    "FollowUpRequired",
    "AnalysisStatus",
    "AnalyzedAt",
    # only the part read here: a year of a busy tenant's full analyses is hundreds of MB
    "JSON_QUERY(Analysis, '$.key_details')",
    SOURCE_EXPRESSION,
)


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _days(start: datetime, end: datetime, zone: tzinfo) -> list[date]:
    first, last = (
        start.astimezone(zone).date(),
        (end - timedelta(microseconds=1)).astimezone(zone).date(),
    )
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def aggregate(
    tenant_id: str,
    start: datetime,
    end: datetime,
    rows: Iterable[tuple[Any, ...]],
    zone: ZoneInfo = UTC_ZONE,
    office_id: str | None = None,
) -> dict[str, Any]:
    """The analytics document from rows of :data:`_COLUMNS` (pure, so it is unit-testable).

    The rows are read once, as they stream: memory does not grow with the range.
    """
    by_day: Counter[date] = Counter()
    outcomes: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    projects: Counter[str] = Counter()
    sentiments: Counter[str] = Counter()
    details: Counter[str] = Counter()
    detail_text: dict[str, str] = {}
    score_buckets: Counter[tuple[int, int]] = Counter()
    score_sum = scored = 0
    spam = appointments = follow_ups = analyzed = total = 0
    latency_sum = 0.0
    latencies = 0
    sources: dict[str, _SourceFigures] = {}
    for (
        received,
        answered,
        voicemail,
        is_spam,
        score,
        intent,
        project,
        sentiment,
        appointment,
        follow_up,
        analysis_status,
        analyzed_at,
        key_details,
        source,
    ) in rows:
        total += 1
        label = source_label(source)
        by_source = sources.setdefault(source_key(label), _SourceFigures(label))
        by_source.calls += 1
        by_day[received.astimezone(zone).date()] += 1
        # Voicemail wins over answered: CallRail marks a voicemail as answered by the box.
        if voicemail:
            outcomes["voicemail"] += 1
        elif answered is True:
            outcomes["answered"] += 1
        elif answered is False:
            outcomes["missed"] += 1
        else:
            outcomes["unknown"] += 1
        spam += 1 if is_spam else 0
        by_source.spam_calls += 1 if is_spam else 0
        # what persist writes: "analyzed", or "failed" when the step gave up
        succeeded = analysis_status == "analyzed"
        if succeeded:
            analyzed += 1
            appointments += 1 if appointment else 0
            by_source.appointments += 1 if appointment else 0
        if score is not None:
            value = int(score)
            score_sum += value
            scored += 1
            if not is_spam:
                by_source.lead_scores += 1
                by_source.lead_score_sum += value
            for low, high in SCORE_BUCKETS:
                if low <= value <= high:
                    score_buckets[(low, high)] += 1
        if intent:
            intents[intent] += 1
        if project:
            projects[project] += 1
        if sentiment:
            sentiments[sentiment] += 1
        follow_ups += 1 if follow_up else 0
        # a failed analysis is stamped when the step gave up, maybe hours of retries later
        if succeeded and analyzed_at is not None:
            latency_sum += (analyzed_at - received).total_seconds()
            latencies += 1
        listed = plain_json(key_details)
        keys: set[str] = set()
        for item in listed if isinstance(listed, list) else []:
            # Counted case- and space-insensitively, once per call; the first spelling
            # seen is shown.
            key = " ".join(str(item).lower().split())
            if key and key not in keys:
                keys.add(key)
                details[key] += 1
                detail_text.setdefault(key, " ".join(str(item).split()))
    distribution = [
        {"min": low, "max": high, "calls": score_buckets[(low, high)]}
        for low, high in SCORE_BUCKETS
    ]
    return {
        "tenant_id": tenant_id,
        "office_id": office_id,
        "from": rfc3339(start),
        "to": rfc3339(end),
        "time_zone": zone.key,
        "total_calls": total,
        "calls_by_day": [
            {"date": d.isoformat(), "calls": by_day[d]} for d in _days(start, end, zone)
        ],
        "outcomes": {k: outcomes[k] for k in ("answered", "missed", "voicemail", "unknown")},
        "spam_calls": spam,
        "spam_rate": _rate(spam, total),
        "analyzed_calls": analyzed,
        "lead_score": {
            "average": round(score_sum / scored, 2) if scored else None,
            "scored_calls": scored,
            "distribution": distribution,
        },
        "intents": dict(intents.most_common()),
        "project_types": dict(projects.most_common()),
        "sentiment": dict(sentiments.most_common()),
        "appointment_rate": _rate(appointments, analyzed),
        "follow_ups_pending": follow_ups,
        "top_key_details": [
            {"detail": detail_text[k], "calls": n} for k, n in details.most_common(TOP_KEY_DETAILS)
        ],
        "average_seconds_webhook_to_analysis": (
            round(latency_sum / latencies, 3) if latencies else None
        ),
        "lead_sources": [
            figures.document()
            for figures in sorted(sources.values(), key=lambda f: (-f.calls, f.label.lower()))[
                :TOP_SOURCES
            ]
        ],
    }


class _SourceFigures:
    """One marketing source's calls: how many, how many spam, how good the rest were."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = self.spam_calls = self.appointments = 0
        self.lead_scores = self.lead_score_sum = 0

    def document(self) -> dict[str, Any]:
        return {
            "source": self.label,
            "calls": self.calls,
            "spam_calls": self.spam_calls,
            "average_lead_score": (
                round(self.lead_score_sum / self.lead_scores, 2) if self.lead_scores else None
            ),
            "appointments": self.appointments,
        }


class TenantAnalytics:
    def __init__(self, database: Any) -> None:
        self._db = database

    def compute(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime,
        zone: ZoneInfo = UTC_ZONE,
        office_id: str | None = None,
    ) -> dict[str, Any]:
        from google.cloud.spanner_v1 import param_types

        params: dict[str, Any] = {"t": tenant_id, "from": start, "to": end}
        types: dict[str, Any] = {
            "t": param_types.STRING,
            "from": param_types.TIMESTAMP,
            "to": param_types.TIMESTAMP,
        }
        office = ""
        if office_id is not None:
            office = "AND OfficeId = @office "
            params["office"], types["office"] = office_id, param_types.STRING
        with self._db.snapshot() as snapshot:
            rows = (
                tuple(row)
                for row in snapshot.execute_sql(
                    # the index bounds the read to the window; without the hint Spanner
                    # reads the tenant's whole history (the index covers few columns)
                    f"SELECT {', '.join(_COLUMNS)} "  # noqa: S608 - fixed columns
                    "FROM Calls@{FORCE_INDEX=CallsByTenantReceived} "
                    "WHERE TenantId = @t AND ReceivedAt >= @from AND ReceivedAt < @to "
                    f"{office}"
                    # A fixed order makes ties (and the spelling shown) deterministic.
                    "ORDER BY ReceivedAt, CallId",
                    params=params,
                    param_types=types,
                )
            )
            return aggregate(tenant_id, start, end, rows, zone, office_id)
