"""Remembering the BatchRecognize running for a recording, so that the next attempt resumes it.

An attempt of the transcribe step waits for its operation only so long (see
:mod:`callpipe.speech.google_batch`); the operation goes on running and billing after the
attempt gives up. Without a memory of it, every redelivery would start and pay for another.
So the operation's name is kept next to the recording, in the same bucket
(``tenants/<t>/calls/<c>/transcribe-operation.json``): under the tenant's prefix like the rest
of its data, and written by the same service account that writes ``transcript.json``.

A record only stands for the request it was made for (``request_key``): another model,
language or speaker set-up starts a new operation. Records older than
:data:`MAX_AGE_SECONDS` are not resumed: the service keeps finished operations only for a
while, and one that old is not worth waiting for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from google.api_core import exceptions as api_exceptions

logger = logging.getLogger("callpipe.speech.google")

RECORD_NAME = "transcribe-operation.json"
MAX_AGE_SECONDS = 24 * 3600.0
# A claim (a record without an operation name yet) stands for an attempt starting one;
# one older than this is of an attempt that died before it could, and is taken over.
CLAIM_SECONDS = 120.0
# The record is a few hundred bytes; a store that cannot answer in this long is failing.
_STORE_SECONDS = 10.0


@dataclass(frozen=True)
class PendingOperation:
    name: str  # projects/…/locations/…/operations/…; empty in a claim (being started)
    recording_uri: str
    request_key: str  # request_key() of the BatchRecognizeRequest it was started with
    started_at: float  # seconds since the epoch: records outlive processes

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.started_at

    @property
    def claimed(self) -> bool:
        """A claim: an attempt is starting the operation and has no name for it yet."""
        return not self.name

    def blocks(self, now: float | None = None) -> bool:
        """Whether another attempt must not start an operation: a fresh claim."""
        return self.claimed and self.age(now) < CLAIM_SECONDS

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, recording_uri: str) -> PendingOperation | None:
        """The record, or None when it is unreadable or belongs to another recording."""
        try:
            fields = json.loads(data)
            pending = cls(
                name=str(fields["name"]),
                recording_uri=str(fields["recording_uri"]),
                request_key=str(fields["request_key"]),
                started_at=float(fields["started_at"]),
            )
        except (ValueError, TypeError, KeyError):
            logger.warning("unreadable BatchRecognize record for %s; ignored", recording_uri)
            return None
        return pending if pending.recording_uri == recording_uri else None


def request_key(request: Any) -> str:
    """A fingerprint of a BatchRecognizeRequest (recognizer, config, files, output)."""
    from google.cloud.speech_v2.types import cloud_speech

    pb = cloud_speech.BatchRecognizeRequest.pb(request)
    return hashlib.sha256(pb.SerializeToString(deterministic=True)).hexdigest()


class OperationStore(Protocol):
    def load(self, recording_uri: str) -> PendingOperation | None:
        """The record for this recording, if any. Raises when the store cannot answer."""
        ...

    def save(self, pending: PendingOperation) -> None:
        """Best effort: a record not kept only costs a new operation on the next attempt."""
        ...

    def forget(self, recording_uri: str) -> None:
        """Best effort: a stale record is never resumed past MAX_AGE_SECONDS."""
        ...

    def claim(self, recording_uri: str, request_key: str) -> bool:
        """Take the right to start the recording's operation: False when another attempt
        holds a fresh claim (or took it first). A record that is no fresh claim (an
        operation not resumed: gone, too old, for another request) is taken over."""
        ...


def record_location(recording_uri: str) -> tuple[str, str]:
    """(bucket, object name) of the record kept for ``gs://bucket/…/recording.ext``."""
    bucket, _, name = recording_uri.removeprefix("gs://").partition("/")
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    return bucket, folder + RECORD_NAME


class GcsOperationStore:
    """Records as small JSON objects next to the recordings."""

    def __init__(self, client: Any | None = None, timeout_seconds: float = _STORE_SECONDS) -> None:
        self._client = client
        self._timeout = timeout_seconds

    def load(self, recording_uri: str) -> PendingOperation | None:
        try:
            data = self._blob(recording_uri).download_as_bytes(
                timeout=self._timeout, retry=self._retry()
            )
        except api_exceptions.NotFound:
            return None
        return PendingOperation.from_json(bytes(data), recording_uri)

    def save(self, pending: PendingOperation) -> None:
        try:
            self._blob(pending.recording_uri).upload_from_string(
                pending.to_json(),
                content_type="application/json",
                timeout=self._timeout,
                retry=self._retry(),
            )
        except Exception:
            logger.warning(
                "could not record BatchRecognize %s for %s; a retry will start another",
                pending.name,
                pending.recording_uri,
                exc_info=True,
            )

    def claim(self, recording_uri: str, request_key: str) -> bool:
        claim = PendingOperation(
            name="", recording_uri=recording_uri, request_key=request_key, started_at=time.time()
        )
        blob = self._blob(recording_uri)
        try:
            blob.reload(timeout=self._timeout, retry=self._retry())
            generation = blob.generation
            data = blob.download_as_bytes(
                timeout=self._timeout, retry=self._retry(), if_generation_match=generation
            )
        except api_exceptions.NotFound:
            generation = 0  # none: create it, unless another attempt does first
        except api_exceptions.PreconditionFailed:
            return False  # changed while read: another attempt is at it
        else:
            current = PendingOperation.from_json(bytes(data), recording_uri)
            if current is not None and current.blocks():
                return False
        try:
            # no retry: a write that may have landed must not be mistaken for another's
            blob.upload_from_string(
                claim.to_json(),
                content_type="application/json",
                timeout=self._timeout,
                if_generation_match=generation,
            )
        except api_exceptions.PreconditionFailed:
            return False  # another attempt claimed it (or changed the record) meanwhile
        return True

    def forget(self, recording_uri: str) -> None:
        try:
            self._blob(recording_uri).delete(timeout=self._timeout, retry=self._retry())
        except api_exceptions.NotFound:
            pass
        except Exception:
            logger.warning(
                "could not remove the BatchRecognize record of %s", recording_uri, exc_info=True
            )

    def _blob(self, recording_uri: str) -> Any:
        if self._client is None:
            from google.cloud import storage  # type: ignore[attr-defined]

            self._client = storage.Client()
        bucket, name = record_location(recording_uri)
        return self._client.bucket(bucket).blob(name)

    def _retry(self) -> Any:
        # The library's default retries for up to 120 s: a fair share of an attempt's time.
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self._timeout)
