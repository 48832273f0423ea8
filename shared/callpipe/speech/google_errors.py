"""Which Speech-to-Text errors a retry can clear, decided by one table of status codes.

Errors reach the adapter three ways: as the client's exceptions (over gRPC each carries its
status code), as the error of a finished long-running operation (google-api-core raises the
exception of its code) and as a per-file ``google.rpc.Status`` inside a BatchRecognize
result. Deciding all three from the same codes keeps them from disagreeing, as they did
when the exceptions were matched against a list of classes that missed ALREADY_EXISTS and
DATA_LOSS (transient as exceptions, permanent as per-file codes).
"""

from __future__ import annotations

from google.api_core import exceptions as api_exceptions
from google.rpc import code_pb2

from callpipe.transcripts import TranscriptionFailed

# The service was interrupted, overloaded, out of quota for now, or too slow: the same
# request can succeed later. Every other code says the request, the audio or the set-up is
# wrong, and sending it again gets the same answer.
TRANSIENT_CODES = frozenset(
    {
        code_pb2.CANCELLED,
        code_pb2.UNKNOWN,
        code_pb2.DEADLINE_EXCEEDED,
        code_pb2.RESOURCE_EXHAUSTED,
        code_pb2.ABORTED,
        code_pb2.INTERNAL,
        code_pb2.UNAVAILABLE,
    }
)
# HTTP statuses of the 4xx range that are about timing, not about the request: 408 Request
# Timeout, 409 Conflict (ABORTED and ALREADY_EXISTS share it; without the gRPC code, a
# retry is the safe reading), 429 Too Many Requests, 499 Client Closed Request.
_TRANSIENT_HTTP_CLIENT_STATUSES = frozenset({408, 409, 429, 499})
_NOT_IMPLEMENTED = 501


def is_transient_code(code: int) -> bool:
    """For a ``google.rpc.Code`` value, such as a per-file error of a batch."""
    return code in TRANSIENT_CODES


def is_transient(exc: api_exceptions.GoogleAPICallError) -> bool:
    status = exc.grpc_status_code
    if status is not None:
        return is_transient_code(int(status.value[0]))
    # Without a gRPC code (REST transport, or an error built from an HTTP status) the
    # classes only carry the HTTP status: BadRequest, Forbidden, Unauthorized... are the
    # request's fault, 5xx the server's, except 501 (the method does not exist).
    http = exc.code
    if isinstance(http, int) and 400 <= http < 500:
        return http in _TRANSIENT_HTTP_CLIENT_STATUSES
    return http != _NOT_IMPLEMENTED


def failure(exc: api_exceptions.GoogleAPICallError) -> TranscriptionFailed:
    permanent = not is_transient(exc)
    verb = "refused the request" if permanent else "failed (retryable)"
    status = exc.grpc_status_code
    code = status.name if status is not None else exc.code
    return TranscriptionFailed(f"Speech-to-Text {verb}: {code}: {exc.message}", permanent=permanent)
