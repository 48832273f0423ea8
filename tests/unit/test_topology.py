"""The pipeline topology: the real schemas/pipeline.yaml, derived names, validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from callpipe.config import Settings
from callpipe.messages import MESSAGE_MODELS
from callpipe.topology import DEFAULT_TOPOLOGY_FILE, Topology, load_topology


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


def test_the_real_topology_loads(topology: Topology) -> None:
    assert DEFAULT_TOPOLOGY_FILE.name == "pipeline.yaml"
    assert topology.version == 1
    assert {"calls.received", "calls.registered", "webhooks.quarantine"} <= set(topology.topics)
    assert topology.steps["intake"].trigger.type == "http"
    assert topology.steps["register-call"].trigger.topic == "calls.received"


def test_derived_subscriptions_of_the_real_topology(topology: Topology) -> None:
    subs = {s.name: s for s in topology.subscriptions()}
    assert {
        "calls.received.register-call",
        "calls.received.dlq.hold",
        "webhooks.quarantine.hold",
        "calls.registered.fetch-call",
        "calls.registered.dlq.hold",
        "calls.fetched.download-recording",
        "calls.fetched.dlq.hold",
        "recordings.stored.transcribe",
        "calls.transcribed.analyze",
        "calls.analyzed.persist",
        "calls.completed.backlog",
    } <= set(subs)
    assert subs["recordings.stored.transcribe"].ack_deadline_seconds == 600

    step_sub = subs["calls.received.register-call"]
    assert step_sub.topic == "calls.received"
    assert step_sub.step == "register-call"
    assert step_sub.push_port == topology.steps["register-call"].local_port
    assert step_sub.dead_letter_topic == "calls.received.dlq"
    assert step_sub.max_delivery_attempts == topology.defaults.max_delivery_attempts
    assert 5 <= (step_sub.max_delivery_attempts or 0) <= 100
    assert step_sub.retry == topology.defaults.retry
    assert step_sub.ack_deadline_seconds == topology.defaults.ack_deadline_seconds
    assert step_sub.message_retention_seconds == topology.defaults.message_retention_seconds

    hold = subs["calls.received.dlq.hold"]
    assert hold.topic == "calls.received.dlq"
    assert hold.step is None and hold.push_port is None
    assert hold.dead_letter_topic is None and hold.retry is None
    assert hold.max_delivery_attempts is None


def test_every_topic_including_dlqs_has_a_subscription(topology: Topology) -> None:
    subscribed = {s.topic for s in topology.subscriptions()}
    assert "calls.received.dlq" in topology.all_topics()
    assert set(topology.all_topics()) <= subscribed
    # and no subscription points at a topic that is not provisioned
    assert subscribed <= set(topology.all_topics())


def test_subscription_names_are_unique(topology: Topology) -> None:
    names = [s.name for s in topology.subscriptions()]
    assert len(names) == len(set(names))


def test_step_for_topic(topology: Topology) -> None:
    assert topology.step_for_topic("calls.received") == "register-call"
    assert topology.step_for_topic("webhooks.quarantine") is None
    assert topology.step_for_topic("no.such.topic") is None


def test_topic_messages_name_real_message_models(topology: Topology) -> None:
    models = {model.__name__ for model in MESSAGE_MODELS}
    for name, topic in topology.topics.items():
        assert topic.message in models, f"topic {name} carries unknown message {topic.message}"


def _settings_by_alias() -> dict[str, Any]:
    return {
        field.alias: field.default
        for field in Settings.model_fields.values()
        if field.alias is not None
    }


def test_step_env_topic_names_equal_the_code_defaults(topology: Topology) -> None:
    """What the functions default to must be what the topology provisions and deploys."""
    defaults = _settings_by_alias()
    checked = 0
    for name, step in topology.steps.items():
        for key, value in step.env.items():
            assert key in defaults, f"step {name}: {key} is not a Settings variable"
            if key == "DEAD_LETTER_TOPIC":
                # Settings leaves it None; each step's main.py derives "<trigger topic>.dlq".
                assert step.trigger.topic is not None
                assert value == Topology.dead_letter_topic_of(step.trigger.topic)
            else:
                assert value == defaults[key], f"step {name}: {key}={value} vs {defaults[key]}"
                assert value in topology.topics
            checked += 1
    assert checked >= 4


def test_topics_a_step_publishes_through_env_are_declared_in_publishes(topology: Topology) -> None:
    for name, step in topology.steps.items():
        for key, value in step.env.items():
            if key.endswith("_TOPIC") and key != "DEAD_LETTER_TOPIC":
                assert value in step.publishes, f"step {name} publishes {value} undeclared"


# -- validation of invalid topologies ------------------------------------------------------------


def minimal() -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {
            "ack_deadline_seconds": 60,
            "message_retention_seconds": 604800,
            "retry": {"minimum_backoff_seconds": 10, "maximum_backoff_seconds": 600},
            "max_delivery_attempts": 5,
        },
        "topics": {
            "a": {"description": "first", "message": "CallReceived"},
            "b": {"description": "second", "message": "CallRegistered"},
        },
        "steps": {
            "ingest": {
                "source": "functions/ingest",
                "entry_point": "ingest",
                "trigger": {"type": "http"},
                "publishes": ["a"],
                "local_port": 8080,
            },
            "work": {
                "source": "functions/work",
                "entry_point": "work",
                "trigger": {"type": "pubsub", "topic": "a"},
                "publishes": ["b"],
                "local_port": 8090,
            },
        },
        "holds": {"b.hold": {"topic": "b", "description": "keep b"}},
    }


def test_minimal_topology_is_valid_and_derives_names() -> None:
    topo = Topology.model_validate(minimal())
    assert [s.name for s in topo.subscriptions()] == ["a.work", "a.dlq.hold", "b.hold"]
    assert topo.all_topics() == ["a", "b", "a.dlq"]


def test_step_overrides_retry_and_max_delivery_attempts() -> None:
    data = minimal()
    data["steps"]["work"]["retry"] = {"minimum_backoff_seconds": 1, "maximum_backoff_seconds": 30}
    data["steps"]["work"]["max_delivery_attempts"] = 20
    sub = Topology.model_validate(data).subscriptions()[0]
    assert sub.max_delivery_attempts == 20
    assert sub.retry is not None
    assert (sub.retry.minimum_backoff_seconds, sub.retry.maximum_backoff_seconds) == (1, 30)


def mutate(path: list[str], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(minimal())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            mutate(["steps", "work", "trigger"], {"type": "pubsub", "topic": "nope"}),
            "step work is triggered by unknown topic 'nope'",
        ),
        (
            mutate(
                ["steps", "again"],
                {
                    "source": "functions/again",
                    "entry_point": "again",
                    "trigger": {"type": "pubsub", "topic": "a"},
                    "local_port": 8091,
                },
            ),
            "topic a has two steps (work, again)",
        ),
        (mutate(["holds"], {}), "topic b has no subscription"),
        (
            mutate(["steps", "work", "publishes"], ["b", "c"]),
            "step work publishes to unknown topic 'c'",
        ),
        (
            mutate(["holds", "b.hold"], {"topic": "zzz", "description": "x"}),
            "hold b.hold is on unknown topic 'zzz'",
        ),
    ],
)
def test_invalid_topologies_are_rejected_with_a_clear_error(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Topology.model_validate(data)


@pytest.mark.parametrize("attempts", [4, 0, 101])
def test_max_delivery_attempts_outside_5_to_100_is_rejected(attempts: int) -> None:
    with pytest.raises(ValidationError, match="max_delivery_attempts"):
        Topology.model_validate(mutate(["defaults", "max_delivery_attempts"], attempts))
    with pytest.raises(ValidationError, match="max_delivery_attempts"):
        Topology.model_validate(mutate(["steps", "work", "max_delivery_attempts"], attempts))


@pytest.mark.parametrize("concurrency", [0, 1001, "lots"])
def test_step_concurrency_outside_1_to_1000_is_rejected(concurrency: Any) -> None:
    with pytest.raises(ValidationError, match="concurrency"):
        Topology.model_validate(mutate(["steps", "ingest", "concurrency"], concurrency))


def test_step_concurrency_and_asgi_default_to_terraform_and_wsgi() -> None:
    step = Topology.model_validate(minimal()).steps["ingest"]
    assert (step.concurrency, step.asgi) == (None, False)
    step = Topology.model_validate(mutate(["steps", "ingest", "concurrency"], 80)).steps["ingest"]
    assert step.concurrency == 80


@pytest.mark.parametrize("attempts", [5, 100])
def test_max_delivery_attempts_bounds_are_accepted(attempts: int) -> None:
    topo = Topology.model_validate(mutate(["steps", "work", "max_delivery_attempts"], attempts))
    assert topo.subscriptions()[0].max_delivery_attempts == attempts


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Topology.model_validate(mutate(["steps", "work", "retries"], 3))


def test_backoff_beyond_pubsubs_600_seconds_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Topology.model_validate(
            mutate(
                ["defaults", "retry"],
                {"minimum_backoff_seconds": 10, "maximum_backoff_seconds": 601},
            )
        )


def test_retry_backoff_must_be_ordered() -> None:
    from pydantic import ValidationError

    from callpipe.topology import RetrySettings

    with pytest.raises(ValidationError, match="must not exceed"):
        RetrySettings(minimum_backoff_seconds=60, maximum_backoff_seconds=10)
