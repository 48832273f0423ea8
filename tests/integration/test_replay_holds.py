"""Operator replays through the real Pub/Sub client against the emulator: what a hold
subscription gives back, leases and releases included. The decisions (what is final, what
stays) are in tests/unit/test_replay.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from callpipe.devstack.stack import LocalStack
from callpipe.publishing import PubSubPublisher
from callpipe.replay import PullSubscription, peek, replay_dead_letters
from tests.conftest import Tap

FEED = "calls.completed"  # only hold subscriptions consume it: nothing reacts to test messages


def test_a_filtered_replay_reaches_every_match_behind_many_others(
    stack: LocalStack, tap: Callable[[str], Tap]
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    project = stack.config.project
    held = tap(FEED)  # a hold of our own, fed like a dead-letter hold
    target = f"replay-target-{uuid.uuid4().hex[:8]}"
    pubsub_v1.PublisherClient().create_topic(name=f"projects/{project}/topics/{target}")
    replayed = tap(target)
    publisher = PubSubPublisher(project, timeout_seconds=5)
    mine = f"mine-{uuid.uuid4().hex[:8]}"
    for i in range(150):  # ahead of ours, and more than one pull's batch
        publisher.publish(FEED, b"other", {"tenant_id": "someone-else", "call_id": f"CALo{i}"})
    for i in range(3):
        publisher.publish(FEED, b"ours", {"tenant_id": mine, "call_id": f"CALm{i}"})

    hold = PullSubscription(project, held.name)
    results = list(
        replay_dead_letters(hold, publisher, target, limit=10, match={"tenant_id": mine})
    )

    assert sorted(r.attributes["call_id"] for r in results) == ["CALm0", "CALm1", "CALm2"]
    arrived = replayed.drain(expect=3)
    assert sorted(m.attributes["call_id"] for m in arrived) == ["CALm0", "CALm1", "CALm2"]
    # the others stay in the hold and are available again at once, not after their lease
    left = peek(hold, 1000)
    assert len(left) == 150
    assert {p.attributes["tenant_id"] for p in left} == {"someone-else"}
    assert peek(hold, 1000) != []  # a peek takes nothing away either


def test_a_replay_leaves_what_failed_again_during_the_run_for_the_next_one(
    stack: LocalStack, tap: Callable[[str], Tap]
) -> None:
    """The replay's target feeds the hold itself: each replayed message comes straight back,
    as a dead letter does when the step fails it again. It is replayed once, not until the
    limit runs out; a message a previous run replayed is replayed again."""
    from datetime import UTC, datetime, timedelta

    project = stack.config.project
    held = tap(FEED)
    publisher = PubSubPublisher(project, timeout_seconds=5)
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    publisher.publish(FEED, b"failed once", {"tenant_id": fresh, "call_id": "CALf"})
    publisher.publish(
        FEED,
        b"failed after yesterday's replay",
        {"tenant_id": fresh, "call_id": "CALy", "replay_count": "1", "replayed_at": earlier},
    )

    hold = PullSubscription(project, held.name)
    results = list(replay_dead_letters(hold, publisher, FEED, limit=10))

    assert sorted(r.attributes["call_id"] for r in results) == ["CALf", "CALy"]
    back = {p.attributes["call_id"]: p.attributes for p in peek(hold, 100)}
    assert sorted(back) == ["CALf", "CALy"]  # each came back once, and stays for next time
    assert (back["CALf"]["replay_count"], back["CALy"]["replay_count"]) == ("1", "2")
