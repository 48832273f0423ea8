"""Tenants, offices and the CallRail company → tenant/office mapping, stored in Spanner.

:class:`TenantRepository` owns the rows; :class:`CompanyDirectory` is what intake uses on
every webhook: it resolves a company to its tenant, office and signing tokens through a
short TTL cache, so Spanner and the secret store are not read per request.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from callpipe.apikeys import api_key_from_input
from callpipe.cache import TTLCache
from callpipe.callrail.signature import SigningToken
from callpipe.errors import headline
from callpipe.ids import check_numeric_id, check_resource_id, check_tenant_id
from callpipe.intake.ratelimit import TokenBucket
from callpipe.logs import log_event
from callpipe.secrets import (
    SecretNotFound,
    SecretStore,
    SecretStoreUnavailable,
    api_key_secret_name,
    signing_token_secret_name,
)

logger = logging.getLogger(__name__)


class TenantExists(ValueError):
    pass


class TenantNotFound(LookupError):
    pass


class CompanyAlreadyMapped(ValueError):
    pass


class RowsNotWritten(RuntimeError):
    """Spanner did not take the rows after their secrets were stored.

    ``refused``: Spanner rejected the commit, so nothing was written and the secrets are
    unused. Otherwise (a timeout, an outage) the commit may still have happened.
    """

    def __init__(self, message: str, secret_names: Sequence[str], *, refused: bool) -> None:
        super().__init__(message)
        self.secret_names = tuple(secret_names)
        self.refused = refused


def _rows_not_written(error: Exception, secret_names: Sequence[str]) -> RowsNotWritten:
    from google.api_core import exceptions

    detail = f"{error.__class__.__name__}: {headline(error)}"
    if isinstance(error, exceptions.AlreadyExists):
        return RowsNotWritten(
            f"another change wrote the same tenant, company or legacy id meanwhile ({detail})",
            secret_names,
            refused=True,
        )
    refused = isinstance(
        error,
        exceptions.FailedPrecondition | exceptions.InvalidArgument | exceptions.NotFound,
    )
    verb = "refused" if refused else "did not confirm"
    return RowsNotWritten(f"Spanner {verb} the rows ({detail})", secret_names, refused=refused)


class InvalidSigningToken(ValueError):
    pass


# CallRail's signing tokens are long random strings; a shorter one is a paste gone wrong.
MIN_SIGNING_TOKEN_LENGTH = 8


def signing_token_from_input(value: str) -> str:
    """A webhook signing token as an operator gave it, ready to store: surrounding
    whitespace (a pasted newline) is no part of it, and CallRail would sign with the token
    alone, so a stored space would make every webhook fail its signature."""
    token = value.strip()
    if len(token) < MIN_SIGNING_TOKEN_LENGTH:
        raise InvalidSigningToken(
            f"a signing token must have at least {MIN_SIGNING_TOKEN_LENGTH} characters"
        )
    return token


class DirectoryUnavailable(RuntimeError):
    """The mapping could not be read (Spanner or the secret store did not answer)."""


@dataclass(frozen=True)
class TokenRef:
    token_id: str
    secret_name: str
    active: bool = True
    created_at: datetime | None = None


@dataclass(frozen=True)
class CompanyMapping:
    company_id: str
    legacy_company_id: str | None
    tenant_id: str
    office_id: str
    callrail_account_id: str
    tokens: tuple[TokenRef, ...] = ()


@dataclass(frozen=True)
class Office:
    office_id: str
    name: str
    time_zone: str | None


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: str
    name: str
    status: str
    callrail_account_id: str | None
    api_key_secret: str | None
    created_at: datetime | None
    offices: tuple[Office, ...] = ()
    companies: tuple[CompanyMapping, ...] = ()


@dataclass(frozen=True)
class OnboardingRequest:
    tenant_id: str
    name: str
    callrail_account_id: str
    callrail_company_id: str
    legacy_company_id: str | None = None
    office_id: str = "main"
    office_name: str | None = None
    time_zone: str | None = None
    signing_tokens: Sequence[str] = field(default_factory=tuple)
    api_key: str | None = None

    def __repr__(self) -> str:  # secrets stay out of reprs and tracebacks
        return (
            f"OnboardingRequest(tenant_id={self.tenant_id!r}, company={self.callrail_company_id!r})"
        )


class RevokeOutcome(StrEnum):
    REVOKED = "revoked"
    NOT_FOUND = "not_found"
    ALREADY_REVOKED = "already_revoked"
    LAST_ACTIVE = "last_active"  # refused: the company's only active token


@dataclass(frozen=True)
class Revocation:
    outcome: RevokeOutcome
    revoked_at: datetime | None = None  # when an already revoked token was revoked
    active_left: int = 0  # the company's active tokens after the call


def new_token_id() -> str:
    return "tok" + pysecrets.token_hex(4)


class TenantRepository:
    def __init__(self, database: Any) -> None:
        self._db = database

    @property
    def database(self) -> Any:
        return self._db

    # -- writes ---------------------------------------------------------------------------

    def onboard(self, request: OnboardingRequest, secrets: SecretStore) -> list[str]:
        """Create a tenant with its first office and company; return the new token ids.

        Secrets are written first (an orphan secret is harmless; a row that points at a
        missing secret would reject every webhook), then all rows in one commit.
        """
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud import spanner

        # Everything the database would refuse is checked before a secret is written, so a
        # refusal leaves nothing behind.
        check_tenant_id(request.tenant_id)
        check_resource_id(request.office_id)
        check_resource_id(request.callrail_company_id)
        check_numeric_id(request.callrail_account_id, "CallRail account id")
        # an empty legacy id is no legacy id: NULL, which the unique index leaves out
        legacy_id = (request.legacy_company_id or "").strip() or None
        if legacy_id is not None:
            check_numeric_id(legacy_id, "legacy company id")
        signing_tokens = [signing_token_from_input(token) for token in request.signing_tokens]
        api_key = None if request.api_key is None else api_key_from_input(request.api_key)
        if self.get_tenant(request.tenant_id) is not None:
            raise TenantExists(f"tenant {request.tenant_id} already exists")
        self._check_company_ids_free(request.callrail_company_id, legacy_id)
        written: list[str] = []
        api_secret = None
        if api_key is not None:
            api_secret = api_key_secret_name(request.tenant_id)
            secrets.put(api_secret, api_key)
            # not listed as left over: named after the tenant, it may be the secret of a
            # concurrent onboarding of the same tenant that won (and this put replaced)
        token_rows = []
        token_ids = []
        for token in signing_tokens:
            token_id = new_token_id()
            name = signing_token_secret_name(request.callrail_company_id, token_id)
            secrets.put(name, token)
            written.append(name)
            token_rows.append(
                (request.callrail_company_id, token_id, name, True, spanner.COMMIT_TIMESTAMP)
            )
            token_ids.append(token_id)
        try:
            self._insert_onboarding(request, legacy_id, api_secret, token_rows)
        except GoogleAPICallError as error:
            raise _rows_not_written(error, written) from error
        return token_ids

    def _check_company_ids_free(self, company_id: str, legacy_id: str | None) -> None:
        """Refuse ids any company row already has, active or not (the primary key and the
        unique legacy-id index cover them all); find_company sees only active ones."""
        from google.cloud.spanner_v1 import param_types

        keys = [company_id] if legacy_id is None else [company_id, legacy_id]
        with self._db.snapshot() as snapshot:
            rows = list(
                snapshot.execute_sql(
                    "SELECT CompanyId, LegacyCompanyId, TenantId FROM CallRailCompanies "
                    "WHERE CompanyId IN UNNEST(@keys) OR LegacyCompanyId IN UNNEST(@keys)",
                    params={"keys": keys},
                    param_types={"keys": param_types.Array(param_types.STRING)},
                )
            )
        for other, _, tenant in rows:
            if other == company_id:
                raise CompanyAlreadyMapped(
                    f"CallRail company {company_id} already belongs to tenant {tenant}"
                )
        if rows:
            other, other_legacy, tenant = rows[0]
            if legacy_id is not None and other_legacy == legacy_id:
                raise CompanyAlreadyMapped(
                    f"legacy company id {legacy_id} is already used by company {other} "
                    f"of tenant {tenant}"
                )
            # webhooks are looked up by either id: one id must not name two companies
            raise CompanyAlreadyMapped(
                f"company {other} of tenant {tenant} already goes by the id "
                f"{other if other in keys else other_legacy}"
            )

    def _insert_onboarding(
        self,
        request: OnboardingRequest,
        legacy_id: str | None,
        api_secret: str | None,
        token_rows: Sequence[tuple[Any, ...]],
    ) -> None:
        from google.cloud import spanner

        ts = spanner.COMMIT_TIMESTAMP
        with self._db.batch() as batch:
            batch.insert(
                "Tenants",
                [
                    "TenantId",
                    "Name",
                    "Status",
                    "CallRailAccountId",
                    "CallRailApiKeySecret",
                    "CreatedAt",
                    "UpdatedAt",
                ],
                [
                    (
                        request.tenant_id,
                        request.name,
                        "active",
                        request.callrail_account_id,
                        api_secret,
                        ts,
                        ts,
                    )
                ],
            )
            batch.insert(
                "Offices",
                ["TenantId", "OfficeId", "Name", "TimeZone", "CreatedAt", "UpdatedAt"],
                [
                    (
                        request.tenant_id,
                        request.office_id,
                        request.office_name or request.name,
                        request.time_zone,
                        ts,
                        ts,
                    )
                ],
            )
            batch.insert(
                "CallRailCompanies",
                [
                    "CompanyId",
                    "LegacyCompanyId",
                    "TenantId",
                    "OfficeId",
                    "CallRailAccountId",
                    "Active",
                    "CreatedAt",
                    "UpdatedAt",
                ],
                [
                    (
                        request.callrail_company_id,
                        legacy_id,
                        request.tenant_id,
                        request.office_id,
                        request.callrail_account_id,
                        True,
                        ts,
                        ts,
                    )
                ],
            )
            if token_rows:
                batch.insert(
                    "CompanySigningTokens",
                    ["CompanyId", "TokenId", "SecretName", "Active", "CreatedAt"],
                    token_rows,
                )

    def add_signing_token(self, company_id: str, token: str, secrets: SecretStore) -> str:
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud import spanner

        token = signing_token_from_input(token)
        mapping = self.find_company(company_id)
        if mapping is None:
            raise TenantNotFound(f"CallRail company {company_id} is not mapped to any tenant")
        # The key may be the legacy numeric id; rows and secret names use the resource id.
        company_id = mapping.company_id
        token_id = new_token_id()
        name = signing_token_secret_name(company_id, token_id)
        secrets.put(name, token)
        try:
            with self._db.batch() as batch:
                batch.insert(
                    "CompanySigningTokens",
                    ["CompanyId", "TokenId", "SecretName", "Active", "CreatedAt"],
                    [(company_id, token_id, name, True, spanner.COMMIT_TIMESTAMP)],
                )
        except GoogleAPICallError as error:
            raise _rows_not_written(error, [name]) from error
        return token_id

    def set_api_key(self, tenant_id: str, api_key: str, secrets: SecretStore) -> str:
        """Store (or rotate) the tenant's CallRail API key; return the secret's name."""
        from google.cloud import spanner

        api_key = api_key_from_input(api_key)
        if self.get_tenant(tenant_id) is None:
            raise TenantNotFound(f"tenant {tenant_id} does not exist")
        name = api_key_secret_name(tenant_id)
        secrets.put(name, api_key)
        with self._db.batch() as batch:
            batch.update(
                "Tenants",
                ["TenantId", "CallRailApiKeySecret", "UpdatedAt"],
                [(tenant_id, name, spanner.COMMIT_TIMESTAMP)],
            )
        return name

    def revoke_signing_token(
        self, company_id: str, token_id: str, *, force: bool = False
    ) -> Revocation:
        """Deactivate one signing token of a company.

        The company's last active token is kept unless ``force``: without it every webhook
        of the company fails verification. A token already revoked keeps its RevokedAt.
        """
        from google.cloud import spanner

        # The key may be the legacy numeric id, as add-token accepts; rows use the resource id.
        mapping = self.find_company(company_id)
        if mapping is not None:
            company_id = mapping.company_id

        def work(txn: Any) -> Revocation:
            # the whole company, in the same transaction: a concurrent revocation of the
            # other active token cannot leave the company with none
            rows = list(
                txn.read(
                    "CompanySigningTokens",
                    ["TokenId", "Active", "RevokedAt"],
                    spanner.KeySet(
                        ranges=[
                            spanner.KeyRange(start_closed=[company_id], end_closed=[company_id])
                        ]
                    ),
                )
            )
            tokens = {row[0]: (bool(row[1]), row[2]) for row in rows}
            if token_id not in tokens:
                return Revocation(RevokeOutcome.NOT_FOUND)
            active, revoked_at = tokens[token_id]
            if not active:
                return Revocation(RevokeOutcome.ALREADY_REVOKED, revoked_at)
            others = sum(1 for other, (on, _) in tokens.items() if on and other != token_id)
            if others == 0 and not force:
                return Revocation(RevokeOutcome.LAST_ACTIVE, active_left=1)
            txn.update(
                "CompanySigningTokens",
                ["CompanyId", "TokenId", "Active", "RevokedAt"],
                [(company_id, token_id, False, spanner.COMMIT_TIMESTAMP)],
            )
            return Revocation(RevokeOutcome.REVOKED, active_left=others)

        result: Revocation = self._db.run_in_transaction(work)
        return result

    # -- reads ----------------------------------------------------------------------------

    def find_company(self, key: str) -> CompanyMapping | None:
        """The company whose resource id or legacy numeric id is ``key`` (active only)."""
        from google.cloud.spanner_v1 import param_types

        sql = """
            SELECT c.CompanyId, c.LegacyCompanyId, c.TenantId, c.OfficeId, c.CallRailAccountId,
                   ARRAY(SELECT AS STRUCT t.TokenId, t.SecretName, t.Active, t.CreatedAt
                         FROM CompanySigningTokens t
                         WHERE t.CompanyId = c.CompanyId ORDER BY t.CreatedAt DESC) AS Tokens
            FROM CallRailCompanies c JOIN Tenants tn ON tn.TenantId = c.TenantId
            WHERE (c.CompanyId = @key OR c.LegacyCompanyId = @key)
              AND c.Active AND tn.Status = 'active'
            LIMIT 1
        """
        with self._db.snapshot() as snapshot:
            rows = list(
                snapshot.execute_sql(
                    sql,
                    params={"key": key},
                    param_types={"key": param_types.STRING},
                    timeout=LOOKUP_TIMEOUT_SECONDS,
                )
            )
        if not rows:
            return None
        return _company_from_row(rows[0])

    def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        records = self._read_tenants(tenant_id)
        return records[0] if records else None

    def list_tenants(self) -> list[TenantRecord]:
        return self._read_tenants(None)

    def _read_tenants(self, tenant_id: str | None) -> list[TenantRecord]:
        from google.cloud.spanner_v1 import param_types

        where = "WHERE tn.TenantId = @tenant" if tenant_id else ""
        sql = f"""
            SELECT tn.TenantId, tn.Name, tn.Status, tn.CallRailAccountId, tn.CallRailApiKeySecret,
                   tn.CreatedAt,
                   ARRAY(SELECT AS STRUCT o.OfficeId, o.Name, o.TimeZone FROM Offices o
                         WHERE o.TenantId = tn.TenantId ORDER BY o.OfficeId) AS Offices,
                   ARRAY(SELECT AS STRUCT c.CompanyId, c.LegacyCompanyId, c.OfficeId,
                                c.CallRailAccountId
                         FROM CallRailCompanies c
                         WHERE c.TenantId = tn.TenantId ORDER BY c.CompanyId) AS Companies
            FROM Tenants tn {where}
            ORDER BY tn.TenantId
        """  # noqa: S608 - the only interpolation is a fixed clause
        params = {"tenant": tenant_id} if tenant_id else {}
        types = {"tenant": param_types.STRING} if tenant_id else {}
        with self._db.snapshot(multi_use=True) as snapshot:
            rows = list(snapshot.execute_sql(sql, params=params, param_types=types))
            tokens_by_company: dict[str, list[TokenRef]] = {}
            token_rows = snapshot.execute_sql(
                "SELECT CompanyId, TokenId, SecretName, Active, CreatedAt FROM CompanySigningTokens"
            )
            for company_id, token_id, secret_name, active, created_at in token_rows:
                tokens_by_company.setdefault(company_id, []).append(
                    TokenRef(token_id, secret_name, bool(active), created_at)
                )
        records = []
        for tid, name, status, account, api_secret, created_at, offices, companies in rows:
            records.append(
                TenantRecord(
                    tenant_id=tid,
                    name=name,
                    status=status,
                    callrail_account_id=account,
                    api_key_secret=api_secret,
                    created_at=created_at,
                    offices=tuple(Office(o[0], o[1], o[2]) for o in offices),
                    companies=tuple(
                        CompanyMapping(
                            company_id=c[0],
                            legacy_company_id=c[1],
                            tenant_id=tid,
                            office_id=c[2],
                            callrail_account_id=c[3],
                            tokens=tuple(tokens_by_company.get(c[0], [])),
                        )
                        for c in companies
                    ),
                )
            )
        return records


def _company_from_row(row: Sequence[Any]) -> CompanyMapping:
    company_id, legacy, tenant_id, office_id, account_id, tokens = row
    return CompanyMapping(
        company_id=company_id,
        legacy_company_id=legacy,
        tenant_id=tenant_id,
        office_id=office_id,
        callrail_account_id=account_id,
        tokens=tuple(TokenRef(t[0], t[1], bool(t[2]), t[3]) for t in tokens),
    )


@dataclass(frozen=True)
class ResolvedCompany:
    mapping: CompanyMapping
    tokens: tuple[SigningToken, ...]


# A webhook waits on this lookup, and CallRail gives up on a slow answer and never sends it
# again; past this, intake answers 503 and keeps the webhook in quarantine for a replay.
LOOKUP_TIMEOUT_SECONDS = 5.0
# While the directory is down, a company answered from its last known mapping is asked for
# again after this long; the requests in between do not wait on the failing backend.
STALE_RETRY_SECONDS = 5.0
# How long a request waits for another request's load of the same company: what it would
# have waited for a load of its own.
_FLIGHT_WAIT_SECONDS = LOOKUP_TIMEOUT_SECONDS
# How long an event loop answers an expired company from its last known mapping while a
# background reload runs; a reload that takes longer is a slow or failing directory, and
# requests then load the company themselves (and get the outage's answer).
RELOAD_GRACE_SECONDS = LOOKUP_TIMEOUT_SECONDS
# A signature that none of a company's tokens match may be made with a token added since the
# company was loaded (`callpipe tenants add-token`): the company is loaded again, if its
# mapping is older than this, and at most once this often per company, so that forged
# signatures cannot turn into a stream of Spanner and Secret Manager reads.
SIGNATURE_RELOAD_SECONDS = 5.0
# Across all companies, so that forged signatures for many companies cannot either.
SIGNATURE_RELOADS_PER_MINUTE = 60
# Requests that wait for a company's reload hold a worker thread each (up to 5 s); beyond
# these, a request whose signature matched no token is answered (401) at once.
SIGNATURE_RELOAD_WAITERS = 4


class NotCached(LookupError):
    """The directory would have to load this company (asked with ``cached_only``)."""


class _Flight:
    """One load of one company, which the requests that need it meanwhile wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ResolvedCompany | None = None
        # cleared once the load succeeds: a load that fails in any way fails its waiters too
        self.error: DirectoryUnavailable | None = DirectoryUnavailable(
            "company directory unavailable: the lookup did not finish"
        )
        self.waiters = 0  # requests waiting on it (what a test watches for)


