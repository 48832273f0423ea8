"""The calls the simulator serves: one JSON file per call under ``<data_dir>/calls/``.

Files are read again whenever they change (size or mtime), so calls dropped into the
folder while the simulator runs are served at once and edits take effect on the next
request. A file that cannot be used is skipped and reported in ``GET /_sim/calls`` rather
than failing the whole simulator.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callpipe.simulator.faults import Faults

log = logging.getLogger(__name__)

SIMULATOR_KEY = "_simulator"
AUDIO_CONTENT_TYPES: dict[str, str] = {".mp3": "audio/mpeg", ".wav": "audio/wav"}


class ScriptTurn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    speaker: Literal["agent", "caller"]
    text: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)


class SimulatorMeta(BaseModel):
    """The ``_simulator`` block: never returned by the API."""

    # Extra keys (audio details, notes) are kept: the data format may grow.
    model_config = ConfigDict(extra="allow", frozen=True)

    audio: str | None = None
    faults: Faults = Faults()
    script: tuple[ScriptTurn, ...] = ()
    labels: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class StoredCall:
    call_id: str
    account_id: str
    public: dict[str, Any]  # the call as the API returns it with every field
    meta: SimulatorMeta
    start_time: datetime  # timezone-aware
    audio_path: Path | None  # None: no recording (or its file is missing)

    @property
    def audio_content_type(self) -> str | None:
        if self.audio_path is None:
            return None
        return AUDIO_CONTENT_TYPES[self.audio_path.suffix.lower()]

    @property
    def audio_file_name(self) -> str | None:
        """The recording's name in URLs: ``<CALL_ID>.<ext>`` whatever the file is called."""
        if self.audio_path is None:
            return None
        return f"{self.call_id}{self.audio_path.suffix.lower()}"


class CallFileError(ValueError):
    pass


def parse_call_file(path: Path) -> tuple[StoredCall, str | None]:
    """Load one call file; returns the call and a warning (for example a missing audio file)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CallFileError(f"unreadable JSON: {error}") from error
    if not isinstance(document, dict):
        raise CallFileError("the file must hold a JSON object")
    raw_meta = document.pop(SIMULATOR_KEY, None) or {}
    try:
        meta = SimulatorMeta.model_validate(raw_meta)
    except ValidationError as error:
        raise CallFileError(f"invalid {SIMULATOR_KEY}: {error}") from error
    call_id = document.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise CallFileError('"id" must be a non-empty string (a "CAL…" id)')
    account_id = document.get("account_id")
    if account_id is None or str(account_id) == "":
        raise CallFileError('"account_id" is required: it decides which account serves the call')
    start_time = _parse_start_time(document.get("start_time"))
    audio_path, warning = _audio_path(path.parent, meta.audio)
    stored = StoredCall(
        call_id=call_id,
        account_id=str(account_id),
        public=document,
        meta=meta,
        start_time=start_time,
        audio_path=audio_path,
    )
    return stored, warning


def _parse_start_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise CallFileError('"start_time" must be an ISO-8601 string with an offset')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise CallFileError(f'"start_time" is not ISO-8601: {value!r}') from error
    if parsed.tzinfo is None:
        raise CallFileError(f'"start_time" needs a UTC offset: {value!r}')
    return parsed


def _audio_path(folder: Path, name: str | None) -> tuple[Path | None, str | None]:
    if name is None:
        return None, None
    # Only a bare file name: a data file must not make the simulator serve arbitrary paths.
    if Path(name).name != name or name in (".", ".."):
        raise CallFileError(
            f"{SIMULATOR_KEY}.audio must be a file name in the same folder: {name!r}"
        )
    if Path(name).suffix.lower() not in AUDIO_CONTENT_TYPES:
        raise CallFileError(f"{SIMULATOR_KEY}.audio must be .mp3 or .wav: {name!r}")
    path = folder / name
    if not path.is_file():
        return None, f"audio file {name} is missing: the call is served without a recording"
    return path, None


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]
    call: StoredCall | None
    problem: str | None


class CallStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.calls_dir = self.data_dir / "calls"
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._by_id: dict[str, StoredCall] = {}
        self._problems: dict[str, str] = {}

    def refresh(self) -> None:
        """Bring the index up to date with the folder (cheap when nothing changed)."""
        with self._lock:
            seen: dict[str, tuple[int, int]] = {}
            try:
                with os.scandir(self.calls_dir) as entries:
                    for entry in entries:
                        if entry.name.endswith(".json") and entry.is_file():
                            info = entry.stat()
                            seen[entry.name] = (info.st_mtime_ns, info.st_size)
            except FileNotFoundError:
                pass
            changed = seen.keys() != self._entries.keys()
            for name, stamp in seen.items():
                old = self._entries.get(name)
                if old is not None and old.stamp == stamp:
                    continue
                changed = True
                self._entries[name] = self._load(name, stamp)
            for name in list(self._entries):
                if name not in seen:
                    del self._entries[name]
            if changed:
                self._reindex()

    def get(self, call_id: str) -> StoredCall | None:
        self.refresh()
        with self._lock:
            return self._by_id.get(call_id)

    def all(self) -> list[StoredCall]:
        self.refresh()
        with self._lock:
            return list(self._by_id.values())

    def problems(self) -> dict[str, str]:
        """File name -> why it is skipped or served degraded."""
        self.refresh()
        with self._lock:
            return dict(self._problems)

    def _load(self, name: str, stamp: tuple[int, int]) -> _Entry:
        try:
            call, warning = parse_call_file(self.calls_dir / name)
        except CallFileError as error:
            log.warning("simulator: skipping %s: %s", name, error)
            return _Entry(stamp, None, str(error))
        if warning:
            log.warning("simulator: %s: %s", name, warning)
        return _Entry(stamp, call, warning)

    def _reindex(self) -> None:
        by_id: dict[str, StoredCall] = {}
        problems: dict[str, str] = {}
        for name in sorted(self._entries):  # sorted: the same file wins a duplicate id every time
            entry = self._entries[name]
            if entry.problem:
                problems[name] = entry.problem
            if entry.call is None:
                continue
            if entry.call.call_id in by_id:
                problems[name] = f"duplicate call id {entry.call.call_id}: skipped"
                continue
            by_id[entry.call.call_id] = entry.call
        self._by_id = by_id
        self._problems = problems
