"""Short-lived URLs to play a call's recording.

In production: a GCS V4 signed URL (GET only, a few minutes). Cloud Functions' default
credentials hold no private key, so signing goes through the IAM ``signBlob`` API with the
runtime service account's email and access token (the account needs
``roles/iam.serviceAccountTokenCreator`` on itself).

Locally: fake-gcs-server checks no signatures, so the URL is its plain media download URL
(``<STORAGE_EMULATOR_HOST>/storage/v1/b/<bucket>/o/<object>?alt=media``); the API still
reports the expiry it would have had, so clients behave the same in both places.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

DEFAULT_URL_TTL = timedelta(minutes=10)


class RecordingNotAvailable(LookupError):
    pass


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


class UrlSigner(Protocol):
    def sign(self, bucket: str, name: str, ttl: timedelta) -> str: ...


def recording_object(uri: str | None, bucket: str, tenant_id: str, call_id: str) -> str:
    """The object name of a call's recording, refusing anything outside its tenant's prefix.

    The URI comes from our own rows, but it is checked anyway: a URL signed for the wrong
    object would hand one tenant another's audio.
    """
    if not uri:
        raise RecordingNotAvailable("this call has no stored recording")
    prefix = f"gs://{bucket}/"
    name = uri[len(prefix) :] if uri.startswith(prefix) else ""
    expected = f"tenants/{tenant_id}/calls/{call_id}/"
    if not name.startswith(expected) or ".." in name.split("/"):
        raise RecordingNotAvailable("this call's recording is not in the recordings bucket")
    return name


class RecordingUrls:
    def __init__(self, signer: UrlSigner, bucket: str, ttl: timedelta = DEFAULT_URL_TTL) -> None:
        self._signer = signer
        self._bucket = bucket
        self._ttl = ttl

    def for_call(self, uri: str | None, tenant_id: str, call_id: str) -> SignedUrl:
        name = recording_object(uri, self._bucket, tenant_id, call_id)
        expires = datetime.now(UTC) + self._ttl
        return SignedUrl(url=self._signer.sign(self._bucket, name, self._ttl), expires_at=expires)


class GcsV4Signer:
    def __init__(self, client: Any | None = None) -> None:
        from google.cloud import storage  # type: ignore[attr-defined]

        self._client = client or storage.Client()

    def sign(self, bucket: str, name: str, ttl: timedelta) -> str:
        import google.auth.transport.requests
        from google.oauth2 import service_account

        credentials = self._client._credentials
        blob = self._client.bucket(bucket).blob(name)
        kwargs: dict[str, Any] = {"version": "v4", "expiration": ttl, "method": "GET"}
        # A key file signs locally. Any other credential (the function's metadata-server
        # account) signs through IAM signBlob, with its email and a fresh access token.
        if not isinstance(credentials, service_account.Credentials):
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
            kwargs["service_account_email"] = credentials.service_account_email
            kwargs["access_token"] = credentials.token
        return str(blob.generate_signed_url(**kwargs))


class EmulatorUrls:
    """fake-gcs-server's media URL (no signature: the emulator does not check one)."""

    def __init__(self, emulator_host: str) -> None:
        self._host = emulator_host.rstrip("/")

    def sign(self, bucket: str, name: str, ttl: timedelta) -> str:
        return (
            f"{self._host}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
        )
