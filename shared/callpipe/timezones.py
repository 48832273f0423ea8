"""IANA time zones named in settings, requests and rows: the one way to tell a real one."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC_ZONE = ZoneInfo("UTC")


def known_zone(name: str) -> ZoneInfo | None:
    """The zone ``name`` names, or None for anything else (unknown, malformed, or a folder
    of the zone database such as "America", which ZoneInfo answers with an OSError)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
