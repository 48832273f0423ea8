"""Analytics figures from rows as persist writes them (analysis "analyzed" or "failed"),
the default window, and days counted in the tenant's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callpipe.api.analytics import AnalyticsParams, aggregate

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 8, tzinfo=UTC)


def row(
    received: datetime,
    status: str | None = "analyzed",
    analyzed_after: timedelta | None = timedelta(seconds=30),
    appointment: bool = False,
    details: list[str] | None = None,
    score: int | None = 50,
    source: str | None = "Google Ads",
    spam: bool = False,
) -> tuple[Any, ...]:
    """A row of analytics._COLUMNS."""
    return (
        received,
        True,  # answered
        False,  # voicemail
        spam,
        score,
        "quote_request",
        "kitchen",
        "positive",
        appointment,
        False,  # follow-up
        status,
        received + analyzed_after if analyzed_after is not None else None,
        details,  # Spanner gives a JsonObject; plain_json passes a list through
        source,
    )


def test_analyses_persist_recorded_as_done_are_counted_and_failed_ones_are_not() -> None:
    rows = [
        row(START + timedelta(hours=1), appointment=True),
        row(START + timedelta(hours=2)),
        # gave up after hours of retries: stamped then, and no appointment to count
        row(START + timedelta(hours=3), status="failed", analyzed_after=timedelta(hours=6)),
    ]
    figures = aggregate("acme", START, END, rows)
    assert figures["analyzed_calls"] == 2
    assert figures["appointment_rate"] == 0.5
    assert figures["average_seconds_webhook_to_analysis"] == 30.0


def test_a_key_detail_counts_the_calls_that_mention_it() -> None:
    rows = [
        row(START + timedelta(hours=1), details=["Pasadena", "pasadena ", "granite"]),
        row(START + timedelta(hours=2), details=["PASADENA"]),
    ]
    top = aggregate("acme", START, END, rows)["top_key_details"]
    assert top == [{"detail": "Pasadena", "calls": 2}, {"detail": "granite", "calls": 1}]


def test_the_default_window_is_thirty_whole_days_ending_with_today() -> None:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    start, end = AnalyticsParams().window(now)
    assert (start, end) == (datetime(2026, 10, 28, tzinfo=UTC), now)
    assert len(aggregate("acme", start, end, [])["calls_by_day"]) == 30


def test_days_and_the_default_window_follow_the_time_zone() -> None:
    params = AnalyticsParams.model_validate({"tz": "America/Los_Angeles"})
    now = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # still 25 November in California
    start, end = params.window(now)
    assert start == datetime(2026, 10, 27, tzinfo=ZoneInfo("America/Los_Angeles"))
    # 6 pm on 24 November in California is 02:00 UTC on the 25th
    evening = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    figures = aggregate("acme", start, end, [row(evening)], params.zone)
    by_day = {d["date"]: d["calls"] for d in figures["calls_by_day"]}
    assert by_day["2026-11-24"] == 1 and by_day["2026-11-25"] == 0
    assert len(by_day) == 30 and figures["time_zone"] == "America/Los_Angeles"


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        AnalyticsParams.model_validate({"tz": "Mars/Olympus"})


def test_an_explicit_range_at_the_start_of_the_calendar_is_taken_as_given() -> None:
    params = AnalyticsParams.model_validate(
        {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"}
    )
    start, end = params.window(datetime(2026, 11, 26, tzinfo=UTC))
    assert (start, end) == (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC))


LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def test_a_date_or_time_without_an_offset_is_the_businesss() -> None:
    """January for a business in California is January there: a call at 5 pm on 31
    December (01:00 UTC on 1 January) is not in it, one at 7 pm on 31 January is."""
    params = AnalyticsParams.model_validate({"from": "2026-01-01", "to": "2026-02-01T00:00"})
    start, end = params.window(datetime(2026, 11, 26, tzinfo=UTC), LOS_ANGELES)
    assert (start, end) == (
        datetime(2026, 1, 1, 8, tzinfo=UTC),
        datetime(2026, 2, 1, 8, tzinfo=UTC),
    )
    new_years_eve = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    last_evening = datetime(2026, 2, 1, 3, 0, tzinfo=UTC)
    rows = [row(t) for t in (new_years_eve, last_evening) if start <= t < end]
    figures = aggregate("acme", start, end, rows, LOS_ANGELES)
    days = [d["date"] for d in figures["calls_by_day"]]
    assert (days[0], days[-1], len(days)) == ("2026-01-01", "2026-01-31", 31)
    assert figures["total_calls"] == 1
    # with an offset, it is that instant, whatever the zone
    utc = AnalyticsParams.model_validate(
        {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    )
    assert utc.window(datetime(2026, 11, 26, tzinfo=UTC), LOS_ANGELES)[0] == datetime(
        2026, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("given", "zone"),
    [
        ({"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z"}, "America/Los_Angeles"),
        ({"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:00:00Z"}, "Pacific/Kiritimati"),
        ({"from": "0001-01-01", "to": "0001-01-03"}, "Asia/Tokyo"),
    ],
)
def test_a_range_with_no_dates_in_the_zone_is_refused_not_a_crash(
    given: dict[str, str], zone: str
) -> None:
    with pytest.raises(ValueError, match=r"out of range|no dates in"):
        AnalyticsParams.model_validate(given).window(
            datetime(2026, 11, 26, tzinfo=UTC), ZoneInfo(zone)
        )


def test_lead_sources_say_which_marketing_brings_calls_and_how_good_they_are() -> None:
    """Spam is counted per source and left out of its average lead score: a paid source
    that draws robocalls must not look like it brings poor leads, nor hide them."""
    rows = [
        row(START, score=80, source="Google Ads", appointment=True),
        row(START, score=60, source="google  ads"),  # the same source, spelled otherwise
        row(START, score=1, source="Google Ads", spam=True),
        row(START, score=40, source="Direct"),
        row(START, status="failed", score=None, source=None),
    ]
    sources = aggregate("acme", START, END, rows)["lead_sources"]
    assert sources == [
        {
            "source": "Google Ads",
            "calls": 3,
            "spam_calls": 1,
            "average_lead_score": 70.0,
            "appointments": 1,
        },
        {
            "source": "Direct",
            "calls": 1,
            "spam_calls": 0,
            "average_lead_score": 40.0,
            "appointments": 0,
        },
        {
            "source": "unknown",
            "calls": 1,
            "spam_calls": 0,
            "average_lead_score": None,
            "appointments": 0,
        },
    ]


def test_a_year_of_dates_is_a_year_across_a_daylight_saving_change() -> None:
    """366 dates in New York span 366 days and an hour of real time: still allowed."""
    new_york = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 26, tzinfo=UTC)
    allowed = AnalyticsParams.model_validate({"from": "2023-11-04", "to": "2024-11-04"})
    start, end = allowed.window(now, new_york)
    assert end - start == timedelta(days=366, hours=1)
    too_long = AnalyticsParams.model_validate({"from": "2023-11-04", "to": "2024-11-05"})
    with pytest.raises(ValueError, match="at most 366 days"):
        too_long.window(now, new_york)
