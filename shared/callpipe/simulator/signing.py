"""Short-lived signed recording URLs, shaped like a CDN's presigned links.

``/recordings/<CALL_ID>.<ext>?Expires=<epoch>&Signature=<base64url HMAC-SHA256>``. The
secret is per server process, so a URL only works against the simulator that issued it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import urlencode


class RecordingSigner:
    def __init__(self, secret: bytes, ttl_seconds: int, clock: Callable[[], float]) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def url(self, base_url: str, file_name: str) -> str:
        expires = int(self._clock()) + self._ttl
        query = urlencode({"Expires": expires, "Signature": self._sign(file_name, expires)})
        return f"{base_url.rstrip('/')}/recordings/{file_name}?{query}"

    def check(self, file_name: str, expires: str | None, signature: str | None) -> str | None:
        """None when the link is valid, else why it is refused."""
        if not expires or not signature:
            return "Missing Expires or Signature"
        try:
            expires_at = int(expires)
        except ValueError:
            return "Malformed Expires"
        if not hmac.compare_digest(self._sign(file_name, expires_at), signature):
            return "Signature does not match"
        if self._clock() > expires_at:
            return "Request has expired"
        return None

    def _sign(self, file_name: str, expires: int) -> str:
        message = f"/recordings/{file_name}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
