"""PII redaction and the Cloud Logging JSON formatter."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import select
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callpipe import logs, redact
from callpipe.logs import CloudLoggingFormatter, LineHandler, log_event
from callpipe.redact import REDACTED, redact_mapping, redact_text, redact_value
from tests.unit.conftest import LogCapture


@pytest.mark.parametrize(
    "phone",
    [
        "+15551234567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "+1 555 123 4567",
        "1-800-555-0199",
        "+442079460958",
        "+44 20 7946 0958",
        "+52 55 1234 5678",
        "+33 1 23 45 67 89",
        "555-1234",
        "+44 7911 123456",
        "+91 98765 43210",
        "+49 30 123456789",
        "+49 170 1234567",
    ],
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    text = f"caller {phone} called back"
    assert redact_text(text) == "caller [phone] called back"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from +442079460958 - 2025-11-26", "from [phone] - 2025-11-26"),
        ("+442079460958 20 30 40", "[phone] 20 30 40"),
        ("caller +33123456789 12 34 56 78", "caller [phone] 12 34 56 78"),
        ("call +44 20 7946 0958 or 555-1234 today", "call [phone] or [phone] today"),
        ("555-1234 per my email", "[phone] per my email"),
        ("555-1234/555-5678", "[phone]/[phone]"),
        ("555-1234 a month ago", "[phone] a month ago"),
    ],
)
def test_phone_numbers_followed_by_other_numbers_are_still_redacted(
    text: str, expected: str
) -> None:
    assert redact_text(text) == expected


def test_several_phone_numbers_in_one_text() -> None:
    text = "from +15035550199 to (503) 555-0123, callback 503.555.0142"
    redacted = redact_text(text)
    assert redacted == "from [phone] to [phone], callback [phone]"


@pytest.mark.parametrize(
    "text",
    [
        "duration 184",
        "recording_duration=176 latency_ms=12.34",
        "CALf3a91c2e7b5d4a08e6c1b9d7a2e4f530",
        "COM8154748ae6bd4e278a7cddd38a662f4f",
        "2025-03-14T10:27:41.512-07:00",
        "2025-03-14 17:21:03",
        "1714572202123",  # epoch milliseconds
        "company 381234567",  # legacy numeric company id (9 digits)
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "123e4567-e89b-12d3-a456-426614174000",
        "status 202, attempt 5 of 100",
        "message 2070443601311540",  # a Pub/Sub message id
        "2025-11-26T09:24:05+00:00",
        "offset +0530 and +1 more",
        "budget $25,000-30,000, 2 weeks",
        "latency_ms=123.4567",
        "ticket 2025-1234-5678",
        "budget is $500-1000",
        "budget is $1,500-2000",
        "a 250-1000 sqft room",
        "a 250-1000 sq ft room",
        "between 300-1200 dollars",
        "Wed Nov 26 09:24:05 +0000 2025",
        "took +1234.5678 ms",
    ],
)
def test_ordinary_numbers_and_ids_are_not_redacted(text: str) -> None:
    assert redact_text(text) == text


def test_pii_keys_are_redacted_whatever_their_value() -> None:
    data = {
        "customer_name": "Marisol Tenorio",
        "Customer_Phone_Number": "+15035550199",
        "callernum": "+15035550199",
        "email": "m@example.com",
        "name": "x",
        "call_id": "CAL1",
        "duration": 184,
    }
    assert redact_mapping(data) == {
        "customer_name": REDACTED,
        "Customer_Phone_Number": REDACTED,
        "callernum": REDACTED,
        "email": REDACTED,
        "name": REDACTED,
        "call_id": "CAL1",
        "duration": 184,
    }


def test_empty_pii_values_are_left_alone() -> None:
    assert redact_mapping({"customer_name": None, "phone": ""}) == {
        "customer_name": None,
        "phone": "",
    }


def test_nested_mappings_and_lists_are_redacted() -> None:
    data = {
        "webhook": {
            "customer_name": "Marisol Tenorio",
            "form_data": {"phone": "(503) 555-0148", "message": "call me at 503-555-0148"},
            "tags": ["VIP", "+15035550199"],
        },
        "pairs": ("ok", "555.123.4567"),
    }
    assert redact_mapping(data) == {
        "webhook": {
            "customer_name": REDACTED,
            "form_data": {"phone": REDACTED, "message": "call me at [phone]"},
            "tags": ["VIP", "[phone]"],
        },
        "pairs": ["ok", "[phone]"],
    }


def test_redaction_does_not_modify_its_input() -> None:
    data = {"customer_name": "Marisol", "nested": {"phone": "+15035550199"}}
    redact_mapping(data)
    assert data == {"customer_name": "Marisol", "nested": {"phone": "+15035550199"}}


def test_non_string_keys_do_not_break_redaction() -> None:
    assert redact_mapping({"counts": {1: "+15035550199", 2: 3}}) == {"counts": {1: "[phone]", 2: 3}}


@pytest.mark.parametrize("value", [184, 1.5, None, True])
def test_non_text_scalars_pass_through(value: object) -> None:
    assert redact_value(value) == value


# -- the formatter ------------------------------------------------------------------------------


def record(
    message: str,
    level: int = logging.INFO,
    fields: dict[str, object] | None = None,
    exc_info: object = None,
) -> logging.LogRecord:
    rec = logging.LogRecord("callpipe.test", level, __file__, 1, message, (), exc_info)  # type: ignore[arg-type]
    if fields is not None:
        rec.fields = fields
    rec.created = datetime(2025, 3, 14, 17, 0, 0, tzinfo=UTC).timestamp()
    return rec


def test_formatter_writes_one_line_of_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_project", None)
    line = CloudLoggingFormatter().format(
        record(
            "webhook accepted",
            fields={"tenant_id": "acme-dental", "call_id": "CAL1", "note": "multi\nline"},
        )
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["severity"] == "INFO"
    assert entry["message"] == "webhook accepted"
    assert entry["time"] == "2025-03-14T17:00:00+00:00"
    assert entry["logger"] == "callpipe.test"
    assert entry["tenant_id"] == "acme-dental"
    assert entry["call_id"] == "CAL1"
    assert entry["note"] == "multi\nline"
    assert "logging.googleapis.com/trace" not in entry


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARNING"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "CRITICAL"),
    ],
)
def test_formatter_severity(level: int, severity: str) -> None:
    assert json.loads(CloudLoggingFormatter().format(record("x", level)))["severity"] == severity


def test_formatter_redacts_message_and_fields() -> None:
    line = CloudLoggingFormatter().format(
        record(
            "call from +15035550199",
            fields={"customer_name": "Marisol Tenorio", "detail": "callback (503) 555-0199"},
        )
    )
    entry = json.loads(line)
    assert entry["message"] == "call from [phone]"
    assert entry["customer_name"] == REDACTED
    assert entry["detail"] == "callback [phone]"
    assert "Marisol" not in line and "555-0199" not in line


def test_formatter_sets_the_trace_when_a_project_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "_project", "callpipe-prod")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    entry = json.loads(
        CloudLoggingFormatter().format(record("x", fields={"correlation_id": trace}))
    )
    assert entry["logging.googleapis.com/trace"] == f"projects/callpipe-prod/traces/{trace}"
    no_id = json.loads(CloudLoggingFormatter().format(record("x", fields={})))
    assert "logging.googleapis.com/trace" not in no_id


def test_formatter_includes_a_redacted_exception() -> None:
    try:
        raise ValueError("lookup failed for +15035550199")
    except ValueError:
        exc_info = sys.exc_info()
    line = CloudLoggingFormatter().format(record("failed", logging.ERROR, exc_info=exc_info))
    entry = json.loads(line)
    assert "ValueError: lookup failed for [phone]" in entry["exception"]
    assert "5035550199" not in line


def test_formatter_serialises_non_json_values_as_text() -> None:
    when = datetime(2025, 3, 14, tzinfo=UTC)
    entry = json.loads(CloudLoggingFormatter().format(record("x", fields={"at": when})))
    assert entry["at"] == str(when)


def test_log_event_drops_none_fields_and_respects_the_level(
    capture_logs: Callable[[str], LogCapture],
) -> None:
    capture = capture_logs("callpipe.unit-test")
    logger = logging.getLogger("callpipe.unit-test")
    log_event(logger, logging.INFO, "step done", step="intake", call_id=None, tenant_id="t1")
    logger.setLevel(logging.WARNING)
    log_event(logger, logging.INFO, "filtered out", step="intake")
    (entry,) = capture.records()
    assert entry["message"] == "step done"
    assert entry["step"] == "intake"
    assert entry["tenant_id"] == "t1"
    assert "call_id" not in entry


# -- the line handler ----------------------------------------------------------------------


def read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


@pytest.mark.parametrize("message_size", [40, select.PIPE_BUF * 3])
def test_lines_written_from_many_threads_through_a_pipe_stay_whole(message_size: int) -> None:
    read_end, write_end = os.pipe()
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.append(read_all(read_end)))
    reader.start()
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    handler = LineHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    logger = logging.getLogger(f"callpipe.unit-test.pipe-{message_size}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def write(worker: int) -> None:
        for line in range(200):
            log_event(logger, logging.INFO, "x" * message_size, worker=worker, line=line)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    logger.removeHandler(handler)
    stream.close()
    reader.join(30)

    entries = [json.loads(line) for line in collected[0].splitlines()]
    assert len(entries) == 8 * 200
    assert {(e["worker"], e["line"]) for e in entries} == {
        (w, n) for w in range(8) for n in range(200)
    }
    assert all(e["message"] == "x" * message_size for e in entries)


def test_the_line_handler_writes_to_a_stream_without_a_file_descriptor() -> None:
    stream = io.StringIO()
    handler = LineHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    handler.handle(record("first"))
    # a stream set later is written through its own way, not the previous stream's descriptor
    handler.setStream(sys.stderr)
    handler.setStream(stream)
    handler.handle(record("second", fields={"phone": "+15035550199"}))
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["message"] for e in entries] == ["first", "second"]
    assert entries[1]["phone"] == REDACTED


def test_what_was_printed_before_a_log_line_stays_before_it(tmp_path: Path) -> None:
    with open(tmp_path / "out.log", "w", encoding="utf-8") as stream:
        handler = LineHandler(stream)
        handler.setFormatter(CloudLoggingFormatter())
        stream.write("printed\n")  # buffered in the stream, not yet on the file
        handler.handle(record("logged"))
    lines = (tmp_path / "out.log").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "printed"
    assert json.loads(lines[1])["message"] == "logged"


@pytest.mark.parametrize("seed", range(5))
def test_the_shortcuts_redact_exactly_like_the_patterns(seed: int) -> None:
    rng = random.Random(seed)
    alphabets = [
        "0123456789",
        "0123456789abcdef",
        "0123456789ABCDEFcal",
        "abcXYZ",
        "abc XYZ-_.():+é",  # words and punctuation without digits: the second shortcut
        "0123456789 -.()+",  # how people write phone numbers
        "ab1 @.",
    ]
    for _ in range(2000):
        alphabet = rng.choice(alphabets)
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        for text in (word, "+" + word, word + "@example.com", f"call from {word} ended"):
            phones = redact.redact_phones(text)
            expected = redact._EMAIL.sub("[email]", phones) if "@" in phones else phones
            assert redact_text(text) == expected, text


def test_digit_words_that_are_phone_numbers_are_still_redacted() -> None:
    assert redact_text("15035550199") == "[phone]"  # 11 digits: below the shortcut's length
    assert redact_text("5035550199") == "[phone]"
    assert (
        redact_text("CAL8154748ae6bd4e278a7cddd38a662f4f") == "CAL8154748ae6bd4e278a7cddd38a662f4f"
    )
