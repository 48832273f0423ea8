"""Operator replays: dead-lettered messages back into their topic, quarantined webhooks
back through intake once their company is onboarded.

Messages are acknowledged only after the replay published them (or after intake gave a
final answer), so an interrupted replay loses nothing: what was not handled stays put.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from callpipe.intake.service import WEBHOOK_PATH, IntakeRequest, WebhookIntake
from callpipe.messages import QuarantinedWebhook
from callpipe.publishing import Publisher
from callpipe.steps import DLQ_ATTRIBUTES


@dataclass
class Pulled:
    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None


@dataclass
class ReplayResult:
    message_id: str
    outcome: str
    detail: str
    attributes: dict[str, str]


class PullSubscription:
    """Synchronous pulls from one subscription (the operator side of a hold)."""

    def __init__(self, project: str, subscription: str, subscriber: Any | None = None) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self.path = self._subscriber.subscription_path(project, subscription)

    def pull(self, limit: int, wait_seconds: float = 2.0) -> Iterator[Pulled]:
        from google.api_core import exceptions

        remaining = limit
        seen: set[str] = set()
        while remaining > 0:
            try:
                response = self._subscriber.pull(
                    request={"subscription": self.path, "max_messages": min(remaining, 100)},
                    timeout=wait_seconds,
                )
            except exceptions.DeadlineExceeded:
                return
            if not response.received_messages:
                return
            for received in response.received_messages:
                message = received.message
                if message.message_id in seen:
                    # A message we released came back: everything has been looked at once.
                    self._subscriber.modify_ack_deadline(
                        request={
                            "subscription": self.path,
                            "ack_ids": [received.ack_id],
                            "ack_deadline_seconds": 0,
                        }
                    )
                    return
                seen.add(message.message_id)
                remaining -= 1
                yield Pulled(
                    ack_id=received.ack_id,
                    message_id=message.message_id,
                    data=bytes(message.data),
                    attributes=dict(message.attributes),
                    publish_time=message.publish_time,
                )

    def ack(self, pulled: Pulled) -> None:
        self._subscriber.acknowledge(
            request={"subscription": self.path, "ack_ids": [pulled.ack_id]}
        )

    def release(self, pulled: Pulled) -> None:
        """Make the message available again at once (leave it in the hold)."""
        self._subscriber.modify_ack_deadline(
            request={
                "subscription": self.path,
                "ack_ids": [pulled.ack_id],
                "ack_deadline_seconds": 0,
            }
        )


def replay_dead_letters(
    hold: PullSubscription,
    publisher: Publisher,
    topic: str,
    limit: int,
    match: dict[str, str] | None = None,
) -> list[ReplayResult]:
    """Republish dead letters to ``topic``; with ``match`` only those whose attributes
    have these values (e.g. ``{"tenant_id": "acme"}``), the others stay in the hold."""
    results = []
    for pulled in hold.pull(limit):
        if match and any(pulled.attributes.get(k) != v for k, v in match.items()):
            hold.release(pulled)
            continue
        attributes = {k: v for k, v in pulled.attributes.items() if k not in DLQ_ATTRIBUTES}
        replays = int(attributes.get("replay_count", "0") or 0) + 1
        attributes["replay_count"] = str(replays)
        attributes["replayed_at"] = datetime.now(UTC).isoformat()
        new_id = publisher.publish(topic, pulled.data, attributes)
        hold.ack(pulled)
        results.append(
            ReplayResult(
                pulled.message_id,
                "replayed",
                f"republished to {topic} as {new_id}",
                pulled.attributes,
            )
        )
    return results


def peek(hold: PullSubscription, limit: int) -> list[Pulled]:
    pulled = list(hold.pull(limit))
    for item in pulled:
        hold.release(item)
    return pulled


def replay_quarantine(
    hold: PullSubscription, intake: WebhookIntake, limit: int, company: str | None = None
) -> list[ReplayResult]:
    """Run quarantined webhooks through intake again, judged at their original receipt time.

    Accepted ones and ones that can never pass (bad signature, malformed) leave the
    quarantine; ones whose company is still unknown, or that met a transient failure, stay.
    """
    results = []
    for pulled in hold.pull(limit):
        try:
            quarantined = QuarantinedWebhook.model_validate_json(pulled.data)
        except ValueError as error:
            hold.ack(pulled)
            results.append(
                ReplayResult(
                    pulled.message_id, "dropped", f"undecodable: {error}", pulled.attributes
                )
            )
            continue
        if company and quarantined.company_key != company:
            hold.release(pulled)
            continue
        raw = quarantined.webhook
        # The route it arrived on (.../webhook/<event-type>) names its event type: keep it.
        route = WEBHOOK_PATH + "/"
        hint = raw.path[len(route) :] if raw.path.startswith(route) else None
        outcome = intake.handle(
            IntakeRequest(
                method="POST",
                path=raw.path,
                headers=raw.headers,
                body=base64.b64decode(raw.body_base64),
                event_hint=hint or None,
            ),
            received_at=raw.received_at,
            keep_unknown=False,
        )
        final = outcome.status < 500 and outcome.outcome != "unknown_company"
        if final:
            hold.ack(pulled)
        else:
            hold.release(pulled)
        results.append(
            ReplayResult(
                pulled.message_id,
                outcome.outcome if final else f"kept ({outcome.outcome})",
                str(outcome.body.get("message") or outcome.body.get("call_id") or ""),
                {
                    "company_key": quarantined.company_key,
                    "correlation_id": quarantined.correlation_id,
                },
            )
        )
    return results
