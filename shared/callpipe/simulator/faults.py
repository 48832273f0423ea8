"""Per-call fault injection: what a call's ``_simulator.faults`` (or ``POST /_sim/faults``) holds.

Faults let the tests and the local stack rehearse the failures the real CallRail and its
recording storage produce: transient 5xx, slow answers, recordings that vanish, arrive cut
short, arrive garbled, trickle in, or redirect somewhere they should not.

Status sequences are consumed one entry per matching request, so ``[500, 503]`` means "the
next two requests fail, then the call behaves normally". Runtime faults replace a call's
file faults until they are cleared (``DELETE``) or the simulator is reset; both re-arm the
sequences from the file.
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Annotated[int, Field(ge=100, le=599)]
RecordingMode = Literal["ok", "missing", "truncated", "corrupt", "slow"]


class Faults(BaseModel):
    # Unknown keys are refused: a typo in a fault name would otherwise silently test nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_status_sequence: tuple[Status, ...] = ()
    api_delay_ms: int = Field(default=0, ge=0, le=60_000)
    recording: RecordingMode = "ok"
    recording_status_sequence: tuple[Status, ...] = ()
    redirect_to: str | None = None
    # How "slow" trickles: chunk size and pause between chunks.
    slow_chunk_bytes: int = Field(default=1024, ge=1, le=1 << 20)
    slow_interval_ms: int = Field(default=500, ge=0, le=10_000)


NO_FAULTS = Faults()

SequenceKind = Literal["api", "recording"]


class FaultBoard:
    """Runtime fault overrides and how far each status sequence has been consumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, Faults] = {}
        self._cursors: dict[tuple[str, SequenceKind], int] = {}

    def effective(self, call_id: str, file_faults: Faults | None) -> Faults:
        with self._lock:
            override = self._overrides.get(call_id)
        if override is not None:
            return override
        return file_faults if file_faults is not None else NO_FAULTS

    def override(self, call_id: str, faults: Faults) -> None:
        with self._lock:
            self._overrides[call_id] = faults
            self._rearm(call_id)

    def clear(self, call_id: str) -> None:
        with self._lock:
            self._overrides.pop(call_id, None)
            self._rearm(call_id)

    def reset(self) -> None:
        with self._lock:
            self._overrides.clear()
            self._cursors.clear()

    def next_status(self, call_id: str, kind: SequenceKind, faults: Faults) -> int | None:
        """The injected status for this request, or None once the sequence is used up."""
        sequence = faults.api_status_sequence if kind == "api" else faults.recording_status_sequence
        if not sequence:
            return None
        with self._lock:
            index = self._cursors.get((call_id, kind), 0)
            if index >= len(sequence):
                return None
            self._cursors[(call_id, kind)] = index + 1
            return sequence[index]

    def remaining(self, call_id: str, faults: Faults) -> dict[str, list[int]]:
        with self._lock:
            api = self._cursors.get((call_id, "api"), 0)
            recording = self._cursors.get((call_id, "recording"), 0)
        return {
            "api_status_sequence": list(faults.api_status_sequence[api:]),
            "recording_status_sequence": list(faults.recording_status_sequence[recording:]),
        }

    def overrides(self) -> dict[str, Faults]:
        with self._lock:
            return dict(self._overrides)

    def _rearm(self, call_id: str) -> None:
        self._cursors.pop((call_id, "api"), None)
        self._cursors.pop((call_id, "recording"), None)
