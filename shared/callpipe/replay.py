"""Operator replays: dead-lettered messages back into their topic, quarantined webhooks
back through intake once their company is onboarded.

Messages are acknowledged only after the replay published them (or after intake gave a
final answer), so an interrupted replay loses nothing: what was not handled stays put.
Results are yielded one by one, so the CLI shows progress as the replay goes.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from callpipe.intake.service import WEBHOOK_PATH, IntakeRequest, WebhookIntake
from callpipe.messages import QuarantinedWebhook, summarize_validation_error
from callpipe.publishing import Publisher, PublishFailed
from callpipe.steps import DLQ_ATTRIBUTES
from callpipe.transcription import message_call


@dataclass
class Pulled:
    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None


class ReplayAckFailed(RuntimeError):
    """A replayed message could not be acknowledged in its hold: it stays there."""


@dataclass
class ReplayResult:
    message_id: str
    outcome: str
    detail: str
    attributes: dict[str, str]


# Quarantine replay outcomes after which a webhook leaves the quarantine: queued, or one
# that can never pass (outside the timestamp window when it arrived). Anything else stays:
# an unusable payload (kept for a fixed release to accept), and a signature the company's
# tokens do not match (forged, or the company onboarded with a mistyped token: the webhook
# is authentic and CallRail never sends it again; add the right token, replay again), unless
# the operator drops those (``drop_forged``).
FINAL_QUARANTINE_OUTCOMES = frozenset({"accepted", "stale_webhook"})
# Attributes Pub/Sub adds when its dead-letter policy forwards a message (delivery count,
# source subscription): about that failure, not one to come.
_PUBSUB_DEAD_LETTER_PREFIX = "CloudPubSubDeadLetterSource"
# Leases of the messages a pull holds are renewed this often, well within the holds' ack
# deadline (60 s), so that none comes back, or is acknowledged too late, mid-run.
_LEASE_RENEWAL_SECONDS = 20.0
_LEASE_SECONDS = 60
_ACK_IDS_PER_REQUEST = 1000
_PULL_RETRY_SECONDS = 15.0
# A pull ends after this many batches in a row of nothing but messages it has seen.
_STALE_BATCHES = 3

logger = logging.getLogger(__name__)


class PullSubscription:
    """Synchronous pulls from one subscription (the operator side of a hold)."""

    def __init__(
        self,
        project: str,
        subscription: str,
        subscriber: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if subscriber is None:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]

            subscriber = pubsub_v1.SubscriberClient()
        self._subscriber = subscriber
        self._clock = clock
        self.path = self._subscriber.subscription_path(project, subscription)
        # leased by the running pull and given back when it ends: message id -> ack id
        self._held: dict[str, str] = {}
        self._pulling = False

    def pull(
        self,
        limit: int,
        wait_seconds: float = 2.0,
        wanted: Callable[[Pulled], bool] | None = None,
    ) -> Iterator[Pulled]:
        """Up to ``limit`` messages (only ``wanted`` ones), each once.

        The messages passed over, and those released meanwhile, stay leased until the pull
        ends, so that it goes on to the messages behind them; it ends when the subscription
        has nothing more to give. Then they, and whatever was pulled but not handed out
        (the pull stopped early), are made available again at once.
        """
        from google.api_core import exceptions

        remaining = limit
        seen: set[str] = set()
        waiting: dict[str, str] = {}  # pulled, not handed out yet: message id -> ack id
        self._pulling = True
        renewed = self._clock()
        stale_batches = 0

        def renew_if_due() -> None:
            nonlocal renewed
            if self._clock() - renewed >= _LEASE_RENEWAL_SECONDS:
                self._set_deadline([*self._held.values(), *waiting.values()], _LEASE_SECONDS)
                renewed = self._clock()

        try:
            while remaining > 0:
                renew_if_due()
                try:
                    response = self._subscriber.pull(
                        request={"subscription": self.path, "max_messages": 100},
                        timeout=wait_seconds,
                        retry=_pull_retry(),
                    )
                except exceptions.DeadlineExceeded:
                    return
                batch = list(response.received_messages)
                if not batch:
                    return  # everything there is has been looked at (or is leased by us)
                waiting = {r.message.message_id: r.ack_id for r in batch}
                fresh = 0
                for received in batch:
                    message = received.message
                    if message.message_id in seen:  # its lease ran out: hold it again
                        self._held[message.message_id] = waiting.pop(message.message_id)
                        continue
                    seen.add(message.message_id)
                    fresh += 1
                    item = Pulled(
                        ack_id=received.ack_id,
                        message_id=message.message_id,
                        data=bytes(message.data),
                        attributes=dict(message.attributes),
                        publish_time=message.publish_time,
                    )
                    if remaining <= 0 or (wanted is not None and not wanted(item)):
                        self._held[item.message_id] = waiting.pop(item.message_id)
                        continue
                    renew_if_due()
                    waiting.pop(item.message_id)
                    remaining -= 1
                    yield item
                # Only messages seen before, again and again, means leases keep running
                # out: going on would only see them again.
                stale_batches = 0 if fresh else stale_batches + 1
                if stale_batches >= _STALE_BATCHES:
                    return
        finally:
            self._pulling = False
            given_back = [*self._held.values(), *waiting.values()]
            self._held = {}
            self._set_deadline(given_back, 0, raising=False)

    def ack(self, pulled: Pulled) -> None:
        self._held.pop(pulled.message_id, None)
        self._subscriber.acknowledge(
            request={"subscription": self.path, "ack_ids": [pulled.ack_id]}
        )

    def release(self, pulled: Pulled) -> None:
        """Leave the message in the hold: available again once the running pull ends (at
        once outside a pull)."""
        if self._pulling:
            self._held[pulled.message_id] = pulled.ack_id
        else:
            self._set_deadline([pulled.ack_id], 0)

    def _set_deadline(self, ack_ids: list[str], seconds: int, raising: bool = True) -> None:
        """Every chunk is tried: one that fails does not keep the others leased."""
        failed: Exception | None = None
        for start in range(0, len(ack_ids), _ACK_IDS_PER_REQUEST):
            try:
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.path,
                        "ack_ids": ack_ids[start : start + _ACK_IDS_PER_REQUEST],
                        "ack_deadline_seconds": seconds,
                    }
                )
            except Exception as error:  # noqa: BLE001 - the leases left run out by themselves
                failed = error
                logger.warning(
                    "could not change the lease of %d held message(s) on %s: %s",
                    len(ack_ids[start : start + _ACK_IDS_PER_REQUEST]),
                    self.path,
                    error.__class__.__name__,
                )
        if failed is not None and raising:
            raise failed


class Hold(Protocol):
    def pull(
        self, limit: int, wait_seconds: float = 2.0, wanted: Callable[[Pulled], bool] | None = None
    ) -> Iterator[Pulled]: ...

    def ack(self, pulled: Pulled) -> None: ...

    def release(self, pulled: Pulled) -> None: ...


def _pull_retry() -> Any:
    """The library's pull retry, for 15 s instead of 60: an operator waiting on a Pub/Sub
    that does not answer (the local stack not started) hears about it soon."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.ServiceUnavailable,
            exceptions.InternalServerError,
            exceptions.Aborted,
            exceptions.ResourceExhausted,
            exceptions.Unknown,
        ),
        initial=0.1,
        maximum=5.0,
        multiplier=1.3,
        timeout=_PULL_RETRY_SECONDS,
    )


