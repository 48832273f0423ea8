"""Reconciliation: calls CallRail has that never reached the pipeline.

CallRail does not send a webhook again when a delivery fails, and it disables a webhook
that keeps failing; a call whose Post-Call was lost that way exists only in CallRail. An
operator (or a scheduled job) lists a tenant's calls from the CallRail API over a time
range and queues each one the pipeline has no row of, on ``calls.received`` as intake
would have queued its Post-Call. From there it is registered, fetched, downloaded,
transcribed, analyzed and stored like any other call.

Nothing is queued twice: a queued call carries the Post-Call's event key
(``completion:<call>``), so register-call takes it and the webhook that arrives after it
(or a second reconciliation) for one event. So a call is queued only once its Post-Call
is overdue: it has ended (CallRail gives its duration) more than the settling time ago
(CallRail sends the Post-Call, recording ready, up to 20 minutes after the call ends).
Queued earlier, the call could be fetched before its recording exists, go on without it
for good, and the real Post-Call would then be dropped as a duplicate.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from callpipe.callrail.webhook import EventType
from callpipe.intake.service import event_key
from callpipe.messages import CallReceived, RawWebhook
from callpipe.publishing import Publisher
from callpipe.tenancy import CompanyMapping, TenantRecord

# Post-Call comes at most 20 minutes after the call; a margin on top.
DEFAULT_SETTLE = timedelta(minutes=30)
# The marker that stands where a webhook's signing token id would be.
RECONCILED = "reconcile"
_BATCH = 100

Outcome = Literal["known", "missing", "queued", "too_recent"]
# in the order summaries list them
OUTCOMES: tuple[Outcome, ...] = ("known", "queued", "missing", "too_recent")


class ReconcileError(RuntimeError):
    """The tenant cannot be reconciled (unknown, no CallRail account or API key)."""


class NothingToReconcile(ReconcileError):
    """The tenant is not active, or none of its companies is: no call of it is wanted."""


@dataclass(frozen=True)
class Reconciled:
    call_id: str
    company_id: str
    started: str | None
    outcome: Outcome


class ListsCalls(Protocol):
    def iter_calls(
        self,
        account_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
        per_page: int = 250,
        fields: Sequence[str] = (),
        on_page: Callable[[int, int], None] | None = None,
        company_id: str | None = None,
    ) -> Iterator[dict[str, Any]]: ...


class KnownCalls(Protocol):
    def known(self, tenant_id: str, call_ids: Sequence[str]) -> set[str]:
        """Which of ``call_ids`` the pipeline has a row of."""
        ...


class SpannerKnownCalls:
    def __init__(self, database: Any) -> None:
        self._db = database

    def known(self, tenant_id: str, call_ids: Sequence[str]) -> set[str]:
        from google.cloud.spanner_v1 import param_types

        if not call_ids:
            return set()
        with self._db.snapshot() as snapshot:
            rows = snapshot.execute_sql(
                "SELECT CallId FROM Calls WHERE TenantId = @t AND CallId IN UNNEST(@ids)",
                params={"t": tenant_id, "ids": list(call_ids)},
                param_types={
                    "t": param_types.STRING,
                    "ids": param_types.Array(param_types.STRING),
                },
            )
            return {row[0] for row in rows}


class Reconciler:
    def __init__(
        self,
        tenants: Callable[[str], TenantRecord | None],
        active_company: Callable[[str], CompanyMapping | None],
        api_key_for: Callable[[str], str],
        client_for: Callable[[str], ListsCalls],
        calls: KnownCalls,
        publisher: Publisher,
        calls_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle: timedelta = DEFAULT_SETTLE,
    ) -> None:
        self._tenants = tenants
        self._active_company = active_company
        self._api_key_for = api_key_for
        self._client_for = client_for
        self._calls = calls
        self._publisher = publisher
        self._calls_topic = calls_topic
        self._clock = clock
        self._settle = settle

    def run(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> Iterator[Reconciled]:
        """Every call of the tenant's active companies that started in [start, end], with
        what was done about it; results stream as the pages come (the missing calls over
        their company's share of ``limit`` at the end). At most ``limit`` calls are queued
        (a backlog goes in over several runs, without crowding out live calls on the shared
        CallRail rate limit): each company first gets its share of what is left, then what
        the shares left over goes to the calls over theirs, the companies in turn; the rest
        of the missing ones are listed."""
        tenant = self._tenants(tenant_id)
        if tenant is None:
            raise ReconcileError(f"no tenant {tenant_id}")
        if tenant.status != "active":
            raise NothingToReconcile(f"tenant {tenant_id} is {tenant.status}, not active")
        if not tenant.callrail_account_id:
            raise ReconcileError(f"tenant {tenant_id} has no CallRail account id")
        # a deactivated company's webhooks are refused by intake: its calls are not wanted
        companies = [c for c in tenant.companies if self._active_company(c.company_id)]
        if not companies:
            raise NothingToReconcile(f"tenant {tenant_id} has no active CallRail company")
        try:
            api_key = self._api_key_for(tenant_id)
        except LookupError as error:
            raise ReconcileError(
                f"tenant {tenant_id} has no CallRail API key ({error}): "
                "set one with `callpipe tenants set-api-key`"
            ) from None
        client = self._client_for(api_key)
        now = self._clock()
        queued = 0
        # missing calls over their company's share: decided once every company had its share
        spare: list[tuple[CompanyMapping, dict[str, Any]]] = []
        for position, company in enumerate(companies):
            # The budget left is shared by the companies left, so one company's backlog
            # cannot starve the others; what a company does not use passes on.
            share = None
            if limit is not None:
                left = len(companies) - position
                share = -(-(limit - queued) // left)  # ceiling
            queued_here = 0
            listed = client.iter_calls(
                tenant.callrail_account_id,
                start,
                end,
                fields=("company_id", "start_time", "duration", "direction"),
                company_id=company.company_id,
            )
            for batch in _batches(listed, _BATCH):
                for call, outcome in self._judge(tenant, company, batch, now):
                    if outcome == "missing" and not dry_run:
                        if share is not None and queued_here >= share:
                            spare.append((company, call))
                            continue
                        self._queue(tenant, company, call, now)
                        queued += 1
                        queued_here += 1
                        outcome = "queued"
                    yield Reconciled(
                        call["id"], company.company_id, call.get("start_time"), outcome
                    )
        # What the shares left over goes to the calls over theirs, a company at a time in
        # turn; the rest wait for the next run.
        leftover = limit - queued if limit is not None else 0
        for company, call in _in_turn(spare):
            decided: Outcome = "missing"
            if leftover > 0:
                self._queue(tenant, company, call, now)
                leftover -= 1
                decided = "queued"
            yield Reconciled(call["id"], company.company_id, call.get("start_time"), decided)

    def _judge(
        self,
        tenant: TenantRecord,
        company: CompanyMapping,
        batch: list[dict[str, Any]],
        now: datetime,
    ) -> Iterator[tuple[dict[str, Any], Outcome]]:
        """Each of the company's calls in ``batch``: known, too recent, or missing."""
        # only this company's calls, whatever the API's filter did
        calls = [
            call
            for call in batch
            if isinstance(call.get("id"), str)
            and call.get("company_id") in (None, company.company_id)
        ]
        known = self._calls.known(tenant.tenant_id, [call["id"] for call in calls])
        for call in calls:
            if call["id"] in known:
                yield call, "known"
            elif not _ended_before(call, now - self._settle):
                yield call, "too_recent"
            else:
                yield call, "missing"

    def _queue(
        self, tenant: TenantRecord, company: CompanyMapping, call: dict[str, Any], now: datetime
    ) -> None:
        outbound = str(call.get("direction") or "").lower() == "outbound"
        event_type = EventType.OUTBOUND_POST_CALL if outbound else EventType.POST_CALL
        # the call as CallRail's API gave it, with the ids a Post-Call carries
        body = json.dumps(
            {**call, "resource_id": call["id"], "company_resource_id": company.company_id}
        ).encode("utf-8")
        message = CallReceived(
            tenant_id=tenant.tenant_id,
            office_id=company.office_id,
            company_id=company.company_id,
            callrail_account_id=tenant.callrail_account_id,
            call_id=call["id"],
            event_type=event_type,
            event_key=event_key(event_type, call["id"], body),
            correlation_id=secrets.token_hex(16),
            signing_token_id=RECONCILED,
            webhook=RawWebhook(
                body_base64=base64.b64encode(body).decode("ascii"),
                headers={"content-type": "application/json", "x-callpipe-source": RECONCILED},
                path="/reconcile",
                received_at=now,
            ),
        )
        self._publisher.publish(self._calls_topic, message.to_data(), message.attributes())


def _ended_before(call: dict[str, Any], moment: datetime) -> bool:
    """Whether the call ended before ``moment``. A call without a readable start time or
    duration (one still going has none) counts as not ended: a later run decides."""
    started, duration = call.get("start_time"), call.get("duration")
    if not isinstance(started, str) or not isinstance(duration, int | float | str):
        return False
    try:
        when = datetime.fromisoformat(started)
        seconds = float(duration)  # CallRail may send it as text
    except (TypeError, ValueError):
        return False
    if not 0 <= seconds < 7 * 24 * 3600:  # NaN too
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when + timedelta(seconds=seconds) < moment


def _in_turn(
    calls: list[tuple[CompanyMapping, dict[str, Any]]],
) -> Iterator[tuple[CompanyMapping, dict[str, Any]]]:
    """The calls, one company after the other in turn, each company's in their order."""
    by_company: dict[str, list[tuple[CompanyMapping, dict[str, Any]]]] = {}
    for item in calls:
        by_company.setdefault(item[0].company_id, []).append(item)
    queues = list(by_company.values())
    for index in range(max((len(queue) for queue in queues), default=0)):
        for queue in queues:
            if index < len(queue):
                yield queue[index]


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
