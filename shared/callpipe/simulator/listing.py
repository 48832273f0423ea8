"""``GET /v3/a/{account}/calls.json``: filters, sorting and both kinds of pagination.

- Offset pagination (the default): ``page`` (1-based) and ``per_page`` (default 100, at
  most 250; more is a 400 as on CallRail), answered with ``page``, ``per_page``,
  ``total_pages``, ``total_records`` and ``calls``.
- Relative pagination (``relative_pagination=true``): ``offset`` is the 0-based page index,
  as CallRail documents it; the answer has ``per_page``, ``has_next_page``, ``next_page``
  (the full URL of the next page, or null) and ``calls``, and no totals.
- ``start_date`` / ``end_date`` bound ``start_time``, both inclusive. A date (``2026-11-20``)
  means that whole day in the call's own time zone (the offset of its ``start_time``); a
  datetime with an offset is an instant; a datetime without one is read in the call's
  time zone.
- ``sort`` (a default field, ``start_time`` by default) and ``order`` (``desc`` by default,
  newest first as on CallRail); ties are broken by call id so pages never overlap.
- ``company_id`` keeps the calls of one company.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from callpipe.simulator.fields import DEFAULT_FIELDS, parse_fields
from callpipe.simulator.store import StoredCall

MAX_PER_PAGE = 250
DEFAULT_PER_PAGE = 100
SORTABLE: frozenset[str] = frozenset(DEFAULT_FIELDS)
# Passed on to next_page so that following it keeps the same query.
_CARRIED = ("start_date", "end_date", "sort", "order", "fields", "company_id")


class QueryError(ValueError):
    """A 400: the message is what the API answers."""


@dataclass(frozen=True)
class Bound:
    """One end of the date range: a whole day or an instant (aware or call-local)."""

    day: date | None = None
    moment: datetime | None = None

    def key(self, start_time: datetime) -> tuple[Any, ...]:
        if self.day is not None:
            return (start_time.date(),)
        assert self.moment is not None
        if self.moment.tzinfo is None:
            return (start_time.replace(tzinfo=None),)
        return (start_time,)

    def value(self) -> tuple[Any, ...]:
        return (self.day,) if self.day is not None else (self.moment,)


@dataclass(frozen=True)
class ListQuery:
    per_page: int
    page: int
    relative: bool
    offset: int
    start: Bound | None
    end: Bound | None
    sort: str
    descending: bool
    fields: tuple[str, ...]
    company_id: str | None
    raw: Mapping[str, str]

    def matches(self, call: StoredCall) -> bool:
        if self.company_id is not None and str(call.public.get("company_id")) != self.company_id:
            return False
        if self.start is not None and self.start.key(call.start_time) < self.start.value():
            return False
        return not (self.end is not None and self.end.key(call.start_time) > self.end.value())


def parse_list_query(args: Mapping[str, str]) -> ListQuery:
    per_page = _int(args, "per_page", DEFAULT_PER_PAGE)
    if per_page < 1:
        raise QueryError("per_page must be greater than 0")
    if per_page > MAX_PER_PAGE:
        raise QueryError(f"per_page must be less than or equal to {MAX_PER_PAGE}")
    page = _int(args, "page", 1)
    if page < 1:
        raise QueryError("page must be greater than 0")
    relative_raw = args.get("relative_pagination", "false").strip().lower()
    if relative_raw not in ("true", "false", "1", "0", ""):
        raise QueryError("relative_pagination must be true or false")
    offset = _int(args, "offset", 0)
    if offset < 0:
        raise QueryError("offset must be 0 or greater")
    sort = args.get("sort") or "start_time"
    if sort not in SORTABLE:
        raise QueryError(f"sort must be one of: {', '.join(sorted(SORTABLE))}")
    order = (args.get("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")
    return ListQuery(
        per_page=per_page,
        page=page,
        relative=relative_raw in ("true", "1"),
        offset=offset,
        start=_bound(args, "start_date"),
        end=_bound(args, "end_date"),
        sort=sort,
        descending=order == "desc",
        fields=parse_fields(args.get("fields")),
        company_id=args.get("company_id") or None,
        raw=args,
    )


def select_calls(calls: Sequence[StoredCall], query: ListQuery) -> list[StoredCall]:
    """The matching calls in the requested order (ties broken by id, in the same direction)."""
    kept = [call for call in calls if query.matches(call)]
    return sorted(kept, key=lambda call: _sort_key(call, query.sort), reverse=query.descending)


def page_of(
    ordered: Sequence[StoredCall], query: ListQuery
) -> tuple[list[StoredCall], dict[str, Any]]:
    """The page's calls and the envelope's other keys (without ``calls``)."""
    size = query.per_page
    if query.relative:
        start = query.offset * size
        chunk = list(ordered[start : start + size])
        has_next = start + size < len(ordered)
        return chunk, {"per_page": size, "has_next_page": has_next}
    start = (query.page - 1) * size
    chunk = list(ordered[start : start + size])
    return chunk, {
        "page": query.page,
        "per_page": size,
        "total_pages": math.ceil(len(ordered) / size),
        "total_records": len(ordered),
    }


def next_page_url(base_url: str, path: str, query: ListQuery) -> str:
    params: dict[str, str] = {
        key: query.raw[key] for key in _CARRIED if query.raw.get(key) not in (None, "")
    }
    params.update(
        relative_pagination="true", per_page=str(query.per_page), offset=str(query.offset + 1)
    )
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}"


def _sort_key(call: StoredCall, field: str) -> tuple[Any, ...]:
    if field == "start_time":
        return (0, call.start_time, call.call_id)
    value = call.public.get(field)
    # None sorts first (ascending); mixed types compare by their text.
    if value is None:
        return (0, "", call.call_id)
    if isinstance(value, bool | int | float):
        return (1, float(value), call.call_id)
    return (2, str(value), call.call_id)


def _int(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise QueryError(f"{name} must be an integer") from error


_SPACE_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")

Kind = Literal["start_date", "end_date"]


def _bound(args: Mapping[str, str], name: Kind) -> Bound | None:
    raw = args.get(name)
    if not raw:
        return None
    # A "+" of an offset sent unencoded in a query string arrives as a space.
    text = _SPACE_OFFSET.sub(r"\1+\2", raw.strip())
    if len(text) == 10:
        try:
            return Bound(day=date.fromisoformat(text))
        except ValueError:
            pass
    try:
        return Bound(moment=datetime.fromisoformat(text))
    except ValueError as error:
        raise QueryError(f"{name} must be an ISO 8601 date or datetime") from error