def replay_dead_letters(
    hold: Hold,
    publisher: Publisher,
    topic: str,
    limit: int,
    match: dict[str, str] | None = None,
) -> Iterator[ReplayResult]:
    """Republish dead letters to ``topic``; with ``match`` only those whose attributes
    have these values (e.g. ``{"tenant_id": "acme"}``), the others stay in the hold.

    A message Pub/Sub does not take stays in the hold, and the error ends the replay.
    A message this run replayed that failed again and came back to the hold is left there:
    replaying it again at once would fail the same way, until ``limit`` ran out.
    """
    started = datetime.now(UTC)

    def wanted(pulled: Pulled) -> bool:
        if _replayed_since(pulled, started):
            return False
        return not match or all(described(pulled).get(k) == v for k, v in match.items())

    for pulled in hold.pull(limit, wanted=wanted):
        attributes = {
            k: v
            for k, v in pulled.attributes.items()
            if k not in DLQ_ATTRIBUTES and not k.startswith(_PUBSUB_DEAD_LETTER_PREFIX)
        }
        replays = int(attributes.get("replay_count", "0") or 0) + 1
        attributes["replay_count"] = str(replays)
        attributes["replayed_at"] = datetime.now(UTC).isoformat()
        try:
            new_id = publisher.publish(topic, pulled.data, attributes)
        except BaseException:
            hold.release(pulled)
            raise
        try:
            hold.ack(pulled)
        except Exception as error:
            # published, yet still in the hold: the next run would send it a second time
            raise ReplayAckFailed(
                f"message {pulled.message_id} was republished to {topic} as {new_id} but "
                f"could not be removed from the hold ({error.__class__.__name__}: {error}); "
                "a later replay sends it again (the steps take it once)"
            ) from error
        yield ReplayResult(
            pulled.message_id,
            "replayed",
            f"republished to {topic} as {new_id}",
            pulled.attributes,
        )


