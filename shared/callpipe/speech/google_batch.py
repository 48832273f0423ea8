"""Starting, resuming and waiting for a BatchRecognize within the time one attempt has.

The transcribe step's Pub/Sub ack deadline is its function's timeout; an instance still
waiting when it expires is killed before the step can record or count the failure. So an
attempt gets a :class:`Deadline` that every RPC and every poll respects. google-api-core's
own polling does not: its GetOperation retries UNAVAILABLE and DEADLINE_EXCEEDED for up to
600 s on its own, 60 s per call, whatever time the caller has left.

An operation still running when the attempt gives up is remembered
(:mod:`callpipe.speech.google_operations`); the next attempt for the same recording and
request polls it again instead of starting, and paying for, another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import operation as api_operation
from google.api_core import retry as api_retry

from callpipe.speech.google_errors import is_transient
from callpipe.speech.google_operations import (
    MAX_AGE_SECONDS,
    OperationStore,
    PendingOperation,
    request_key,
)
from callpipe.transcripts import TranscriptionFailed

logger = logging.getLogger("callpipe.speech.google")

# One GetOperation should answer in well under this; a longer stall is retried.
POLL_RPC_SECONDS = 30.0


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def rpc_timeout(self, cap: float | None = None) -> float:
        # gRPC refuses a zero timeout; a call made with (almost) no time left fails at once
        # with DEADLINE_EXCEEDED, which is retryable.
        left = self.remaining() if cap is None else min(self.remaining(), cap)
        return max(left, 0.001)

    def retry(self) -> api_retry.Retry:
        """Retries of transient errors that stop when the deadline comes."""
        return api_retry.Retry(
            predicate=_retryable,
            initial=0.5,
            maximum=5.0,
            multiplier=2.0,
            timeout=self.remaining(),
        )


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, api_exceptions.GoogleAPICallError) and is_transient(exc)


def track(operation: Any, operations_client: Any, deadline: Deadline) -> api_operation.Operation:
    """An operation future for ``operation`` (a ``google.longrunning.Operation``) whose
    polls stay within ``deadline``."""
    from google.cloud.speech_v2.types import cloud_speech

    name = operation.name

    def refresh(retry: Any = None) -> Any:
        # The future passes its own retry; the deadline's replaces it.
        return operations_client.get_operation(
            name, retry=deadline.retry(), timeout=deadline.rpc_timeout(POLL_RPC_SECONDS)
        )

    def cancel() -> None:
        operations_client.cancel_operation(name, timeout=deadline.rpc_timeout(POLL_RPC_SECONDS))

    return api_operation.Operation(
        operation,
        refresh,
        cancel,
        result_type=cloud_speech.BatchRecognizeResponse,
        metadata_type=cloud_speech.OperationMetadata,
    )


def start(
    client: Any, request: Any, store: OperationStore | None, deadline: Deadline
) -> api_operation.Operation:
    uri = request.files[0].uri
    started = client.batch_recognize(request=request, timeout=deadline.rpc_timeout())
    name = started.operation.name
    logger.info("started BatchRecognize %s for %s", name, uri)
    if store is not None:
        store.save(
            PendingOperation(
                name=name,
                recording_uri=uri,
                request_key=request_key(request),
                started_at=time.time(),
            )
        )
    return track(started.operation, client.transport.operations_client, deadline)


def resume(
    client: Any, request: Any, pending: PendingOperation | None, deadline: Deadline
) -> api_operation.Operation | None:
    """The operation an earlier attempt started for this very request (``pending``, as
    loaded from the store), if it can still be polled; None means start another (its
    record is then overwritten)."""
    uri = request.files[0].uri
    if pending is None or pending.claimed:
        return None
    if pending.request_key != request_key(request):
        logger.info("BatchRecognize %s was for another request; not resumed", pending.name)
        return None
    if pending.age() > MAX_AGE_SECONDS:
        logger.info("BatchRecognize %s is %.0f s old; not resumed", pending.name, pending.age())
        return None
    operations = client.transport.operations_client
    try:
        current = operations.get_operation(
            pending.name, retry=deadline.retry(), timeout=deadline.rpc_timeout(POLL_RPC_SECONDS)
        )
    except api_exceptions.NotFound:
        # Expired, or never known here (another location): a new one it is.
        logger.info("BatchRecognize %s is gone; starting another for %s", pending.name, uri)
        return None
    logger.info("resuming BatchRecognize %s for %s", pending.name, uri)
    return track(current, operations, deadline)


def wait(
    operation: api_operation.Operation,
    uri: str,
    deadline: Deadline,
    poll_seconds: float,
    timeout_seconds: float,
    progress: Callable[[float], None] | None,
) -> None:
    """Polls until the operation is done; a transient TranscriptionFailed when the deadline
    would pass before the next poll."""
    reported = 0.0
    while not operation.done():
        fraction = operation_progress(operation, uri)
        if progress is not None and fraction > reported:
            progress(fraction)
            reported = fraction
        # Giving up one interval early beats a last poll with no time left to answer.
        if deadline.remaining() <= poll_seconds:
            raise TranscriptionFailed(
                f"BatchRecognize of {uri} still running after {timeout_seconds:g} s "
                f"(operation {operation.operation.name})"
            )
        time.sleep(poll_seconds)


def operation_progress(operation: Any, uri: str) -> float:
    """The fraction done from the operation metadata's progress_percent, 0 when absent."""
    try:
        metadata = operation.metadata
    except (TypeError, ValueError):  # metadata of an unexpected type
        return 0.0
    if metadata is None:
        return 0.0
    percent = int(metadata.progress_percent)
    per_file = metadata.batch_recognize_metadata.transcription_metadata
    if uri in per_file:
        percent = int(per_file[uri].progress_percent) or percent
    # Never 1.0 before the result is in: that is reported once the transcript is built.
    return min(max(percent, 0), 99) / 100
