"""Whether a webhook payload can travel down the pipeline.

register-call stores the parsed payload in Spanner's JSON type (``Calls.Webhook``) and
serialises it into ``CallRegistered``. JSON that Python reads but those cannot take is
refused at intake, where the authentic body is kept in quarantine, rather than accepted
and then retried and dead-lettered in register-call after the call's row was written:

- NaN and Infinity (the literals, or a number too large for a double, decimal or integer:
  ``1e400``, or 400 digits): not JSON, and Spanner refuses them;
- nesting deeper than ``MAX_DEPTH``: Spanner's JSON type takes 80 levels at most (and
  pydantic's serialiser stops at a few hundred); CallRail's payloads nest 3 or 4;
- text that is no valid Unicode (a lone surrogate escape such as ``"\\ud800"``): it cannot
  be encoded as UTF-8.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from callpipe.callrail.webhook import CallRailWebhook

MAX_DEPTH = 64  # levels of objects and arrays, the body's own object included

_TOO_DEEP = f"the body nests objects or arrays deeper than {MAX_DEPTH} levels"
_NOT_FINITE = "the body holds a number that is NaN, Infinity or too large for a double"
_NOT_UNICODE = "the body holds text that is not valid Unicode (a lone surrogate escape)"


# values that are never a problem, skipped without a call (intake runs this per webhook)
_FINE = frozenset({bool, type(None)})
# Python reads an integer of any length; past this Spanner cannot store it (as Infinity)
_MAX_DOUBLE = sys.float_info.max
_FINE_OR_TEXT = _FINE | {str}


def unstorable(value: Any, check_text: bool = True, depth: int = 1) -> str | None:
    """Why parsed JSON ``value``, found at nesting level ``depth``, cannot travel down the
    pipeline; None when it can. ``check_text=False`` skips the strings, for a parser that
    refuses lone surrogates itself. Never quotes the payload (it holds names and numbers)."""
    kind = type(value)  # JSON parsers make exact built-in types: no isinstance needed
    fine = _FINE if check_text else _FINE_OR_TEXT
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            return _TOO_DEEP
        if kind is dict and check_text and not all(map(_is_unicode, value)):
            return _NOT_UNICODE
        for item in value.values() if kind is dict else value:
            if type(item) in fine:
                continue
            problem = unstorable(item, check_text, depth + 1)
            if problem is not None:
                return problem
    elif kind is float:
        if not math.isfinite(value):
            return _NOT_FINITE
    elif kind is int:
        if not -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
            return _NOT_FINITE
    elif kind is str and check_text and not _is_unicode(value):
        return _NOT_UNICODE
    return None


def unstorable_webhook(webhook: CallRailWebhook) -> str | None:
    """``unstorable`` for a model parsed from the raw bytes (``model_validate_json``),
    without a second walk of the whole body: pydantic's JSON parser refuses lone
    surrogates and nesting past 200 levels, and the typed fields refuse non-finite
    numbers, so only the values the model keeps as they came are left to check."""
    return (
        unstorable(webhook.model_extra, check_text=False)
        or unstorable(webhook.changes, check_text=False, depth=2)
        or unstorable(webhook.tags, check_text=False, depth=2)
        or unstorable(webhook.form_data, check_text=False, depth=2)
    )


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
