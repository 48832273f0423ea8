"""Describing an error in one line, for messages shown to operators."""

from __future__ import annotations


def headline(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message, at most ``limit`` characters.

    Google clients put the service's reason on the first line and debug detail (gRPC
    status, metadata, the request) on the next ones."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""
