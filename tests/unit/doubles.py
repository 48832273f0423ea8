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
    """callpipe.progress.Progress: records (stage, status, call columns), counts attempts."""

    def __init__(self) -> None:
        self.records: list[tuple[Stage, StageStatus, dict[str, Any]]] = []
        self.details: list[str | None] = []
        self.attempts = 0

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

    def count_attempt(self, tenant_id: str, call_id: str, stage: Stage, detail: str) -> int:
        self.attempts += 1
        return self.attempts
