"""The register-call step: archive the raw webhook, record the event once, start the call.

Redeliveries and replays of an event are recognised by its key in ``WebhookEvents``: an
event already forwarded is acknowledged without publishing again, so the same webhook
delivered twice yields one call downstream. The ledger row is written before publishing
and marked ``forwarded`` after. A concurrent delivery of the same event finds a fresh claim
and is retried later (by then the event is forwarded, so it is dropped as a duplicate); a
delivery that finds a claim older than ``CLAIM_LEASE`` takes over, because the attempt that
made it crashed: at-least-once rather than losing the call. An attempt that fails (Pub/Sub
or Spanner did not answer) releases its claim, so that the next delivery takes over at once
instead of spending its attempts on "in progress".

The register stage of the call reads ``ok`` once the event is forwarded: until then a dead
letter of the event is recorded on the call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from callpipe.callrail.storable import unstorable
from callpipe.callrail.webhook import EventType
from callpipe.errors import headline
from callpipe.logs import log_event
from callpipe.messages import CallReceived, CallRegistered
from callpipe.progress import CALL_STAGE_COLUMNS, Stage, StageStatus, call_stage_row
from callpipe.publishing import Publisher
from callpipe.steps import PermanentError

logger = logging.getLogger("callpipe.steps")


class EventState(StrEnum):
    NEW = "new"
    REGISTERED = "registered"  # recorded, not forwarded, and its claim expired: take over
    RELEASED = "released"  # recorded, and its attempt failed before forwarding: take over
    IN_PROGRESS = "in_progress"  # recorded moments ago by a concurrent delivery
    FORWARDED = "forwarded"
    IGNORED = "ignored"


# How long a claim protects an event being forwarded by another delivery: longer than a
# step's work (the publish alone may take its 10 s timeout). A crashed or failed attempt's
# claim is taken over by the first redelivery after it; those within it (Pub/Sub's backoff
# starts at 10 s) are refused as in progress and come back later, nothing lost.
CLAIM_LEASE = timedelta(seconds=60)


def feeds_the_pipeline(attributes: dict[str, str]) -> bool:
    """Whether a calls.received message (by its attributes) is an event the call goes
    through the pipeline for: not a Pre-Call, routing or text event, which register-call
    only archives, and whose dead letter says nothing about the call's progress."""
    try:
        return EventType(attributes.get("event_type", "")).feeds_pipeline
    except ValueError:
        return False


class EventInProgress(RuntimeError):
    """A concurrent delivery of the same event is forwarding it: retry later (transient)."""


class EventLedger(Protocol):
    def claim(self, message: CallReceived, archive_uri: str) -> EventState: ...

    def mark(self, message: CallReceived, state: EventState) -> None: ...

    def release(self, message: CallReceived) -> None: ...

    def start_call(self, message: CallReceived, payload: dict[str, Any]) -> None: ...


class Archive(Protocol):
    def store(self, message: CallReceived) -> str: ...


class SpannerEventLedger:
    def __init__(self, database: Any, lease: timedelta = CLAIM_LEASE) -> None:
        self._db = database
        self._lease = lease

    def claim(self, message: CallReceived, archive_uri: str) -> EventState:
        from google.cloud import spanner

        key = [message.tenant_id, message.event_key]

        def work(txn: Any) -> EventState:
            rows = list(
                txn.read("WebhookEvents", ["Status", "UpdatedAt"], spanner.KeySet(keys=[key]))
            )
            if rows:
                status, updated_at = EventState(rows[0][0]), rows[0][1]
                if status not in (EventState.REGISTERED, EventState.RELEASED):
                    return status
                fresh = datetime.now(UTC) - updated_at < self._lease
                if status is EventState.REGISTERED and fresh:
                    return EventState.IN_PROGRESS
                txn.update(
                    "WebhookEvents",
                    ["TenantId", "EventKey", "Status", "UpdatedAt"],
                    [(*key, EventState.REGISTERED.value, spanner.COMMIT_TIMESTAMP)],
                )
                return EventState.REGISTERED
            txn.insert(
                "WebhookEvents",
                [
                    "TenantId",
                    "EventKey",
                    "CallId",
                    "EventType",
                    "CorrelationId",
                    "Status",
                    "ArchiveUri",
                    "ReceivedAt",
                    "CreatedAt",
                    "UpdatedAt",
                ],
                [
                    (
                        message.tenant_id,
                        message.event_key,
                        message.call_id,
                        message.event_type.value,
                        message.correlation_id,
                        EventState.REGISTERED.value,
                        archive_uri,
                        message.webhook.received_at,
                        spanner.COMMIT_TIMESTAMP,
                        spanner.COMMIT_TIMESTAMP,
                    )
                ],
            )
            return EventState.NEW

        return EventState(self._db.run_in_transaction(work))

    def mark(self, message: CallReceived, state: EventState) -> None:
        """Record the event's new state; a forwarded one completes the call's register
        stage (the call's row exists: start_call wrote it before the publish)."""
        from google.cloud import spanner

        with self._db.batch() as batch:
            batch.update(
                "WebhookEvents",
                ["TenantId", "EventKey", "Status", "UpdatedAt"],
                [(message.tenant_id, message.event_key, state.value, spanner.COMMIT_TIMESTAMP)],
            )
            if state is EventState.FORWARDED:
                batch.insert_or_update(
                    "CallStages",
                    CALL_STAGE_COLUMNS,
                    [
                        call_stage_row(
                            message.tenant_id,
                            message.call_id,
                            Stage.REGISTER.value,
                            StageStatus.OK.value,
                            message.event_type.value,
                            1,
                            message.correlation_id,
                        )
                    ],
                )

    def release(self, message: CallReceived) -> None:
        self.mark(message, EventState.RELEASED)

    def start_call(self, message: CallReceived, payload: dict[str, Any]) -> None:
        """Create the call's row, or refresh it from a later event of the same call.

        A Call Modified never resets the stage of a call already in the pipeline, and the
        first receipt time and correlation id of the call are kept.
        """
        from google.cloud import spanner
        from google.cloud.spanner_v1 import JsonObject

        from callpipe.callrail.webhook import CallRailWebhook

        webhook = CallRailWebhook.model_validate(payload)
        key = [message.tenant_id, message.call_id]
        details = {
            "Direction": webhook.direction,
            "StartTime": webhook.start_time,
            "DurationSeconds": webhook.duration,
            "Answered": webhook.answered,
            "Voicemail": webhook.voicemail,
            "CallRailSpam": webhook.spam,
            "Webhook": JsonObject(payload),
            "UpdatedAt": spanner.COMMIT_TIMESTAMP,
        }

        def work(txn: Any) -> None:
            exists = bool(list(txn.read("Calls", ["CallId"], spanner.KeySet(keys=[key]))))
            if exists:
                if message.event_type.is_call_completion:
                    columns = {"TenantId": key[0], "CallId": key[1], **details}
                    txn.update("Calls", list(columns), [tuple(columns.values())])
                return
            columns = {
                "TenantId": message.tenant_id,
                "CallId": message.call_id,
                "OfficeId": message.office_id,
                "CompanyId": message.company_id,
                "CallRailAccountId": message.callrail_account_id,
                "CorrelationId": message.correlation_id,
                "Stage": "register",
                "StageStatus": "ok",
                "StageDetail": message.event_type.value,
                "ReceivedAt": message.webhook.received_at,
                "CreatedAt": spanner.COMMIT_TIMESTAMP,
                **details,
            }
            txn.insert("Calls", list(columns), [tuple(columns.values())])

        self._db.run_in_transaction(work)


