"""The reconcile step: reconciliation (callpipe.reconcile) run on a schedule.

Cloud Scheduler publishes a ReconcileRequested without a tenant every hour. The step
answers it with one request per active tenant, each carrying the window's start, so that
every tenant is its own delivery: retried, timed out or dead-lettered alone, and replayable
alone. A tenant's request lists its calls of the window from the CallRail API and queues
those the pipeline has no row of, at most ``max_calls`` per run (a backlog drains over the
following runs without crowding live calls off the shared CallRail rate limit).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from callpipe.callrail.client import CallRailError
from callpipe.logs import log_event
from callpipe.messages import ReconcileRequested
from callpipe.publishing import Publisher
from callpipe.ratelimit import RateLimited
from callpipe.reconcile import OUTCOMES, NothingToReconcile, ReconcileError, Reconciler
from callpipe.steps import PermanentError
from callpipe.tenancy import TenantRecord

logger = logging.getLogger("callpipe.reconciling")

# call ids named in the log line of a run that queued calls (the count is always there)
_NAMED = 20


class ReconcileStep:
    def __init__(
        self,
        tenants: Callable[[], Sequence[TenantRecord]],
        reconciler: Reconciler,
        publisher: Publisher,
        reconcile_topic: str,
        lookback: timedelta,
        max_calls: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tenants = tenants
        self._reconciler = reconciler
        self._publisher = publisher
        self._topic = reconcile_topic
        self._lookback = lookback
        self._max_calls = max_calls
        self._clock = clock

    def __call__(self, message: ReconcileRequested) -> dict[str, Any]:
        since = message.since or self._clock() - self._lookback
        if message.until is not None and message.until < since:
            raise PermanentError("invalid_window", f"until {message.until} is before since {since}")
        if message.tenant_id is None:
            return self._fan_out(message, since)
        return self._reconcile(message.tenant_id, message, since)

    def _fan_out(self, message: ReconcileRequested, since: datetime) -> dict[str, Any]:
        """One request per tenant that can be reconciled; the others are counted by why
        (asked every hour, they would only fill the dead-letter topic)."""
        asked = 0
        skipped: Counter[str] = Counter()
        for tenant in self._tenants():
            reason = _not_reconcilable(tenant)
            if reason:
                skipped[reason] += 1
                continue
            request = message.model_copy(update={"tenant_id": tenant.tenant_id, "since": since})
            self._publisher.publish(self._topic, request.to_data(), request.attributes())
            asked += 1
        return {
            "outcome": "fanned_out",
            "tenants": asked,
            "skipped_tenants": dict(skipped),
            "since": since.isoformat(),
        }

    def _reconcile(
        self, tenant_id: str, message: ReconcileRequested, since: datetime
    ) -> dict[str, Any]:
        limit = self._max_calls if message.limit is None else message.limit
        counts: Counter[str] = Counter()
        queued: list[str] = []
        outcome = "reconciled"
        try:
            for result in self._reconciler.run(tenant_id, since, message.until, limit=limit):
                counts[result.outcome] += 1
                if result.outcome == "queued":
                    queued.append(result.call_id)
        except NothingToReconcile as error:
            # deactivated since the fan-out, or every company is: asked again every hour,
            # a dead letter would only fill the hold and keep its alert open
            return {"outcome": "nothing_to_reconcile", "reason": str(error)}
        except ReconcileError as error:
            raise PermanentError("not_reconcilable", str(error)) from None
        except CallRailError as error:
            if error.permanent:
                raise PermanentError("callrail_refused", str(error)) from None
            raise
        except RateLimited:
            # Live calls come first on the shared CallRail budget; a redelivery in minutes
            # would compete again, while the next hourly run goes on where this one stopped.
            outcome = "rate_limited"
            log_event(
                logger,
                logging.WARNING,
                "reconcile: the CallRail rate limit is busy; the next run goes on",
                tenant_id=tenant_id,
                correlation_id=message.correlation_id,
            )
        finally:
            # what was queued stays queued, whatever stopped the run: say so
            if queued:
                log_event(
                    logger,
                    logging.WARNING,
                    f"reconcile: queued {len(queued)} call(s) whose webhook never came",
                    tenant_id=tenant_id,
                    queued=len(queued),
                    left_for_next_run=counts["missing"],
                    call_ids=queued[:_NAMED],
                    correlation_id=message.correlation_id,
                )
        return {
            "outcome": outcome,
            "since": since.isoformat(),
            **{name: counts[name] for name in OUTCOMES},
        }


def _not_reconcilable(tenant: TenantRecord) -> str | None:
    if tenant.status != "active":
        return tenant.status
    if not tenant.callrail_account_id:
        return "no_callrail_account"
    if not tenant.api_key_secret:
        return "no_api_key"
    if not tenant.companies:
        return "no_company"
    return None
