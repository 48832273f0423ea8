"""Each stage records where a call is: one CallStages row per stage plus the summary on
the Calls row, so `callpipe` and the API can show what is stuck or dead-lettered."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from callpipe.publishing import Publisher
from callpipe.steps import delivery_attempt


class Stage(StrEnum):
    REGISTER = "register"
    FETCH = "fetch"
    DOWNLOAD = "download"
    TRANSCRIBE = "transcribe"
    ANALYZE = "analyze"
    PERSIST = "persist"


class StageStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


# A CallStages row as every stage writes it (register, persist and SpannerProgress).
CALL_STAGE_COLUMNS = [
    "TenantId",
    "CallId",
    "Stage",
    "Status",
    "Detail",
    "Attempts",
    "CorrelationId",
    "UpdatedAt",
]


def call_stage_row(
    tenant_id: str,
    call_id: str,
    stage: str,
    status: str,
    detail: str | None,
    attempts: int,
    correlation_id: str | None,
) -> tuple[Any, ...]:
    """The values for CALL_STAGE_COLUMNS, stamped with the commit timestamp."""
    from google.cloud import spanner

    return (
        tenant_id,
        call_id,
        stage,
        status,
        detail,
        attempts,
        correlation_id,
        spanner.COMMIT_TIMESTAMP,
    )


_STAGE_ORDER = {stage.value: position for position, stage in enumerate(Stage)}


class Progress(Protocol):
    def record(
        self,
        tenant_id: str,
        call_id: str,
        stage: Stage,
        status: StageStatus,
        detail: str | None = None,
        correlation_id: str | None = None,
        call_columns: dict[str, Any] | None = None,
    ) -> None: ...

    def count_attempt(self, tenant_id: str, call_id: str, stage: Stage, detail: str) -> int: ...

    def done_detail(
        self, tenant_id: str, call_id: str, stage: Stage, correlation_id: str
    ) -> str | None:
        """The detail ``stage`` recorded when it completed (ok or skipped) for this event,
        "" if it recorded none; None when it has not completed for this event."""
        ...


class CallMessage(Protocol):
    """A message about one call, as the steps hand them on (callpipe.messages)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def call_id(self) -> str: ...

    @property
    def correlation_id(self) -> str: ...

    def to_data(self) -> bytes: ...

    def attributes(self) -> dict[str, str]: ...


def count_failed_attempt(
    progress: Progress, tenant_id: str, call_id: str, stage: Stage, detail: str
) -> int:
    """Count one more failed attempt of ``stage``; return the attempts so far, by the higher
    of the stage's count and Pub/Sub's delivery attempt. The stage's own count lags
    Pub/Sub's (deliveries refused while every instance is busy, runs stopped by the
    timeout), and a step that gives up one short of the dead-letter policy must not be
    overtaken by it."""
    return max(progress.count_attempt(tenant_id, call_id, stage, detail), delivery_attempt() or 0)


def record_and_hand_on(
    progress: Progress,
    publisher: Publisher,
    topic: str,
    message: CallMessage,
    stage: Stage,
    status: StageStatus,
    detail: str | None,
    call_columns: dict[str, Any] | None = None,
) -> None:
    """Record a stage's outcome and publish the call's next message, in the safe order.

    A success is recorded after the message is out: a recorded success then means the next
    step has its message, so a redelivery can be skipped (``done_detail``) and a dead letter
    after it is a duplicate (``SpannerProgress.record``). Recorded first, a publish that
    then failed on every attempt would leave the call "ok" while its message sat in the
    dead-letter topic. A failure is recorded first: the message it hands on may be finished
    by the next steps before a later record, which would pull the call's summary back to
    the failure. A failure record is never taken for finished work, so its dead letter
    still shows.
    """

    def record() -> None:
        progress.record(
            message.tenant_id,
            message.call_id,
            stage,
            status,
            detail=detail,
            correlation_id=message.correlation_id,
            call_columns=call_columns,
        )

    def hand_on() -> None:
        publisher.publish(topic, message.to_data(), message.attributes())

    if status in (StageStatus.OK, StageStatus.SKIPPED):
        hand_on()
        record()
    else:
        record()
        hand_on()


def _completion_summary(txn: Any, tenant_id: str, call_id: str) -> dict[str, Any] | None:
    """The summary of a completed call: its persist stage, when that stage is ok."""
    from google.cloud import spanner

    rows = list(
        txn.read(
            "CallStages",
            ["Status", "Detail"],
            spanner.KeySet(keys=[[tenant_id, call_id, Stage.PERSIST.value]]),
        )
    )
    if not rows or rows[0][0] != StageStatus.OK:
        return None
    return {
        "Stage": Stage.PERSIST.value,
        "StageStatus": StageStatus.OK.value,
        "StageDetail": rows[0][1],
    }


