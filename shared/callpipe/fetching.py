"""The fetch-call step: enrich a registered call with CallRail's API view of it.

Call Modified events go through the same path and refresh the same call (rows are keyed
by tenant and call). Permanent CallRail answers (404, a refused key) dead-letter the
message with the reason; rate limits, 5xx and timeouts raise so Pub/Sub redelivers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from callpipe.apikeys import MissingApiKey
from callpipe.callrail.client import (
    CallRailAuthError,
    CallRailClient,
    CallRailNotFound,
    CallRailRequestError,
)
from callpipe.messages import CallDetails, CallFetched, CallRegistered
from callpipe.progress import Progress, Stage, StageStatus
from callpipe.publishing import Publisher
from callpipe.steps import PermanentError


class ApiKeys(Protocol):
    def key_for(self, tenant_id: str) -> str: ...

    def forget(self, tenant_id: str) -> None: ...


class ApiKeyRotated(Exception):
    """CallRail refused a key the tenant no longer has: transient, retried with the new one."""


class CallRailClients:
    """One client (and connection pool) per API key, built on first use."""

    def __init__(self, factory: Callable[[str], CallRailClient]) -> None:
        self._factory = factory
        self._clients: dict[str, CallRailClient] = {}
        self._lock = threading.Lock()

    def __call__(self, api_key: str) -> CallRailClient:
        slot = hashlib.sha256(api_key.encode()).hexdigest()
        with self._lock:
            client = self._clients.get(slot)
            if client is None:
                client = self._clients[slot] = self._factory(api_key)
            return client


def callrail_client_for(
    api_keys: ApiKeys, clients: Callable[[str], CallRailClient], tenant_id: str
) -> tuple[CallRailClient, str]:
    """The tenant's client and the key it sends (what a refusal is to be judged against)."""
    try:
        key = api_keys.key_for(tenant_id)
    except MissingApiKey as error:
        raise PermanentError("no_api_key", str(error)) from None
    return clients(key), key


def callrail_refusal(
    error: Exception, api_keys: ApiKeys, tenant_id: str, used_key: str
) -> Exception:
    """What to raise for a CallRail error: a ``PermanentError`` (dead letter), the error
    itself when transient, or, for an authentication failure with a key that was rotated
    since it was read, ``ApiKeyRotated`` so that the redelivery uses the new key.

    ``used_key`` is the key the refused request sent. Not what the cache holds now: a
    request of another thread, refused too, may have refreshed it meanwhile, and this one
    would then compare the new key with itself and dead-letter a call the new key fetches."""
    if isinstance(error, CallRailAuthError):
        try:
            api_keys.forget(tenant_id)
            if api_keys.key_for(tenant_id) != used_key:
                return ApiKeyRotated(
                    f"tenant {tenant_id}'s CallRail API key changed; retried with the new one"
                )
        except MissingApiKey:
            pass  # no key any more: the refusal stands, and says to set one
        return PermanentError("callrail_auth_failed", str(error))
    if isinstance(error, CallRailNotFound):
        return PermanentError("callrail_not_found", str(error))
    if isinstance(error, CallRailRequestError):
        return PermanentError("callrail_request_refused", str(error))
    return error


def _is_company_resource(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("COM")


class FetchCall:
    def __init__(
        self,
        api_keys: ApiKeys,
        clients: Callable[[str], CallRailClient],
        progress: Progress,
        publisher: Publisher,
        output_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api_keys = api_keys
        self._clients = clients
        self._progress = progress
        self._publisher = publisher
        self._output_topic = output_topic
        self._clock = clock

    def __call__(self, message: CallRegistered) -> dict[str, Any]:
        account_id = message.callrail_account_id
        if not account_id:
            raise PermanentError(
                "no_account_id",
                f"neither the webhook nor tenant {message.tenant_id} names a CallRail account",
            )
        client, key = callrail_client_for(self._api_keys, self._clients, message.tenant_id)
        try:
            api_call = client.get_call(account_id, message.call_id)
        except (CallRailNotFound, CallRailAuthError, CallRailRequestError) as error:
            raise callrail_refusal(error, self._api_keys, message.tenant_id, key) from None

        owner = api_call.get("company_id")
        if (
            _is_company_resource(owner)
            and _is_company_resource(message.company_id)
            and owner != message.company_id
        ):
            # Signed with the company's token, but about a call of another company of the
            # account (tenants can share one): fetching it would copy another business's
            # call into this tenant.
            raise PermanentError(
                "company_mismatch",
                f"CallRail says call {message.call_id} belongs to company {owner}, not to "
                f"{message.company_id} (the webhook's): not fetched for tenant "
                f"{message.tenant_id}",
            )
        merged = {**message.webhook, **api_call}
        details = CallDetails.from_callrail(
            merged, announced=bool(message.webhook.get("recording"))
        )
        fetched_at = self._clock()
        fetched = CallFetched(
            tenant_id=message.tenant_id,
            office_id=message.office_id,
            company_id=message.company_id,
            callrail_account_id=account_id,
            call_id=message.call_id,
            event_type=message.event_type,
            event_key=message.event_key,
            correlation_id=message.correlation_id,
            received_at=message.received_at,
            fetched_at=fetched_at,
            details=details,
            callrail_call=merged,
        )
        message_id = self._publisher.publish(
            self._output_topic, fetched.to_data(), fetched.attributes()
        )
        # Recorded once published, so that "ok" means handed on: a dead letter after it is
        # a redelivery of finished work (see SpannerProgress.record). A failure in between
        # is redelivered and published again, which download-recording tolerates.
        self._progress.record(
            message.tenant_id,
            message.call_id,
            Stage.FETCH,
            StageStatus.OK,
            detail=message.event_type.value,
            correlation_id=message.correlation_id,
            call_columns=_call_columns(api_call, details, account_id, fetched_at),
        )
        return {
            "outcome": "fetched",
            "event_type": message.event_type.value,
            "recording_available": details.recording_available,
            "published_message_id": message_id,
        }


def _call_columns(
    api_call: dict[str, Any], details: CallDetails, account_id: str, fetched_at: datetime
) -> dict[str, Any]:
    from google.cloud.spanner_v1 import JsonObject

    return {
        "CallRailAccountId": account_id,
        "CallRailCall": JsonObject(api_call),
        "FetchedAt": fetched_at,
        "Direction": details.direction,
        "StartTime": details.start_time,
        "DurationSeconds": details.duration_seconds,
        "Answered": details.answered,
        "Voicemail": details.voicemail,
        "CallRailSpam": details.callrail_spam,
    }
