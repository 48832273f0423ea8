"""In-memory doubles of the project's own ports, shared by the step unit tests."""

from __future__ import annotations

from typing import Any

from callpipe.progress import Stage, StageStatus


class Publisher:
    """callpipe.publishing.Publisher keeping every message."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.sent.append((topic, data, attributes))
        return str(len(self.sent))


class Progress:
    """callpipe.progress.Progress as SpannerProgress keeps it: one row per (tenant, call,
    stage) with its status, attempts and event; a failed attempt counts on from a row that
    is retrying and starts again from 1 otherwise. ``records`` lists every record made."""

    def __init__(self) -> None:
        self.records: list[tuple[Stage, StageStatus, dict[str, Any]]] = []
        self.details: list[str | None] = []
        self.rows: dict[tuple[str, str, Stage], tuple[StageStatus, int, str | None]] = {}
        self.done_details: dict[tuple[str, str, Stage], str] = {}

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
        self.records.append((stage, status, call_columns or {}))
        self.details.append(detail)
        _, attempts, _ = self.rows.get((tenant_id, call_id, stage), (status, 1, None))
        self.rows[(tenant_id, call_id, stage)] = (status, attempts, correlation_id)
        self.done_details[(tenant_id, call_id, stage)] = detail or ""

    def count_attempt(self, tenant_id: str, call_id: str, stage: Stage, detail: str) -> int:
        status, attempts, event = self.rows.get(
            (tenant_id, call_id, stage), (StageStatus.OK, 0, None)
        )
        attempts = attempts + 1 if status is StageStatus.RETRYING else 1
        self.rows[(tenant_id, call_id, stage)] = (StageStatus.RETRYING, attempts, event)
        return attempts

    def done_detail(
        self, tenant_id: str, call_id: str, stage: Stage, correlation_id: str
    ) -> str | None:
        status, _, event = self.rows.get((tenant_id, call_id, stage), (None, 0, None))
        if status in (StageStatus.OK, StageStatus.SKIPPED) and event == correlation_id:
            return self.done_details[(tenant_id, call_id, stage)]
        return None
