"""Serving recording bytes, faithfully or with the failure a fault asks for."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from werkzeug.wrappers import Response

from callpipe.simulator.faults import Faults

_CHUNK = 16 * 1024


def audio_response(
    data: bytes,
    content_type: str,
    faults: Faults,
    seed: str,
    sleep: Callable[[float], None],
) -> Response:
    size = len(data)
    mode = faults.recording
    if mode == "corrupt":
        # Seeded by the call id: the same garbage every time, so tests stay deterministic.
        data = random.Random(seed).randbytes(size)
    if mode == "truncated":
        # Announce everything, send half, then let the server close the connection (the
        # dev server always answers "Connection: close"): the client sees a short body.
        body: Iterator[bytes] = _chunks(data[: size // 2], _CHUNK)
    elif mode == "slow":
        body = _trickle(data, faults.slow_chunk_bytes, faults.slow_interval_ms / 1000, sleep)
    else:
        body = _chunks(data, _CHUNK)
    response = Response(body, status=200, content_type=content_type, direct_passthrough=True)
    response.headers["Content-Length"] = str(size)
    response.headers["Accept-Ranges"] = "none"
    response.headers["Cache-Control"] = "private, max-age=0"
    return response


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _trickle(
    data: bytes, size: int, interval: float, sleep: Callable[[float], None]
) -> Iterator[bytes]:
    # Bounded by the file's size: at most len(data) / size pauses.
    for index, chunk in enumerate(_chunks(data, size)):
        if index:
            sleep(interval)
        yield chunk
