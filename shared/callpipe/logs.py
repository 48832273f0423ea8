"""Structured logging in the Cloud Logging JSON format, one object per line on stdout.

Every line carries ``severity`` and ``message`` plus the pipeline's correlation fields
(``tenant_id``, ``call_id``, ``correlation_id``, ``step``); the correlation id also fills
``logging.googleapis.com/trace`` so that Cloud Logging groups a call's lines together.
Values are passed through :mod:`callpipe.redact` so phone numbers and names never leak.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from callpipe.redact import redact_mapping, redact_text

_configured = threading.Lock()
_done = False
_project: str | None = None

# Identifiers and codes validated before they are logged: they cannot hold personal data,
# so the regex redaction (the costliest part of a log line) is skipped for them.
_SAFE_FIELDS = frozenset(
    {
        "step",
        "status",
        "outcome",
        "latency_ms",
        "tenant_id",
        "office_id",
        "event_type",
        "message_id",
        "token_id",
    }
)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "fields"}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _severity(record.levelno),
            "message": redact_text(record.getMessage()),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            safe = {k: v for k, v in fields.items() if k in _SAFE_FIELDS}
            rest = {k: v for k, v in fields.items() if k not in _SAFE_FIELDS}
            entry.update(safe)
            if rest:
                entry.update(redact_mapping(rest))
        correlation_id = entry.get("correlation_id")
        if correlation_id and _project:
            entry["logging.googleapis.com/trace"] = f"projects/{_project}/traces/{correlation_id}"
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


def _severity(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


class BackgroundLineHandler(logging.Handler):
    """Hands records to one writer thread, which formats them and writes them in batches.

    A request thread only enqueues its record. Formatting, the stream lock and a write and
    flush per line on the request path cost intake about a fifth of its throughput under
    concurrent load (measured with bench/intake_bench.py); the writer thread writes whatever
    has queued up in one call. ``flush()`` waits until what was logged before it is written;
    ``close()``, also run at exit, writes out everything still queued.
    """

    MAX_BATCH = 128  # a bounded burst of formatting on the writer thread

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._stream = stream
        # a record to write, an Event to set once everything before it is written, or None
        # to stop
        self._queue: queue.SimpleQueue[logging.LogRecord | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def handle(self, record: logging.LogRecord) -> bool:
        # no handler lock: the queue is thread-safe and a record is not changed once logged
        if not self.filter(record):
            return False
        self._queue.put(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._queue.put(record)

    def flush(self) -> None:
        if self._writer.is_alive():
            written = threading.Event()
            self._queue.put(written)
            written.wait(5.0)  # bounded: a stream that blocks must not hang the caller

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(5.0)
        super().close()

    def _run(self) -> None:
        running = True
        while running:
            item = self._queue.get()
            lines: list[str] = []
            reached: list[threading.Event] = []
            while True:
                if item is None:
                    running = False
                    break
                if isinstance(item, threading.Event):
                    reached.append(item)
                else:
                    try:
                        lines.append(self.format(item))
                    except Exception:  # noqa: BLE001 - one bad record must not stop the writer
                        self.handleError(item)
                if len(lines) >= self.MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):  # a closed stream at interpreter exit
                    pass
            for event in reached:
                event.set()


def configure_logging(level: str = "INFO", project: str | None = None) -> None:
    """Install the JSON formatter on the root logger once per process, writing to stdout
    from a background thread (see BackgroundLineHandler)."""
    global _done, _project
    with _configured:
        _project = project
        if _done:
            return
        handler = BackgroundLineHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        # Client libraries are chatty at INFO; their warnings still come through.
        for noisy in ("google", "urllib3", "grpc", "werkzeug", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _done = True


def log_event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (None values are dropped)."""
    if logger.isEnabledFor(level):
        logger.log(
            level, message, extra={"fields": {k: v for k, v in fields.items() if v is not None}}
        )
