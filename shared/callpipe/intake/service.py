"""Intake: turn one HTTP request into an outcome (status, JSON body, log fields).

Order of checks, each with its own answer and nothing published before the last:
method (405) → size (413) → content type (415) → Signature header present (401) →
JSON object (400) → company id present (400) → company known (404, quarantined) →
signature valid for one of the company's active tokens (401) → payload usable downstream
(400: no NaN or Infinity, not nested too deep, valid Unicode) → call id present (400) →
timestamp within tolerance (401) → published to Pub/Sub (202, or 503 when it is not).
The company id is read from the untrusted body only to choose the verification key;
nothing else in the body is used before the signature holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from callpipe.callrail.signature import verify_signature
from callpipe.callrail.storable import unstorable, unstorable_webhook
from callpipe.callrail.webhook import CallRailWebhook, EventType, id_text
from callpipe.ids import InvalidIdentifier, check_resource_id, is_resource_id
from callpipe.intake.ratelimit import QuarantineBudgets, TokenBucket
from callpipe.logs import log_event
from callpipe.messages import (
    CallReceived,
    QuarantinedWebhook,
    RawWebhook,
    summarize_validation_error,
)
from callpipe.publishing import Publisher, PublishFailed
from callpipe.tenancy import CompanyDirectory, DirectoryUnavailable, NotCached

logger = logging.getLogger("callpipe.intake")

WEBHOOK_PATH = "/api/v1/callrail/webhook"
KEPT_HEADERS = ("signature", "content-type", "user-agent")
# Every header intake reads: the HTTP adapter passes these and no others.
READ_HEADERS = (*KEPT_HEADERS, "traceparent", "x-cloud-trace-context")
_TRACE = re.compile(r"^(?!0{32})[0-9a-f]{32}$")  # W3C: an all-zero trace id is invalid


@dataclass(frozen=True)
class IntakeConfig:
    calls_topic: str
    quarantine_topic: str
    max_body_bytes: int
    timestamp_tolerance: timedelta
    # the largest body of an unknown company's webhook that is kept: anyone can send those,
    # and a real CallRail webhook is far smaller than the request limit
    unknown_company_max_body_bytes: int = 256 * 1024


@dataclass
class IntakeRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    event_hint: str | None = None
    oversized: bool = False  # the declared length was over the limit: the body was not read


@dataclass
class IntakeOutcome:
    status: int
    outcome: str
    body: dict[str, Any]
    correlation_id: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class PendingPublish:
    """A request that is decided once its message is published: the caller publishes it
    (in a thread or on an event loop) and gets the outcome from ``accepted`` or ``refused``."""

    topic: str
    data: bytes
    attributes: dict[str, str]
    accepted: Callable[[str], IntakeOutcome]  # given the server's message id
    refused: Callable[[str], IntakeOutcome]  # given why Pub/Sub did not take it


class AsyncPublisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Awaitable[str]: ...


def refusal(
    status: int, code: str, message: str, correlation_id: str, **fields: Any
) -> IntakeOutcome:
    """A request intake does not accept: ``code`` and ``message`` in the JSON answer."""
    return IntakeOutcome(
        status=status,
        outcome=code,
        body={"error": code, "message": message, "correlation_id": correlation_id},
        correlation_id=correlation_id,
        fields=fields,
    )


def client_disconnected(headers: Mapping[str, str]) -> IntakeOutcome:
    """The client hung up before its body arrived: nobody reads the answer, it is logged."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return refusal(
        400, "client_disconnected", "the body did not arrive", correlation_id_from(lowered)
    )


def not_started(headers: Mapping[str, str], path: str, error: Exception) -> IntakeOutcome:
    """The runtime could not be built (say credentials or the metadata server failing at a
    cold start): a 503 CallRail and probes can act on, never a 500; logged as an ERROR."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return refusal(
        503,
        "unavailable",
        "intake could not start; retry later",
        correlation_id_from(lowered),
        path=path,
        detail=f"{error.__class__.__name__}: {str(error)[:300]}",
    )


def correlation_id_from(headers: Mapping[str, str]) -> str:
    """Reuse the platform's trace id when there is one, so logs join the request trace."""
    traceparent = headers.get("traceparent", "")
    parts = traceparent.split("-")
    if len(parts) >= 2 and _TRACE.fullmatch(parts[1]):
        return parts[1]
    cloud_trace = headers.get("x-cloud-trace-context", "").split("/")[0]
    if _TRACE.fullmatch(cloud_trace):
        return cloud_trace
    # A W3C trace id's shape, so a new trace can start from it. It only has to be unique,
    # not secret: the random module (reseeded in each forked worker) needs no system call,
    # which os.urandom makes with the GIL released, a thread switch under load.
    return f"{random.getrandbits(128):032x}"


