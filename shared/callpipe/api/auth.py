"""Bearer JWTs for the tenant API: verification, and minting for local use.

A token names exactly one tenant (``tenant_id``) or carries ``role=operator``. Only the
algorithms in the allow-list are accepted (HS256 by default), so ``alg=none`` and
algorithm-confusion tokens are refused before any key is used. Tenant tokens are signed
with the key under :data:`SIGNING_KEY_SECRET`, operator tokens with the one under
:data:`OPERATOR_KEY_SECRET`: whoever may mint tenant tokens (a customer portal's backend)
cannot mint an operator's. The keys live in the secret store, never in code or in Spanner.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from callpipe.ids import InvalidIdentifier, check_tenant_id
from callpipe.secrets import SecretNotFound, SecretStore

SIGNING_KEY_SECRET = "api-jwt-signing-key"  # noqa: S105 - a secret's name, not its value
OPERATOR_KEY_SECRET = "api-operator-signing-key"  # noqa: S105 - a secret's name
ISSUER = "callpipe"
AUDIENCE = "callpipe-api"
OPERATOR_ROLE = "operator"
DEFAULT_ALGORITHMS: tuple[str, ...] = ("HS256",)
# Tokens are bearer credentials: a short default lifetime limits what a leaked one can do.
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 7 * 86_400


class AuthError(Exception):
    """A request the API refuses with 401; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Principal:
    """Who is calling: one tenant, or an operator who may read every tenant."""

    subject: str
    tenant_id: str | None
    operator: bool

    def may_read(self, tenant_id: str) -> bool:
        return self.operator or self.tenant_id == tenant_id


class TokenVerifier:
    """Checks signature, algorithm, expiry, issuer and audience of a bearer token."""

    def __init__(
        self,
        key: Callable[[], str],
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway_seconds: float = 30.0,
        refresh_key: Callable[[str], bool] | None = None,
        operator_key: Callable[[], str] | None = None,
        refresh_operator_key: Callable[[str], bool] | None = None,
    ) -> None:
        if not algorithms or any(a.lower() == "none" for a in algorithms):
            raise ValueError("the algorithm allow-list must be non-empty and exclude 'none'")
        # The key is fetched lazily (and cached by the caller) so a cold start that never
        # sees an authenticated request does not need the secret store.
        self._key = key
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        # Re-reads the key and says whether it changed: a token signed with a key rotated
        # since the last read verifies at once instead of after the cache's TTL.
        self._refresh_key = refresh_key
        # Operator tokens verify with their own key; without one (a single-key set-up, as
        # in unit tests), with the tenants' key.
        self._operator_key = operator_key or key
        self._refresh_operator_key = refresh_operator_key if operator_key else refresh_key

    def verify_header(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("missing_token", "send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("missing_token", "the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        # Checked before decoding so the answer names the real problem (e.g. alg=none).
        if algorithm not in self._algorithms:
            raise AuthError(
                "wrong_algorithm",
                f"token algorithm {algorithm!r} is not allowed (allowed: {', '.join(self._algorithms)})",
            )
        try:
            # the claim picks the key; a token that lies about it fails that key's check
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is not a well-formed JWT") from None
        operator = isinstance(unverified, dict) and unverified.get("role") == OPERATOR_ROLE
        current = self._operator_key if operator else self._key
        refresh = self._refresh_operator_key if operator else self._refresh_key
        try:
            key = current()
            try:
                claims = self._decode(token, key)
            except jwt.InvalidSignatureError:
                if refresh is None or not refresh(key):
                    raise
                claims = self._decode(token, current())
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired; issue a new one") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                "wrong_audience", f"the token's audience is not {self._audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", f"the token's issuer is not {self._issuer!r}") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError("invalid_token", f"the token lacks the {error.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid_signature", "the token's signature does not verify") from None
        except jwt.PyJWTError as error:
            raise AuthError(
                "invalid_token", f"the token is invalid: {error.__class__.__name__}"
            ) from None
        try:
            # PyJWT accepts numeric strings for both
            lifetime = int(claims["exp"]) - int(claims["iat"])
        except (TypeError, ValueError):
            raise AuthError("invalid_token", "the token's iat or exp is not a number") from None
        if lifetime > MAX_TTL_SECONDS + self._leeway:
            # issue_token refuses longer ones: a token that says otherwise was not made by it
            raise AuthError(
                "invalid_token", f"the token's lifetime exceeds {MAX_TTL_SECONDS} seconds"
            )
        return principal_from_claims(claims)

    def _decode(self, token: str, key: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=self._algorithms,
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        return claims


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    subject = str(claims.get("sub") or "")
    if claims.get("role") == OPERATOR_ROLE:
        return Principal(subject=subject, tenant_id=None, operator=True)
    tenant = claims.get("tenant_id")
    if not isinstance(tenant, str):
        raise AuthError("invalid_token", "the token names no tenant and is not an operator's")
    try:
        return Principal(subject=subject, tenant_id=check_tenant_id(tenant), operator=False)
    except InvalidIdentifier:
        raise AuthError("invalid_token", "the token's tenant_id is not a valid tenant id") from None


def issue_token(
    key: str,
    *,
    tenant_id: str | None,
    operator: bool = False,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    subject: str | None = None,
    now: datetime | None = None,
    algorithm: str = "HS256",
) -> str:
    if not operator and tenant_id is None:
        raise ValueError("a tenant token needs a tenant id")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject
        or (f"operator:{secrets.token_hex(4)}" if operator else f"tenant:{tenant_id}"),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_seconds),
    }
    if operator:
        claims["role"] = OPERATOR_ROLE
    if tenant_id is not None:
        claims["tenant_id"] = check_tenant_id(tenant_id)
    return jwt.encode(claims, key, algorithm=algorithm)


def load_signing_key(
    store: SecretStore, *, create_if_missing: bool = False, secret: str = SIGNING_KEY_SECRET
) -> str:
    """An HMAC key (the tenants' by default, or :data:`OPERATOR_KEY_SECRET`); created (64
    random bytes) only when asked, i.e. for local runs."""
    try:
        return store.get(secret).strip()
    except SecretNotFound:
        if not create_if_missing:
            raise
    key = secrets.token_urlsafe(64)
    store.put(secret, key)
    return key
