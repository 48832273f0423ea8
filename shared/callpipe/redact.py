"""PII redaction for log lines: phone numbers and people's names never reach the logs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Phone numbers as CallRail writes them (+15551234567), as people do ((555) 123-4567), a
# local number with its hyphen (555-1234; not a price or size range: "$500-1000",
# "250-1000 sq ft"), and international ones written in groups (+44 20 7946 0958: a "+" then
# 8 to 15 digits, checked in _phone).
_PHONE = re.compile(
    r"(?<![\w])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?![\w])"
    r"|(?<![\w.,$€£-])[2-9]\d{2}-\d{4}(?![\w-])"
    r"(?!\s*(?:sq|square|ft\b|feet|foot|dollars|bucks))"
    r"|\+\d{8,15}(?![\w])"
    r"|\+\d{1,3}(?:[\s.-]\d{1,10}){1,5}(?![\w])"
)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("+") and not 8 <= sum(c.isdigit() for c in text) <= 15:
        return text
    return "[phone]"


def redact_phones(text: str) -> str:
    return _PHONE.sub(_phone, text)


# Keys whose values are personal data whatever they look like.
PII_KEYS = frozenset(
    {
        "customer_name",
        "caller_name",
        "name",
        "customer_phone_number",
        "callernum",
        "caller_number",
        "formatted_customer_phone_number",
        "formatted_customer_name",
        "customer_email",
        "email",
        "agent_email",
        "phone",
        "phone_number",
    }
)

REDACTED = "[redacted]"


# Anchored at the start of a run of address characters, and bounded: unanchored, a long
# run without an "@" ("1-1-1-…") was scanned again from each of its characters.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+")


# Both patterns need a digit or an "@": a text with neither cannot hold a match.
_MATCHABLE = re.compile(r"[\d@]")


def redact_text(text: str) -> str:
    # The shortcuts keep log lines cheap on the request path; a property test checks that
    # they redact exactly like the patterns.
    if len(text) >= 12 and text.isascii() and text.isalnum():
        # One ASCII word of 12+ letters and digits (ids, trace ids) cannot hold a match: a
        # phone number needs a "+" or separators or is a whole word of 10-11 digits, an email
        # needs "@".
        return text
    if _MATCHABLE.search(text) is None:
        return text
    text = redact_phones(text)
    return _EMAIL.sub("[email]", text) if "@" in text else text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: (
            REDACTED
            if isinstance(key, str) and key.lower() in PII_KEYS and value
            else redact_value(value)
        )
        for key, value in data.items()
    }
