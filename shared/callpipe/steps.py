"""The error contract every Pub/Sub-triggered step keeps.

- Transient failure (network, 5xx, 429, emulator abort): the handler raises, the function
  answers non-2xx, Pub/Sub redelivers with backoff and dead-letters after the configured
  number of attempts. On what Pub/Sub says is the last attempt, the failure is recorded
  where operators look (``retries_exhausted``) before it is raised, since Pub/Sub moves the
  message to the dead-letter topic without running any of our code.
- Permanent failure (undecodable or invalid message, unknown tenant, a 404 upstream): the
  original message is published to the step's dead-letter topic with the reason in its
  attributes, then acknowledged. Retrying it could never succeed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from callpipe.envelopes import (
    EnvelopeError,
    PubSubMessage,
    decode_pubsub_envelope,
    push_delivery_attempt,
)
from callpipe.logs import log_event
from callpipe.messages import Message
from callpipe.publishing import Publisher

logger = logging.getLogger("callpipe.steps")

M = TypeVar("M", bound=Message)

DLQ_ATTRIBUTES = ("dlq_step", "dlq_reason", "dlq_error", "dlq_at", "dlq_message_id")


_delivery_attempt: ContextVar[int | None] = ContextVar("delivery_attempt", default=None)


def delivery_attempt() -> int | None:
    """Pub/Sub's count of deliveries of the message being handled (None when unknown).

    It counts what a step's own count of failures does not: deliveries refused while every
    instance was busy, and runs stopped by the function's timeout."""
    return _delivery_attempt.get()


class PermanentError(Exception):
    """Retrying cannot help: dead-letter the message with this reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def dead_letter(
    publisher: Publisher,
    dlq_topic: str,
    step: str,
    message: PubSubMessage,
    reason: str,
    detail: str,
) -> None:
    attributes = {k: v for k, v in message.attributes.items() if k not in DLQ_ATTRIBUTES}
    attributes.update(
        dlq_step=step,
        dlq_reason=reason,
        dlq_error=detail[:1000],
        dlq_at=datetime.now(UTC).isoformat(),
        dlq_message_id=message.message_id,
    )
    publisher.publish(dlq_topic, message.data, attributes)


def run_step(
    step: str,
    event_data: Any,
    model: type[M],
    handler: Callable[[M], dict[str, Any]],
    publisher: Publisher,
    dlq_topic: str,
    on_dead_letter: Callable[[dict[str, str], PermanentError], None] | None = None,
    max_delivery_attempts: int | None = None,
) -> dict[str, Any]:
    """Decode, run, and map errors to the contract; returns the outcome's log fields.

    ``on_dead_letter`` (given the message attributes) records the failure where operators
    look, e.g. the call's stage in Spanner, before the message goes to the DLQ: for a
    permanent failure, and for a transient one on attempt ``max_delivery_attempts`` (the
    subscription's dead-letter policy).
    """
    started = time.perf_counter()
    try:
        envelope = decode_pubsub_envelope(event_data)
    except EnvelopeError as error:
        log_event(
            logger,
            logging.ERROR,
            "undecodable delivery dropped",
            step=step,
            outcome="bad_envelope",
            error=str(error),
        )
        return {"outcome": "bad_envelope"}
    attempt = envelope.delivery_attempt or push_delivery_attempt()
    context = {
        "step": step,
        "tenant_id": envelope.attributes.get("tenant_id"),
        "call_id": envelope.attributes.get("call_id"),
        "correlation_id": envelope.attributes.get("correlation_id"),
        "message_id": envelope.message_id,
        "delivery_attempt": attempt,
    }
    try:
        try:
            message = model.from_data(envelope.data)
        except ValidationError as error:
            raise PermanentError("invalid_message", _validation_summary(error)) from None
        except ValueError as error:
            raise PermanentError("invalid_message", _short(error)) from None
        token = _delivery_attempt.set(attempt)
        try:
            result = handler(message)
        finally:
            _delivery_attempt.reset(token)
    except PermanentError as error:
        try:
            if on_dead_letter is not None:
                on_dead_letter(envelope.attributes, error)
            dead_letter(publisher, dlq_topic, step, envelope, error.reason, error.detail)
        except Exception as failure:
            # Not dead-lettered: the message is redelivered, and on the subscription's last
            # attempt Pub/Sub dead-letters it itself. Either way the line says so.
            last = _is_last(attempt, max_delivery_attempts)
            log_event(
                logger,
                logging.ERROR,
                f"{step}: could not dead-letter the message ({error.reason})"
                + ("; Pub/Sub dead-letters it" if last else "; it will be retried"),
                outcome="retries_exhausted" if last else "dead_letter_failed",
                reason=error.reason,
                error=f"{failure.__class__.__name__}: {_short(failure)}",
                latency_ms=_ms(started),
                **context,
            )
            raise
        log_event(
            logger,
            logging.ERROR,
            f"{step}: dead-lettered ({error.reason})",
            outcome="dead_lettered",
            reason=error.reason,
            error=error.detail,
            dlq_topic=dlq_topic,
            latency_ms=_ms(started),
            **context,
        )
        return {"outcome": "dead_lettered", "reason": error.reason}
    except Exception as error:
        described = f"{error.__class__.__name__}: {_short(error)}"
        last = _is_last(attempt, max_delivery_attempts)
        if last and on_dead_letter is not None:
            # Pub/Sub dead-letters the message after this answer (its count is best effort:
            # a later delivery that succeeds records its stage again)
            exhausted = f"attempt {attempt} of {max_delivery_attempts}: {described}"
            try:
                on_dead_letter(envelope.attributes, PermanentError("retries_exhausted", exhausted))
            except Exception as record_error:  # noqa: BLE001 - the failure itself is what counts
                log_event(
                    logger,
                    logging.WARNING,
                    f"{step}: could not record the exhausted retries",
                    error=f"{record_error.__class__.__name__}: {_short(record_error)}",
                    **context,
                )
        log_event(
            logger,
            logging.ERROR if last else logging.WARNING,
            f"{step}: transient failure on the last attempt: Pub/Sub dead-letters it"
            if last
            else f"{step}: transient failure, will be retried",
            outcome="retries_exhausted" if last else "retry",
            error=described,
            latency_ms=_ms(started),
            **context,
        )
        raise
    log_event(
        logger,
        logging.INFO,
        f"{step}: {result.get('outcome', 'done')}",
        latency_ms=_ms(started),
        **{**context, **result},
    )
    return result


def _is_last(attempt: int | None, max_delivery_attempts: int | None) -> bool:
    """Whether Pub/Sub dead-letters the message if this delivery fails."""
    return (
        max_delivery_attempts is not None
        and attempt is not None
        and attempt >= max_delivery_attempts
    )


def _validation_summary(error: ValidationError) -> str:
    """Where and why, never the input values (they can hold names and phone numbers)."""
    parts = [
        f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)[:5]
    ]
    return f"{error.error_count()} validation error(s) for {error.title}: " + "; ".join(parts)


def _short(error: BaseException) -> str:
    text = str(error).replace("\n", " ")
    return text[:500]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