class SpannerProgress:
    def __init__(self, database: Any) -> None:
        self._db = database

    def record(
        self,
        tenant_id: str,
        call_id: str,
        stage: Stage,
        status: StageStatus,
        detail: str | None = None,
        correlation_id: str | None = None,
        call_columns: dict[str, Any] | None = None,
    ) -> None:
        """Write the stage row (attempts kept when known) and the call's summary.

        A dead letter is not written over its stage when that stage already completed for
        the same event (correlation id): it is a redelivery of a message whose work was
        done (its acknowledgement was lost), and the call has moved on.

        A success never moves the call's summary back to an earlier stage: a redelivered
        or later event (a Call Modified after the call completed) that runs an early step
        again writes that stage's row and columns, but the call stays where it got to.
        Failures always show in the summary. On a completed call, a success at or after
        the stage the summary shows (a later event's failure, replayed and gone through)
        puts the summary back to the call's completion: that event's flow may end early
        (its recording already stored), and nothing after it would.
        """
        from google.cloud import spanner

        def work(txn: Any) -> None:
            rows = list(
                txn.read(
                    "CallStages",
                    ["Attempts", "Status", "CorrelationId"],
                    spanner.KeySet(keys=[[tenant_id, call_id, stage.value]]),
                )
            )
            if (
                status is StageStatus.DEAD_LETTERED
                and rows
                and rows[0][1] in (StageStatus.OK, StageStatus.SKIPPED)
                and correlation_id is not None
                and rows[0][2] == correlation_id
            ):
                return
            attempts = int(rows[0][0]) if rows else 1
            summary = {"Stage": stage.value, "StageStatus": status.value, "StageDetail": detail}
            if status in (StageStatus.OK, StageStatus.SKIPPED):
                call = list(
                    txn.read(
                        "Calls",
                        ["Stage", "CompletedAt"],
                        spanner.KeySet(keys=[[tenant_id, call_id]]),
                    )
                )
                if call and _STAGE_ORDER.get(call[0][0], -1) > _STAGE_ORDER[stage.value]:
                    summary = {}
                elif call and call[0][1] is not None and stage is not Stage.PERSIST:
                    summary = _completion_summary(txn, tenant_id, call_id) or summary
            txn.insert_or_update(
                "CallStages",
                CALL_STAGE_COLUMNS,
                [
                    call_stage_row(
                        tenant_id,
                        call_id,
                        stage.value,
                        status.value,
                        detail,
                        attempts,
                        correlation_id,
                    )
                ],
            )
            columns = {
                "TenantId": tenant_id,
                "CallId": call_id,
                **summary,
                "UpdatedAt": spanner.COMMIT_TIMESTAMP,
                **(call_columns or {}),
            }
            txn.update("Calls", list(columns), [tuple(columns.values())])

        self._db.run_in_transaction(work)

    def count_attempt(self, tenant_id: str, call_id: str, stage: Stage, detail: str) -> int:
        """Count one more failed attempt of ``stage``; return the total so far."""
        from google.cloud import spanner

        def work(txn: Any) -> int:
            rows = list(
                txn.read(
                    "CallStages",
                    ["Attempts", "Status"],
                    spanner.KeySet(keys=[[tenant_id, call_id, stage.value]]),
                )
            )
            attempts = int(rows[0][0]) + 1 if rows and rows[0][1] == StageStatus.RETRYING else 1
            txn.insert_or_update(
                "CallStages",
                ["TenantId", "CallId", "Stage", "Status", "Detail", "Attempts", "UpdatedAt"],
                [
                    (
                        tenant_id,
                        call_id,
                        stage.value,
                        StageStatus.RETRYING.value,
                        detail[:2000],
                        attempts,
                        spanner.COMMIT_TIMESTAMP,
                    )
                ],
            )
            return attempts

        return int(self._db.run_in_transaction(work))

    def done_detail(
        self, tenant_id: str, call_id: str, stage: Stage, correlation_id: str
    ) -> str | None:
        from google.cloud import spanner

        with self._db.snapshot() as snapshot:
            rows = list(
                snapshot.read(
                    "CallStages",
                    ["Status", "CorrelationId", "Detail"],
                    spanner.KeySet(keys=[[tenant_id, call_id, stage.value]]),
                )
            )
        if (
            rows
            and rows[0][0] in (StageStatus.OK, StageStatus.SKIPPED)
            and rows[0][1] == correlation_id
        ):
            return str(rows[0][2] or "")
        return None