def _replayed_since(pulled: Pulled, moment: datetime) -> bool:
    """Whether the message was republished by a replay at or after ``moment`` (the step
    that failed it again kept its attributes, ``replayed_at`` included)."""
    try:
        replayed = datetime.fromisoformat(pulled.attributes.get("replayed_at", ""))
    except ValueError:
        return False
    if replayed.tzinfo is None:
        replayed = replayed.replace(tzinfo=UTC)
    return replayed >= moment


def described(pulled: Pulled) -> dict[str, str]:
    """A held message's attributes, with its tenant and call filled in when only its
    recording's object name tells them (a Cloud Storage notification)."""
    tenant_id, call_id = message_call(pulled.attributes)
    found = {"tenant_id": tenant_id, "call_id": call_id}
    return {**pulled.attributes, **{k: v for k, v in found.items() if v}}


def peek(hold: Hold, limit: int) -> list[Pulled]:
    pulled = []
    for item in hold.pull(limit):
        pulled.append(item)
        hold.release(item)
    return pulled


def read_quarantined(pulled: Pulled) -> QuarantinedWebhook | str:
    """The quarantined webhook, or why it cannot be read (no body content in the reason)."""
    try:
        return QuarantinedWebhook.model_validate_json(pulled.data)
    except ValidationError as error:
        return f"undecodable: {summarize_validation_error(error)}"


def replay_quarantine(
    hold: Hold,
    intake: WebhookIntake,
    limit: int,
    company: str | None = None,
    drop_forged: bool = False,
) -> Iterator[ReplayResult]:
    """Run quarantined webhooks through intake again, judged at their original receipt time.

    Accepted ones and ones that can never pass (stale when received) leave the quarantine,
    and with ``drop_forged`` those whose signature no token of the company matches. The
    others stay: a company still unknown or onboarded with another token, a transient
    failure, a payload intake cannot use yet, a message this version cannot read.
    """

    def wanted(pulled: Pulled) -> bool:
        if company is None:
            return True
        # the routing attribute tells without decoding the body (a hold anyone can fill)
        key = pulled.attributes.get("company_key")
        if key is not None and key != company:
            return False
        quarantined = read_quarantined(pulled)
        return isinstance(quarantined, QuarantinedWebhook) and quarantined.company_key == company

    for pulled in hold.pull(limit, wanted=wanted):
        quarantined = read_quarantined(pulled)
        if isinstance(quarantined, str):
            hold.release(pulled)
            yield ReplayResult(pulled.message_id, "kept (undecodable)", quarantined, {})
            continue
        raw = quarantined.webhook
        # The route it arrived on (.../webhook/<event-type>) names its event type: keep it.
        route = WEBHOOK_PATH + "/"
        hint = raw.path[len(route) :] if raw.path.startswith(route) else None
        try:
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
        except BaseException:
            hold.release(pulled)
            raise
        final = outcome.outcome in FINAL_QUARANTINE_OUTCOMES or (
            drop_forged and outcome.outcome == "invalid_signature"
        )
        if final:
            try:
                hold.ack(pulled)
            except Exception as error:
                raise ReplayAckFailed(
                    f"quarantined webhook {pulled.message_id} got its final answer "
                    f"({outcome.outcome}) but could not be removed from the quarantine "
                    f"({error.__class__.__name__}: {error}); a later replay runs it again "
                    "(a queued call is registered once)"
                ) from error
        else:
            hold.release(pulled)
        if outcome.outcome == "queue_unavailable":
            # Pub/Sub is not taking messages: every other replay would fail the same way
            raise PublishFailed(str(outcome.fields.get("detail") or outcome.outcome))
        yield ReplayResult(
            pulled.message_id,
            outcome.outcome if final else f"kept ({outcome.outcome})",
            str(outcome.body.get("message") or outcome.body.get("call_id") or ""),
            {
                "company_key": quarantined.company_key,
                "correlation_id": quarantined.correlation_id,
            },
        )