def event_key(shape: EventType, call_id: str, body: bytes) -> str:
    """The deduplication key of an event within its tenant, from the signed body alone.

    ``shape`` is the type the body itself shows (``CallRailWebhook.classify()`` without the
    URL's hint), or the hint when it names an event that is no completion: the URL is not
    signed, so it must not split one completion into several events, nor let a body that
    only looks like a completion take the call's completion key. A call completes once,
    so a completion, inbound or outbound, is keyed by the call: a redelivery or a replay
    of it, even re-serialised, is the same event.
    Modifications and other events are keyed by their exact body, so distinct changes to
    one call stay distinct.
    """
    if shape.is_call_completion:
        return f"completion:{call_id}"
    digest = hashlib.sha256(body).hexdigest()[:40]
    return f"body:{call_id}:{digest}"


class WebhookIntake:
    def __init__(
        self,
        config: IntakeConfig,
        directory: CompanyDirectory,
        publisher: Publisher,
        quarantine: QuarantineBudgets,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._directory = directory
        self._publisher = publisher
        self._budgets = quarantine
        self._clock = clock

    def handle(
        self,
        request: IntakeRequest,
        received_at: datetime | None = None,
        keep_unknown: bool = True,
    ) -> IntakeOutcome:
        """Process one request, publishing from this thread.

        On a replay, ``received_at`` is the original capture time (the timestamp window is
        judged against it) and ``keep_unknown=False`` stops a still-unknown company's
        webhook from being quarantined a second time.
        """
        step = self.check(request, received_at, keep_unknown)
        if isinstance(step, IntakeOutcome):
            return step
        try:
            message_id = self._publisher.publish(step.topic, step.data, step.attributes)
        except PublishFailed as error:
            return step.refused(str(error))
        return step.accepted(message_id)

    async def handle_async(
        self, request: IntakeRequest, publisher: AsyncPublisher
    ) -> IntakeOutcome:
        """Process one request on an event loop, which it never blocks.

        Everything but the publish is CPU work, unless the company directory has to load a
        company (one it has not loaded recently, or one whose tokens the signature did not
        match): then the checks run again in a thread, where waiting on Spanner is harmless.
        """
        try:
            step = self.check(request, cached_only=True)
        except NotCached:
            step = await asyncio.to_thread(self.check, request)
        if isinstance(step, IntakeOutcome):
            return step
        try:
            message_id = await publisher.publish(step.topic, step.data, step.attributes)
        except PublishFailed as error:
            return step.refused(str(error))
        return step.accepted(message_id)

    def check(
        self,
        request: IntakeRequest,
        received_at: datetime | None = None,
        keep_unknown: bool = True,
        cached_only: bool = False,
    ) -> IntakeOutcome | PendingPublish:
        """Every check of one request, up to the message it should publish, if any.

        With ``cached_only``, raises ``NotCached`` rather than load a company.
        """
        headers = {k.lower(): v for k, v in request.headers.items()}
        correlation_id = correlation_id_from(headers)
        received = received_at or self._clock()

        def fail(status: int, code: str, message: str, **fields: Any) -> IntakeOutcome:
            return refusal(status, code, message, correlation_id, **fields)

        if request.method.upper() != "POST":
            return fail(405, "method_not_allowed", "use POST for CallRail webhooks")
        if request.oversized or len(request.body) > self._config.max_body_bytes:
            return fail(
                413,
                "payload_too_large",
                f"body exceeds the limit of {self._config.max_body_bytes} bytes",
            )
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return fail(415, "unsupported_media_type", "Content-Type must be application/json")
        signature = headers.get("signature", "").strip()
        if not signature:
            return fail(401, "missing_signature", "the Signature header is required")

        hint: EventType | None = None
        if request.event_hint:
            hint = EventType.from_hint(request.event_hint)
            if hint is None:
                return fail(
                    404, "unknown_event_path", f"no webhook route for {request.event_hint!r}"
                )

        # A body that fits the model is parsed once, straight from its bytes; the model is
        # used for nothing but the company id until the signature holds. Any other body is
        # parsed as plain JSON to tell malformed JSON from an unusable payload (the latter
        # is answered, and quarantined, only once the signature holds).
        webhook: CallRailWebhook | None
        try:
            webhook = CallRailWebhook.model_validate_json(request.body)
        except ValidationError:
            webhook = None
        if webhook is not None:
            company_keys = _company_keys(webhook.company_resource_id, webhook.company_id)
        else:
            try:
                document = json.loads(request.body)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                return fail(400, "malformed_json", f"the body is not valid JSON: {error}")
            except ValueError:  # valid JSON that Python will not read
                return fail(400, "malformed_json", "the body holds a number of over 4,300 digits")
            except RecursionError:
                return fail(400, "malformed_json", "the body is nested too deeply")
            if not isinstance(document, dict):
                return fail(400, "malformed_json", "the body must be a JSON object")
            company_keys = _company_keys(
                document.get("company_resource_id"), document.get("company_id")
            )
        if not company_keys:
            return fail(
                400, "missing_company_id", "company_resource_id (or company_id) is required"
            )
        # Only a CallRail id can be onboarded (and it is safe to log, query and keep):
        # anything else is refused before any lookup.
        company_keys = [key for key in company_keys if is_resource_id(key)]
        if not company_keys:
            return fail(
                400,
                "invalid_company_id",
                "company_resource_id (or company_id) is not a CallRail id: "
                "1-64 letters, digits, '_' or '-'",
            )

        raw = RawWebhook.capture(
            request.body,
            {k: headers[k] for k in KEPT_HEADERS if k in headers},
            request.path,
            received,
        )
        try:
            company = self._directory.resolve(company_keys, cached_only=cached_only)
        except DirectoryUnavailable as error:
            detail = str(error)

            def unavailable(kept: bool) -> IntakeOutcome:
                return fail(
                    503,
                    "directory_unavailable",
                    "the tenant directory did not answer; retry later",
                    detail=detail,
                    quarantined=kept,
                )

            # Unverifiable until the directory answers: kept within the size an unknown
            # company's body may have, so a flood of forged bodies cannot fill the hold.
            small = len(request.body) <= self._config.unknown_company_max_body_bytes
            return self._quarantine(
                keep_unknown and small,
                self._budgets.directory_unavailable,
                raw,
                company_keys[0],
                "directory_unavailable",
                correlation_id,
                unavailable,
            )
        if company is None:
            company_key = company_keys[0]
            body_limit = self._config.unknown_company_max_body_bytes
            too_large = len(request.body) > body_limit

            def unknown(kept: bool) -> IntakeOutcome:
                if kept:
                    note = "kept in quarantine for replay"
                elif not keep_unknown:
                    note = "still unknown"
                elif too_large:
                    note = f"not kept: the body is over {body_limit} bytes"
                else:
                    note = "not kept: the quarantine is full"
                return fail(
                    404,
                    "unknown_company",
                    f"CallRail company {company_key} is not onboarded ({note})",
                    company_id=company_key,
                    quarantined=kept,
                )

            return self._quarantine(
                keep_unknown and not too_large,
                self._budgets.unknown_company,
                raw,
                company_key,
                "unknown_company",
                correlation_id,
                unknown,
            )

        token = verify_signature(request.body, signature, company.tokens)
        if token is None:
            # perhaps signed with a token added since the company was loaded (a rotation):
            # the directory loads it again, at most every few seconds per company
            reloaded = self._directory.reload_for_signature(
                company_keys, company, cached_only=cached_only
            )
            if reloaded is not None:
                company = reloaded
                token = verify_signature(request.body, signature, company.tokens)
        mapping = company.mapping
        if token is None:
            return fail(
                401,
                "invalid_signature",
                "the Signature header does not match the body",
                tenant_id=mapping.tenant_id,
                company_id=mapping.company_id,
            )

        # From here on the body is authentic. What we cannot use is still kept (quarantine):
        # CallRail never sends it again, and once the cause is fixed it can be replayed.
        def unusable(code: str, message: str) -> IntakeOutcome | PendingPublish:
            def answer(kept: bool) -> IntakeOutcome:
                return fail(400, code, message, tenant_id=mapping.tenant_id, quarantined=kept)

            return self._quarantine(
                keep_unknown,
                self._budgets.unusable,
                raw,
                mapping.company_id,
                code,
                correlation_id,
                answer,
            )

        if webhook is None:
            try:
                webhook = CallRailWebhook.model_validate(document)
            except ValidationError as error:
                return unusable(
                    "invalid_payload",
                    f"unusable webhook payload: {summarize_validation_error(error)}",
                )
            problem = unstorable(document)  # json.loads reads what register-call cannot use
        else:
            problem = unstorable_webhook(webhook)
        if problem is not None:
            return unusable("invalid_payload", f"unusable webhook payload: {problem}")
        call_id = webhook.call_id
        if not call_id:
            return unusable("missing_call_id", "resource_id (or id) is required")
        try:
            check_resource_id(call_id)
        except InvalidIdentifier as error:
            return unusable("invalid_call_id", str(error))

        tolerance = self._config.timestamp_tolerance
        if webhook.timestamp is not None:
            sent = webhook.timestamp
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=UTC)
            if abs(received - sent) > tolerance:
                return fail(
                    401,
                    "stale_webhook",
                    f"timestamp is outside the accepted window of {int(tolerance.total_seconds())} s",
                    tenant_id=mapping.tenant_id,
                    call_id=call_id,
                )

        event_type = webhook.classify(hint)
        # The key follows what the signed body shows, never the unsigned URL's hint alone:
        # the same completion posted to two completion URLs is one event. But a body that
        # only looks like a completion (a routing event with null recording fields) and came
        # through another event's URL keeps a key of its own, or the call's real Post-Call
        # would find its key taken and be dropped as a duplicate.
        shape = webhook.classify()
        if hint is not None and not hint.is_call_completion:
            shape = hint
        message = CallReceived(
            tenant_id=mapping.tenant_id,
            office_id=mapping.office_id,
            company_id=mapping.company_id,
            # The onboarded account, not the body's: whoever holds a company's signing
            # token must not point fetch-call at another account.
            callrail_account_id=mapping.callrail_account_id or webhook.callrail_account_id,
            call_id=call_id,
            event_type=event_type,
            event_key=event_key(shape, call_id, request.body),
            correlation_id=correlation_id,
            signing_token_id=token.token_id,
            webhook=raw,
        )
        context = {
            "tenant_id": mapping.tenant_id,
            "office_id": mapping.office_id,
            "call_id": call_id,
            "event_type": event_type.value,
        }

        def queued(message_id: str) -> IntakeOutcome:
            return IntakeOutcome(
                status=202,
                outcome="accepted",
                body={
                    "status": "accepted",
                    "call_id": call_id,
                    "event_type": event_type.value,
                    "correlation_id": correlation_id,
                },
                correlation_id=correlation_id,
                fields={**context, "message_id": message_id, "token_id": token.token_id},
            )

        def not_queued(error: str) -> IntakeOutcome:
            return fail(
                503,
                "queue_unavailable",
                "the call could not be queued; retry later",
                detail=error,
                **context,
            )

        return PendingPublish(
            self._config.calls_topic,
            message.to_data(),
            message.attributes(),
            accepted=queued,
            refused=not_queued,
        )

    def _quarantine(
        self,
        keep: bool,
        budget: TokenBucket,
        raw: RawWebhook,
        company_key: str,
        reason: str,
        correlation_id: str,
        answer: Callable[[bool], IntakeOutcome],
    ) -> IntakeOutcome | PendingPublish:
        """Keep an authentic (or not yet verifiable) webhook for a replay, within its
        budget; ``answer`` says whether it was kept."""
        if not keep or not budget.take():
            return answer(False)
        message = QuarantinedWebhook(
            company_key=company_key, reason=reason, correlation_id=correlation_id, webhook=raw
        )
        return PendingPublish(
            self._config.quarantine_topic,
            message.to_data(),
            message.attributes(),
            accepted=lambda _message_id: answer(True),
            refused=lambda _error: answer(False),
        )


def _company_keys(*values: Any) -> list[str]:
    """The ids given for the company (resource id first), read as the webhook model reads
    them: from the model or, for a body it refuses, from the plain JSON."""
    keys = []
    for value in values:
        text = id_text(value)
        if isinstance(text, str) and text.strip():
            keys.append(text.strip())
    return keys


def log_outcome(outcome: IntakeOutcome, latency_ms: float) -> None:
    """The one structured line per request: severity from the status, no PII."""
    level = logging.INFO
    if outcome.status >= 500:
        level = logging.ERROR
    elif outcome.status >= 400:
        level = logging.WARNING
    log_event(
        logger,
        level,
        f"webhook {outcome.outcome}",
        step="intake",
        status=outcome.status,
        outcome=outcome.outcome,
        correlation_id=outcome.correlation_id,
        latency_ms=round(latency_ms, 2),
        **outcome.fields,
    )
