"""Structured logging in the Cloud Logging JSON format, one object per line on stdout.

Every line carries ``severity`` and ``message`` plus the pipeline's correlation fields
(``tenant_id``, ``call_id``, ``correlation_id``, ``step``); the correlation id also fills
``logging.googleapis.com/trace`` so that Cloud Logging groups a call's lines together.
Values are passed through :mod:`callpipe.redact` so phone numbers and names never leak.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
import threading
from datetime import UTC, datetime
from typing import Any

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


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each log line with one ``write`` system call, without holding a lock across it.

    ``StreamHandler`` formats and writes while holding its lock, and the write releases the
    GIL: under load, the other request threads then queue on the lock while its holder waits
    to get the GIL back (a fifth of intake's log-line cost in the benchmark's GIL profile).
    Here the line is formatted first, and a line of up to ``PIPE_BUF`` bytes goes out in a
    single ``os.write``, which the kernel never interleaves with another writer's on a pipe
    (Cloud Run collects stdout through one). Longer lines (tracebacks) and streams without
    a file descriptor (a test's StringIO) take the locked path.
    """

    terminator = "\n"

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._fd = _file_descriptor(self.stream)

    def setStream(self, stream: Any) -> Any:
        previous = super().setStream(stream)
        self._fd = _file_descriptor(self.stream)
        return previous

    def handle(self, record: logging.LogRecord) -> Any:
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            data = line.encode("utf-8", errors="replace")
            if self._fd is None or len(data) > select.PIPE_BUF:
                self.acquire()
                try:
                    self.stream.write(line)
                    self.stream.flush()
                finally:
                    self.release()
                return
            self.stream.flush()  # whatever was printed before this line stays before it
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging.Handler's contract: report, never raise
            self.handleError(record)


def _file_descriptor(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if isinstance(fd, int) else None


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


def configure_logging(level: str = "INFO", project: str | None = None) -> None:
    """Install the JSON formatter on the root logger once per process."""
    global _done, _project
    with _configured:
        _project = project
        if _done:
            return
        handler = LineHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        # Client libraries are chatty at INFO; their warnings still come through.
        for noisy in ("google", "urllib3", "grpc", "werkzeug", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _done = True


def log_event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (None values are dropped).

    The record is made directly: ``Logger.log`` would first walk the stack for the caller's
    file and line, which the JSON lines never show.
    """
    if logger.isEnabledFor(level):
        record = logger.makeRecord(
            logger.name,
            level,
            "(unknown file)",
            0,
            message,
            (),
            None,
            extra={"fields": {k: v for k, v in fields.items() if v is not None}},
        )
        logger.handle(record)
