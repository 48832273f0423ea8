"""unix-cron schedules for the topology's scheduled jobs.

Production hands the expression to Cloud Scheduler; the local stack uses :class:`Cron` to
publish the same message at the same minutes, and the topology check uses it so that a
malformed expression fails the tests, not the deployment. This parser is stricter than
Cloud Scheduler: numbers only (no JAN or MON), in ``*``, ``*/n``, ``a``, ``a-b``,
``a-b/n`` and comma-separated lists of them. Minutes are wall-clock minutes of the
schedule's time zone; on the days clocks change, Cloud Scheduler's handling of a skipped
or repeated minute may differ from the local scheduler's (the topology's schedules use
Etc/UTC, which has no such days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from callpipe.timezones import known_zone

if TYPE_CHECKING:
    from callpipe.publishing import Publisher
    from callpipe.topology import ScheduleSpec, Topology

# (name, lowest, highest) of the five fields
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),  # 0 and 7 are both Sunday
)
# The longest gap between two matches of any valid expression (29 February, or a day of
# month some months lack) is under 8 years; searching further means it never matches.
_HORIZON = timedelta(days=8 * 366)


class CronError(ValueError):
    """Not a unix-cron expression this module (and Cloud Scheduler) accepts."""


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise CronError(
                f"{expression!r} has {len(parts)} fields; unix-cron has 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        values = [
            _field(part, name, low, high)
            for part, (name, low, high) in zip(parts, _FIELDS, strict=True)
        ]
        return cls(
            expression=expression,
            minutes=values[0],
            hours=values[1],
            days=values[2],
            months=values[3],
            weekdays=frozenset(day % 7 for day in values[4]),
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )

    def matches(self, moment: datetime) -> bool:
        """Whether the job runs in ``moment``'s minute (``moment`` in the job's time zone)."""
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day_ok(moment)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first minute after ``moment`` the job runs in (same time zone as ``moment``)."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = moment + _HORIZON
        while candidate < end:
            if candidate.month not in self.months:
                candidate = _first_of_next_month(candidate)
            elif not self._day_ok(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise CronError(f"{self.expression!r} never runs")

    def _day_ok(self, moment: datetime) -> bool:
        day = moment.day in self.days
        weekday = (moment.isoweekday() % 7) in self.weekdays
        # cron's rule: with both day fields restricted, either one matching is enough
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday


def time_zone(name: str) -> ZoneInfo:
    zone = known_zone(name)
    if zone is None:
        raise CronError(f"unknown time zone {name!r} (an IANA name, such as Etc/UTC)")
    return zone


def _first_of_next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0)


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = _number(step_text, name) if step_text else 1
        if step < 1:
            raise CronError(f"{name}: step {step} must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, stop = span.partition("-")
            first, last = _number(start, name), _number(stop, name)
        else:
            first = _number(span, name)
            # "a/n" is "a-high/n", as in Vixie cron
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise CronError(f"{name}: {item!r} is outside {low}-{high} or backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, name: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number (names such as MON are not accepted)")
    return int(text)


@dataclass(frozen=True)
class ScheduledMessage:
    topic: str
    data: bytes
    attributes: dict[str, str]


def scheduled_message(topology: Topology, name: str) -> ScheduledMessage:
    """What schedule ``name`` publishes, as its Cloud Scheduler job does: its message,
    validated by its topic's model, and the schedule's name as the only attribute."""
    from callpipe.messages import MESSAGE_MODELS

    schedule = topology.schedules.get(name)
    if schedule is None:
        known = ", ".join(sorted(topology.schedules)) or "none"
        raise LookupError(f"no schedule {name!r} in the topology (schedules: {known})")
    wanted = topology.topics[schedule.topic].message
    model = next((m for m in MESSAGE_MODELS if m.__name__ == wanted), None)
    if model is None:
        raise LookupError(f"topic {schedule.topic} carries {wanted}, which is no message model")
    message = model.model_validate(schedule.message)
    # the attributes the Cloud Scheduler job sends (terraform/scheduler.tf), no others
    return ScheduledMessage(schedule.topic, message.to_data(), {"schedule": name})


def next_run(schedule: ScheduleSpec, now: datetime) -> datetime:
    """The schedule's first run after ``now``, in its time zone."""
    zone = time_zone(schedule.time_zone)
    return Cron.parse(schedule.cron).next_after(now.astimezone(zone))


class LocalScheduler:
    """Publishes the topology's scheduled messages at their minutes, as Cloud Scheduler does
    in production; :meth:`tick` is called at least once a minute (``make run`` calls it
    every second)."""

    def __init__(self, topology: Topology, publisher: Publisher) -> None:
        self._topology = topology
        self._publisher = publisher
        self._crons = {
            name: (Cron.parse(spec.cron), time_zone(spec.time_zone))
            for name, spec in topology.schedules.items()
        }
        self._fired: dict[str, datetime] = {}

    def next_runs(self, now: datetime) -> dict[str, datetime]:
        return {name: next_run(spec, now) for name, spec in self._topology.schedules.items()}

    def tick(self, now: datetime) -> list[str]:
        """Publish every schedule due in ``now``'s minute that has not run in it yet; the
        names published."""
        published = []
        # the minute as an instant: a wall-clock minute repeated when clocks go back is
        # another minute, not one already run
        instant = now.astimezone(UTC).replace(second=0, microsecond=0)
        for name, (cron, zone) in self._crons.items():
            if not cron.matches(instant.astimezone(zone)) or self._fired.get(name) == instant:
                continue
            message = scheduled_message(self._topology, name)
            self._publisher.publish(message.topic, message.data, message.attributes)
            self._fired[name] = instant
            published.append(name)
        return published