class RegisterCall:
    def __init__(
        self,
        archive: Archive,
        ledger: EventLedger,
        publisher: Publisher,
        output_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._archive = archive
        self._ledger = ledger
        self._publisher = publisher
        self._output_topic = output_topic
        self._clock = clock
        self._monotonic = monotonic

    def _release(self, message: CallReceived, claimed: float) -> None:
        """Give up the event's claim after a failed attempt, unless the attempt took half
        the lease or more (a margin for the instances' clocks): another delivery may have
        taken the claim over by then, and releasing it would let a third one forward the
        event at the same time."""
        if self._monotonic() - claimed >= CLAIM_LEASE.total_seconds() / 2:
            return
        try:
            self._ledger.release(message)
        except Exception as error:  # noqa: BLE001 - the claim then expires after CLAIM_LEASE
            log_event(
                logger,
                logging.WARNING,
                "could not release the event's claim",
                tenant_id=message.tenant_id,
                call_id=message.call_id,
                correlation_id=message.correlation_id,
                error=f"{error.__class__.__name__}: {headline(error)}",
            )

    def __call__(self, message: CallReceived) -> dict[str, Any]:
        try:
            payload = json.loads(message.webhook.body)
        except (ValueError, RecursionError) as error:
            raise PermanentError("invalid_webhook_body", str(error)) from None
        if not isinstance(payload, dict):
            raise PermanentError("invalid_webhook_body", "the webhook body is not a JSON object")
        # intake refuses these; a message queued before it did, or replayed, may still hold one
        problem = unstorable(payload)
        if problem is not None:
            raise PermanentError("invalid_webhook_body", problem)

        archive_uri = self._archive.store(message)
        state = self._ledger.claim(message, archive_uri)
        fields: dict[str, Any] = {
            "event_type": message.event_type.value,
            "archive_uri": archive_uri,
        }
        if state is EventState.IN_PROGRESS:
            raise EventInProgress(
                f"event {message.event_key} is being forwarded by another delivery"
            )
        if state in (EventState.FORWARDED, EventState.IGNORED):
            return {**fields, "outcome": "duplicate", "previous_state": state.value}
        if not message.event_type.feeds_pipeline:
            self._ledger.mark(message, EventState.IGNORED)
            return {**fields, "outcome": "ignored_event_type"}

        registered = CallRegistered(
            tenant_id=message.tenant_id,
            office_id=message.office_id,
            company_id=message.company_id,
            callrail_account_id=message.callrail_account_id,
            call_id=message.call_id,
            event_type=message.event_type,
            event_key=message.event_key,
            correlation_id=message.correlation_id,
            received_at=message.webhook.received_at,
            registered_at=self._clock(),
            webhook_archive_uri=archive_uri,
            webhook=payload,
        )
        # serialised before the call's row is written: a message that cannot be serialised
        # never will be, so it is dead-lettered at once rather than retried
        try:
            data = registered.to_data()
        except ValueError as error:  # PydanticSerializationError
            raise PermanentError("unserializable_message", str(error)[:500]) from None
        claimed = self._monotonic()
        try:
            self._ledger.start_call(message, payload)
            message_id = self._publisher.publish(self._output_topic, data, registered.attributes())
        except Exception:
            self._release(message, claimed)
            raise
        self._ledger.mark(message, EventState.FORWARDED)
        return {
            **fields,
            "outcome": "registered",
            "published_message_id": message_id,
            "retried_after_crash": state is EventState.REGISTERED,
        }
