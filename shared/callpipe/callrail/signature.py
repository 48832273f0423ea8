"""CallRail webhook signatures.

CallRail signs the raw request body, and nothing else, with HMAC-SHA1 keyed by the
company's webhook signing token, and sends the base64 digest in the ``Signature`` header.
Verification runs on the raw bytes before any JSON is trusted, compares in constant time,
and accepts any of the company's active tokens so that tokens can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SigningToken:
    token_id: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"SigningToken(token_id={self.token_id!r})"


def compute_signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(
    body: bytes, signature: str | None, tokens: Sequence[SigningToken]
) -> SigningToken | None:
    """Return the token that produced ``signature`` over ``body``, or None.

    Every token is checked (no early exit), so the time taken does not tell which one
    of several active tokens matched.
    """
    if not signature or not tokens:
        return None
    presented = signature.strip().encode("ascii", errors="replace")
    matched: SigningToken | None = None
    for token in tokens:
        expected = compute_signature(token.secret, body).encode("ascii")
        if hmac.compare_digest(expected, presented) and matched is None:
            matched = token
    return matched
