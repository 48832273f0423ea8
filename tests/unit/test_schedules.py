"""unix-cron schedules as Cloud Scheduler reads them, and the local scheduler that publishes
the topology's scheduled messages at their minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from callpipe.messages import ReconcileRequested
from callpipe.publishing import PublishFailed
from callpipe.schedules import Cron, CronError, LocalScheduler, scheduled_message
from callpipe.topology import Topology, load_topology
from tests.unit.conftest import RecordingPublisher


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("17 * * * *", "2026-11-26T09:17", True),
        ("17 * * * *", "2026-11-26T09:18", False),
        ("*/15 8-17 * * 1-5", "2026-11-26T08:45", True),  # a Thursday
        ("*/15 8-17 * * 1-5", "2026-11-28T08:45", False),  # a Saturday
        ("*/15 8-17 * * 1-5", "2026-11-26T18:00", False),
        ("5/20 * * * *", "2026-11-26T00:45", True),  # 5, 25, 45
        ("0 0 * * 7", "2026-11-29T00:00", True),  # 7 is Sunday, as 0
        ("0 0 * * 0", "2026-11-29T00:00", True),
        # both day fields restricted: either matching is enough (cron's rule)
        ("0 0 1 * 1", "2026-11-30T00:00", True),  # a Monday, not the 1st
        ("0 0 1 * 1", "2026-12-01T00:00", True),  # the 1st, a Tuesday
        ("0 0 1 * 1", "2026-12-02T00:00", False),
        # one of them "*": both must match
        ("0 0 * 12 1", "2026-12-01T00:00", False),
        ("0 9,18 1-7 1,7 *", "2027-07-03T18:00", True),
    ],
)
def test_a_cron_expression_matches_the_minutes_cron_runs_it(
    expression: str, moment: str, expected: bool
) -> None:
    assert Cron.parse(expression).matches(at(moment)) is expected


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("17 * * * *", "2026-11-26T09:17:30", "2026-11-26T10:17"),
        ("17 * * * *", "2026-11-26T09:16:59", "2026-11-26T09:17"),
        ("0 0 1 1 *", "2026-11-26T09:00", "2027-01-01T00:00"),
        ("0 12 29 2 *", "2026-03-01T00:00", "2028-02-29T12:00"),
        ("*/15 8-17 * * 1-5", "2026-11-27T17:50", "2026-11-30T08:00"),
    ],
)
def test_the_next_run_is_the_first_matching_minute_after(
    expression: str, after: str, expected: str
) -> None:
    cron = Cron.parse(expression)
    found = cron.next_after(at(after))
    assert found == at(expected)
    # nothing matched in between
    probe = at(after).replace(second=0) + timedelta(minutes=1)
    while probe < found and probe - at(after) < timedelta(days=2):
        assert not cron.matches(probe), probe
        probe += timedelta(minutes=1)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("17 * * *", "has 4 fields"),
        ("60 * * * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 0 * *", "day of month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day of week"),
        ("0 0 * * MON", "names such as MON"),
        ("*/0 * * * *", "step 0"),
        ("10-5 * * * *", "backwards"),
    ],
)
def test_a_malformed_expression_is_refused_with_the_reason(expression: str, problem: str) -> None:
    with pytest.raises(CronError, match=problem):
        Cron.parse(expression)


def test_an_expression_that_never_runs_says_so() -> None:
    with pytest.raises(CronError, match="never runs"):
        Cron.parse("0 0 31 2 *").next_after(at("2026-01-01T00:00"))


def topology_with(schedule: dict[str, object]) -> Topology:
    raw = load_topology().model_dump(exclude_none=True)
    raw["schedules"] = {"tick": schedule}
    return Topology.model_validate(raw)


def test_every_schedule_of_the_topology_publishes_a_valid_message() -> None:
    topology = load_topology()
    assert topology.schedules, "the topology schedules the reconciliation"
    for name in topology.schedules:
        message = scheduled_message(topology, name)
        assert message.attributes == {"schedule": name}  # as the Cloud Scheduler job
        assert topology.steps[topology.step_for_topic(message.topic) or ""].trigger.topic
    reconcile = scheduled_message(topology, "reconcile")
    request = ReconcileRequested.from_data(reconcile.data)
    assert request.tenant_id is None  # every tenant


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ({"topic": "no.such", "cron": "0 * * * *", "description": "x"}, "unknown topic"),
        ({"topic": "reconcile.requested", "cron": "0 * * *", "description": "x"}, "5"),
        (
            {
                "topic": "reconcile.requested",
                "cron": "0 * * * *",
                "time_zone": "Mars/Base",
                "description": "x",
            },
            "unknown time zone",
        ),
        (
            {
                "topic": "reconcile.requested",
                "cron": "0 * * * *",
                "time_zone": "America",  # a folder of the zone database, not a zone
                "description": "x",
            },
            "unknown time zone",
        ),
    ],
)
def test_a_schedule_the_deployment_could_not_create_is_refused(
    schedule: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        topology_with(schedule)


def test_a_schedule_whose_message_its_topic_refuses_is_refused_before_publishing() -> None:
    topology = topology_with(
        {
            "topic": "reconcile.requested",
            "cron": "0 * * * *",
            "description": "x",
            "message": {"limit": -1},
        }
    )
    with pytest.raises(ValidationError):
        scheduled_message(topology, "tick")
    with pytest.raises(LookupError, match="no schedule 'nope'"):
        scheduled_message(topology, "nope")


def test_the_local_scheduler_publishes_once_in_each_matching_minute() -> None:
    publisher = RecordingPublisher()
    scheduler = LocalScheduler(load_topology(), publisher)  # reconcile: "17 * * * *"
    seconds = [at("2026-11-26T09:16:59"), at("2026-11-26T09:17:00"), at("2026-11-26T09:17:01")]
    seconds += [at("2026-11-26T09:17:59"), at("2026-11-26T09:18:00"), at("2026-11-26T10:17:30")]
    fired = [scheduler.tick(second) for second in seconds]
    assert fired == [[], ["reconcile"], [], [], [], ["reconcile"]]
    assert [m.topic for m in publisher.messages] == ["reconcile.requested"] * 2
    assert scheduler.next_runs(at("2026-11-26T09:17:00")) == {"reconcile": at("2026-11-26T10:17")}


def test_the_local_scheduler_reads_the_minutes_in_the_schedules_time_zone() -> None:
    topology = topology_with(
        {
            "topic": "reconcile.requested",
            "cron": "0 9 * * *",
            "time_zone": "America/Los_Angeles",
            "description": "x",
        }
    )
    publisher = RecordingPublisher()
    scheduler = LocalScheduler(topology, publisher)
    assert scheduler.tick(at("2026-11-26T09:00")) == []
    assert scheduler.tick(at("2026-11-26T17:00")) == ["tick"]  # 09:00 in Los Angeles (PST)
    assert scheduler.next_runs(at("2026-11-26T17:00"))["tick"] == datetime(
        2026, 11, 27, 9, 0, tzinfo=ZoneInfo("America/Los_Angeles")
    )


class FailsOnce(RecordingPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        if not self.failed:
            self.failed = True
            raise PublishFailed(f"Pub/Sub did not accept the message on {topic}")
        return super().publish(topic, data, attributes)


def test_a_schedule_that_could_not_publish_is_tried_again_within_its_minute() -> None:
    publisher = FailsOnce()
    scheduler = LocalScheduler(load_topology(), publisher)
    with pytest.raises(PublishFailed):
        scheduler.tick(at("2026-11-26T09:17:00"))
    assert scheduler.tick(at("2026-11-26T09:17:01")) == ["reconcile"]
    assert scheduler.tick(at("2026-11-26T09:17:02")) == []
    assert len(publisher.messages) == 1


def test_an_hourly_schedule_runs_in_both_hours_that_share_a_wall_clock_when_clocks_go_back() -> (
    None
):
    topology = topology_with(
        {
            "topic": "reconcile.requested",
            "cron": "17 * * * *",
            "time_zone": "America/New_York",
            "description": "x",
        }
    )
    scheduler = LocalScheduler(topology, RecordingPublisher())
    # 2026-11-01: 01:17 EDT is 05:17Z, then 01:17 EST is 06:17Z, an hour later
    assert scheduler.tick(at("2026-11-01T05:17")) == ["tick"]
    assert scheduler.tick(at("2026-11-01T06:17")) == ["tick"]