class _TokensUnavailable(DirectoryUnavailable):
    """Spanner answered, but a token's secret could not be read: carries the fresh mapping."""

    def __init__(self, message: str, mapping: CompanyMapping) -> None:
        super().__init__(message)
        self.mapping = mapping


def _daemon_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="company-reload", daemon=True).start()


class CompanyDirectory:
    """Company → tenant, office and active signing tokens, cached with a short TTL.

    Unknown companies are cached too (for a shorter time) so that a flood of webhooks for
    an unknown company does not turn into a flood of Spanner queries. Requests that miss
    the cache for the same company at the same time share one load, so a hot company's
    expiry costs one Spanner query and one secret read, not one per waiting request.

    With ``stale_seconds``, a company loaded before stays usable that much longer than its
    TTL while Spanner or the secret store fail: its webhooks are queued as usual instead of
    being refused with 503 and quarantined. When only the secret store fails, the mapping
    Spanner just returned is used, with those of the known tokens it still lists as active.
    The price is that a token deactivated (or a company removed) while Spanner is down is
    honoured until the outage ends or the window closes. Requests that find the company
    being loaded meanwhile are answered from its last known mapping rather than wait.

    An event loop asks with ``cached_only``: it must not wait on Spanner. For a company
    whose entry expired less than a TTL ago, it gets the last known mapping at once and the
    company is reloaded in a background thread (one reload per company at a time), so a
    busy company's expiry never holds a webhook up or sends it through a worker thread.
    Once the reload has taken ``RELOAD_GRACE_SECONDS``, or failed with no outage window to
    fall back on, requests load the company themselves, and so get the outage's answer.

    A signature that none of a cached company's tokens match reloads the company
    (``reload_for_signature``), so a token added with ``callpipe tenants add-token`` is
    honoured within seconds rather than after the TTL; forged signatures cost at most one
    reload per company every ``SIGNATURE_RELOAD_SECONDS``.
    """

    def __init__(
        self,
        lookup: Callable[[str], CompanyMapping | None],
        secrets: SecretStore,
        ttl_seconds: float,
        negative_ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = 0.0,
        background: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """``background`` runs a reload off the caller's thread (default: a daemon thread
        per reload, which never holds the process up at exit)."""
        self._lookup = lookup
        self._secrets = secrets
        self._clock = clock
        self._ttl = ttl_seconds
        self._stale = stale_seconds
        self._cache: TTLCache[str, ResolvedCompany] = TTLCache(ttl_seconds, clock=clock)
        # Ids that are no company, apart: forged requests with random ids, however many,
        # then only push out each other, never the companies webhooks come from.
        self._unknown: TTLCache[str, bool] = TTLCache(negative_ttl_seconds, clock=clock)
        # the last successful load of each company and when it happened: for requests that
        # come while it reloads, and for an outage
        self._known: TTLCache[str, tuple[float, ResolvedCompany]] = TTLCache(
            ttl_seconds + max(stale_seconds, ttl_seconds), clock=clock
        )
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._background = background or _daemon_thread
        # background reloads under way, and when each was asked for; guarded by _flights_lock
        self._reloading: dict[str, float] = {}
        # reloads for a signature: those under way (what concurrent requests wait for), and
        # the companies reloaded lately (no other reload until the entry expires)
        self._signature_reloads: dict[str, threading.Event] = {}
        self._signature_reloaded: TTLCache[str, bool] = TTLCache(
            SIGNATURE_RELOAD_SECONDS, clock=clock
        )
        self._signature_waiters = 0
        self._signature_budget = TokenBucket(SIGNATURE_RELOADS_PER_MINUTE, clock=clock)

    def resolve(self, keys: Sequence[str], cached_only: bool = False) -> ResolvedCompany | None:
        """The first key's company, from the cache or loaded (and cached).

        With ``cached_only``, a key that would need loading raises ``NotCached`` instead
        (an event loop must not wait on Spanner or Secret Manager, so it asks a thread),
        unless the company expired less than a TTL ago: then its last known mapping is the
        answer while it reloads in the background, for at most ``RELOAD_GRACE_SECONDS``.
        """
        for key in keys:
            hit, value = self._cached(key)
            if hit:
                if value is not None:
                    return value
                continue
            if cached_only:
                known = self._last_known(key, self._ttl)
                if known is None or not self._reload_in_background(key):
                    raise NotCached(key)
                return known
            resolved = self._load_once(key)
            if resolved is not None:
                return resolved
        return None

    def reload_for_signature(
        self, keys: Sequence[str], seen: ResolvedCompany, cached_only: bool = False
    ) -> ResolvedCompany | None:
        """The company ``resolve(keys)`` answered with ``seen``, loaded again because a
        signature matched none of its tokens: perhaps a token was added since it was loaded.

        None when there is nothing newer to try: the mapping is younger than
        ``SIGNATURE_RELOAD_SECONDS``, the company was reloaded for a signature less than that
        ago (so forged signatures cost at most one reload per company in that time), or the
        reload failed. Requests that come while a reload runs wait for it (at most 5 s). With
        ``cached_only``, raises ``NotCached`` instead of loading or waiting.
        """
        key = self._key_of(keys, seen)
        if key is None:
            return None
        hit, known = self._known.get(key)
        if not hit or known is None:
            return None
        loaded_at, current = known
        if current is not seen:
            return current  # loaded again since the caller looked: that one may do
        with self._flights_lock:
            running = self._signature_reloads.get(key)
            if running is None:
                recent, _ = self._signature_reloaded.get(key)
                if recent or self._clock() - loaded_at < SIGNATURE_RELOAD_SECONDS:
                    return None
            elif self._signature_waiters >= SIGNATURE_RELOAD_WAITERS:
                return None
            if cached_only:
                raise NotCached(key)
            leading = running is None
            if running is None:
                if not self._signature_budget.take():
                    return None
                running = self._signature_reloads[key] = threading.Event()
            else:
                self._signature_waiters += 1
        if not leading:
            try:
                running.wait(_FLIGHT_WAIT_SECONDS)
            finally:
                with self._flights_lock:
                    self._signature_waiters -= 1
            hit, known = self._known.get(key)
            return known[1] if hit and known is not None and known[1] is not seen else None
        try:
            resolved = self._load_once(key, force=True)
        except DirectoryUnavailable as error:
            log_event(
                logger,
                logging.WARNING,
                "company directory unavailable: could not reload a company for a signature",
                tenant_id=seen.mapping.tenant_id,
                company_id=seen.mapping.company_id,
                error=str(error),
            )
            return None
        finally:
            with self._flights_lock:
                del self._signature_reloads[key]
                # the quiet time runs from the end of a reload: a slow one is not followed
                # straight away by the next
                self._signature_reloaded.put(key, True)
            running.set()
        return resolved if resolved is not seen else None

    def _key_of(self, keys: Sequence[str], seen: ResolvedCompany) -> str | None:
        """Which of ``keys`` answered ``seen``: its last load, or else one of the same
        company (loaded again since)."""
        same_company = None
        for key in keys:
            hit, known = self._known.get(key)
            if not hit or known is None:
                continue
            if known[1] is seen:
                return key
            if same_company is None and known[1].mapping.company_id == seen.mapping.company_id:
                same_company = key
        return same_company

    def invalidate(self) -> None:
        self._cache.invalidate()
        self._unknown.invalidate()
        self._known.invalidate()

    def _cached(self, key: str) -> tuple[bool, ResolvedCompany | None]:
        """``(hit, company)``: a hit with None is an id known to be no company."""
        hit, value = self._cache.get(key)
        if hit:
            return hit, value
        unknown, _ = self._unknown.get(key)
        return unknown, None

    def _last_known(self, key: str, past_ttl: float) -> ResolvedCompany | None:
        """The company's last loaded mapping, if loaded at most ``past_ttl`` beyond its TTL."""
        hit, known = self._known.get(key)
        if not hit or known is None:
            return None
        loaded_at, resolved = known
        return resolved if self._clock() - loaded_at <= self._ttl + past_ttl else None

    def _reload_in_background(self, key: str) -> bool:
        """Start a reload of ``key`` unless one runs; False if it has run too long."""
        now = self._clock()
        with self._flights_lock:
            asked = self._reloading.get(key)
            if asked is not None:
                return now - asked <= RELOAD_GRACE_SECONDS
            self._reloading[key] = now
        started = False
        try:
            self._background(lambda: self._reload(key))
            started = True
        except Exception:  # e.g. no thread can start: the caller loads it itself
            logger.exception("could not start reloading a company")
        finally:
            if not started:
                with self._flights_lock:
                    self._reloading.pop(key, None)
        return started

    def _reload(self, key: str) -> None:
        try:
            self._load_once(key)
        except DirectoryUnavailable as error:
            log_event(
                logger,
                logging.WARNING,
                "company directory unavailable: could not reload a company",
                company_id=key,
                error=str(error),
            )
        except Exception:  # a background thread has nobody to raise to
            self._known.invalidate(key)
            logger.exception("reloading a company failed")
        finally:
            with self._flights_lock:
                self._reloading.pop(key, None)

    def _load_once(self, key: str, force: bool = False) -> ResolvedCompany | None:
        """Load and cache ``key``, or wait for the load another request started.

        With ``force``, a load is what the caller wants even though the company is cached:
        neither the cache nor its last known mapping is answered instead.
        """
        with self._flights_lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leading:
            known = None if force else self._last_known(key, self._stale)
            if known is not None:
                return known  # the load under way refreshes it
            if not flight.done.wait(_FLIGHT_WAIT_SECONDS):
                raise DirectoryUnavailable(
                    "company directory unavailable: an earlier lookup of this company "
                    "is still running"
                )
            if flight.error is not None:
                raise DirectoryUnavailable(str(flight.error)) from flight.error
            return flight.result
        try:
            # a load that ended between this request's miss and its flight filled the cache
            hit, value = (False, None) if force else self._cached(key)
            flight.result = value if hit else self._load_and_cache(key)
            flight.error = None
        except DirectoryUnavailable as error:
            flight.error = error
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()
        return flight.result

    def _load_and_cache(self, key: str) -> ResolvedCompany | None:
        try:
            resolved = self._load(key)
        except DirectoryUnavailable as error:
            hit, known = self._known.get(key)
            if not hit or known is None or self._clock() - known[0] > self._ttl + self._stale:
                # no fallback: nor is it one for an event loop while the company reloads
                self._known.invalidate(key)
                raise
            loaded_at, resolved = known
            if isinstance(error, _TokensUnavailable):
                # Spanner answered: its mapping is current, and a token it no longer lists
                # as active is dropped even though the new ones cannot be read
                active = {ref.token_id for ref in error.mapping.tokens if ref.active}
                resolved = ResolvedCompany(
                    error.mapping, tuple(t for t in resolved.tokens if t.token_id in active)
                )
                self._known.put(key, (loaded_at, resolved))  # the dropped tokens stay dropped
            log_event(
                logger,
                logging.WARNING,
                "company directory unavailable: using the company's last known mapping",
                tenant_id=resolved.mapping.tenant_id,
                company_id=resolved.mapping.company_id,
                loaded_seconds_ago=round(self._clock() - loaded_at),
                error=str(error),
            )
            self._cache.put(key, resolved, STALE_RETRY_SECONDS)
            return resolved
        if resolved is None:
            self._cache.invalidate(key)
            self._unknown.put(key, True)
            self._known.invalidate(key)  # removed: no longer a company to fall back on
        else:
            self._unknown.invalidate(key)
            self._cache.put(key, resolved)
            self._known.put(key, (self._clock(), resolved))
        return resolved

    def _load(self, key: str) -> ResolvedCompany | None:
        try:
            mapping = self._lookup(key)
        except Exception as error:
            raise DirectoryUnavailable(
                f"company directory unavailable: {error.__class__.__name__}"
            ) from error
        if mapping is None:
            return None
        tokens = []
        for ref in mapping.tokens:
            if not ref.active:
                continue
            where = {
                "tenant_id": mapping.tenant_id,
                "company_id": mapping.company_id,
                "token_id": ref.token_id,
            }
            try:
                # A token written to the secret by hand (`echo TOKEN | gcloud secrets
                # versions add`) keeps its newline, and no webhook of the company would
                # verify: CallRail signs with the token alone.
                token = self._secrets.get(ref.secret_name).strip()
            except SecretNotFound:
                log_event(logger, logging.ERROR, "signing token secret is missing", **where)
                continue
            except SecretStoreUnavailable as error:
                raise _TokensUnavailable(str(error), mapping) from error
            except Exception as error:  # e.g. credentials that cannot be refreshed
                raise _TokensUnavailable(
                    f"secret store unavailable: {error.__class__.__name__}", mapping
                ) from error
            if token:
                tokens.append(SigningToken(ref.token_id, token))
            else:
                log_event(logger, logging.ERROR, "signing token secret is empty", **where)
        return ResolvedCompany(mapping=mapping, tokens=tuple(tokens))
