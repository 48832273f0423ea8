"""The pipeline topology (``schemas/pipeline.yaml``) as typed models.

The local stack provisions topics and subscriptions from it and Terraform reads the same
file; the naming conventions are derived here once so both sides agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]


def _find_topology_file() -> Path:
    # In the repository the package is shared/callpipe; in a deployed function bundle it
    # sits next to schemas/ (see callpipe.deploy.bundle).
    here = Path(__file__).resolve()
    for root in (here.parents[1], here.parents[2]):
        candidate = root / "schemas" / "pipeline.yaml"
        if candidate.is_file():
            return candidate
    return REPO_ROOT / "schemas" / "pipeline.yaml"


DEFAULT_TOPOLOGY_FILE = _find_topology_file()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Strict):
    minimum_backoff_seconds: int = Field(ge=0, le=600)
    maximum_backoff_seconds: int = Field(ge=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.minimum_backoff_seconds > self.maximum_backoff_seconds:
            raise ValueError("minimum_backoff_seconds must not exceed maximum_backoff_seconds")
        return self


class Defaults(_Strict):
    ack_deadline_seconds: int = Field(ge=10, le=600)
    message_retention_seconds: int = Field(ge=600, le=604_800)
    retry: RetrySettings
    max_delivery_attempts: int = Field(ge=5, le=100)


class TopicSpec(_Strict):
    description: str
    message: str


class Trigger(_Strict):
    type: Literal["http", "pubsub"]
    topic: str | None = None


class StepSpec(_Strict):
    source: str
    entry_point: str
    trigger: Trigger
    # functions-framework serves the function as ASGI (FUNCTION_USE_ASGI), not WSGI
    asgi: bool = False
    # requests one instance takes at once (Cloud Run); None: Terraform's default for all steps
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    publishes: list[str] = Field(default_factory=list)
    local_port: int
    memory: str = "512Mi"
    max_instances: int = 10
    env: dict[str, str] = Field(default_factory=dict)
    retry: RetrySettings | None = None
    max_delivery_attempts: int | None = Field(default=None, ge=5, le=100)
    ack_deadline_seconds: int | None = Field(default=None, ge=10, le=600)


class HoldSpec(_Strict):
    topic: str
    description: str


class ScheduleSpec(_Strict):
    """A message published to a topic on a unix-cron schedule (Cloud Scheduler in production,
    the local stack's scheduler in ``make run``)."""

    topic: str
    cron: str
    time_zone: str = "Etc/UTC"
    description: str
    # the message's JSON payload (validated against the topic's message model by the tests)
    message: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> ScheduleSpec:
        from callpipe.schedules import Cron, time_zone

        Cron.parse(self.cron)
        time_zone(self.time_zone)
        return self


class Subscription(_Strict):
    """A subscription as provisioned (derived from steps, DLQs and holds)."""

    name: str
    topic: str
    step: str | None
    push_port: int | None
    ack_deadline_seconds: int
    message_retention_seconds: int
    retry: RetrySettings | None
    dead_letter_topic: str | None
    max_delivery_attempts: int | None


class Topology(_Strict):
    version: Literal[1]
    defaults: Defaults
    topics: dict[str, TopicSpec]
    steps: dict[str, StepSpec]
    holds: dict[str, HoldSpec] = Field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Topology:
        consumers: dict[str, str] = {}
        for name, step in self.steps.items():
            if step.trigger.type == "pubsub":
                topic = step.trigger.topic
                if topic not in self.topics:
                    raise ValueError(f"step {name} is triggered by unknown topic {topic!r}")
                if topic in consumers:
                    raise ValueError(
                        f"topic {topic} has two steps ({consumers[topic]}, {name}); "
                        "a DLQ replay would reach both"
                    )
                consumers[topic] = name
            for published in step.publishes:
                if published not in self.topics:
                    raise ValueError(f"step {name} publishes to unknown topic {published!r}")
        for name, hold in self.holds.items():
            if hold.topic not in self.topics:
                raise ValueError(f"hold {name} is on unknown topic {hold.topic!r}")
        for name, schedule in self.schedules.items():
            if schedule.topic not in self.topics:
                raise ValueError(f"schedule {name} publishes to unknown topic {schedule.topic!r}")
        kept = set(consumers) | {hold.topic for hold in self.holds.values()}
        for topic in self.topics:
            if topic not in kept:
                raise ValueError(f"topic {topic} has no subscription: its messages would be lost")
        return self

    @staticmethod
    def dead_letter_topic_of(topic: str) -> str:
        return f"{topic}.dlq"

    def trigger_topics(self) -> list[str]:
        return [s.trigger.topic for s in self.steps.values() if s.trigger.topic]

    def all_topics(self) -> list[str]:
        return [*self.topics, *(self.dead_letter_topic_of(t) for t in self.trigger_topics())]

    def subscriptions(self) -> list[Subscription]:
        d = self.defaults
        subs: list[Subscription] = []
        for name, step in self.steps.items():
            topic = step.trigger.topic
            if step.trigger.type != "pubsub" or topic is None:
                continue
            dlq = self.dead_letter_topic_of(topic)
            subs.append(
                Subscription(
                    name=f"{topic}.{name}",
                    topic=topic,
                    step=name,
                    push_port=step.local_port,
                    ack_deadline_seconds=step.ack_deadline_seconds or d.ack_deadline_seconds,
                    message_retention_seconds=d.message_retention_seconds,
                    retry=step.retry or d.retry,
                    dead_letter_topic=dlq,
                    max_delivery_attempts=step.max_delivery_attempts or d.max_delivery_attempts,
                )
            )
            subs.append(self._hold(f"{dlq}.hold", dlq))
        for name, hold in self.holds.items():
            subs.append(self._hold(name, hold.topic))
        return subs

    def _hold(self, name: str, topic: str) -> Subscription:
        return Subscription(
            name=name,
            topic=topic,
            step=None,
            push_port=None,
            ack_deadline_seconds=self.defaults.ack_deadline_seconds,
            message_retention_seconds=self.defaults.message_retention_seconds,
            retry=None,
            dead_letter_topic=None,
            max_delivery_attempts=None,
        )

    def step_for_topic(self, topic: str) -> str | None:
        for name, step in self.steps.items():
            if step.trigger.topic == topic:
                return name
        return None


def load_topology(path: Path = DEFAULT_TOPOLOGY_FILE) -> Topology:
    with path.open(encoding="utf-8") as handle:
        return Topology.model_validate(yaml.safe_load(handle))
