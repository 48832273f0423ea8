"""CompanyDirectory: company → tenant, office and active tokens, through a TTL cache."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callpipe.callrail.signature import SigningToken
from callpipe.secrets import signing_token_secret_name
from callpipe.tenancy import CompanyDirectory, DirectoryUnavailable, NotCached, OnboardingRequest
from tests.unit.conftest import (
    COMPANY_ID,
    LEGACY_COMPANY_ID,
    OFFICE_ID,
    TENANT_ID,
    TOKEN,
    TOKEN_ID,
    DictSecretStore,
    FakeMonotonic,
    InMemoryCompanies,
    LogCapture,
    company_mapping,
    token_ref,
)

UNKNOWN = "COM00000000000000000000000000000000"


@pytest.fixture
def directory(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> CompanyDirectory:
    return CompanyDirectory(
        companies, secret_store, ttl_seconds=60, negative_ttl_seconds=10, clock=monotonic
    )


def test_resolves_mapping_and_tokens(directory: CompanyDirectory) -> None:
    resolved = directory.resolve([COMPANY_ID])
    assert resolved is not None
    assert resolved.mapping.tenant_id == TENANT_ID
    assert resolved.mapping.office_id == OFFICE_ID
    assert resolved.tokens == (SigningToken(TOKEN_ID, TOKEN),)


def test_positive_answers_are_cached_within_the_ttl(
    directory: CompanyDirectory,
    companies: InMemoryCompanies,
    monotonic: FakeMonotonic,
    secret_store: DictSecretStore,
) -> None:
    first = directory.resolve([COMPANY_ID])
    monotonic.advance(59)
    assert directory.resolve([COMPANY_ID]) is first
    assert companies.calls == [COMPANY_ID]
    assert len(secret_store.reads) == 1
    monotonic.advance(1)
    directory.resolve([COMPANY_ID])
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_cached_only_answers_from_the_cache_and_never_loads(
    directory: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    with pytest.raises(NotCached):
        directory.resolve([COMPANY_ID], cached_only=True)
    assert companies.calls == []
    loaded = directory.resolve([COMPANY_ID])
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    directory.resolve([UNKNOWN])
    assert directory.resolve([UNKNOWN], cached_only=True) is None  # a cached "unknown"
    monotonic.advance(60)
    with pytest.raises(NotCached):
        directory.resolve([COMPANY_ID], cached_only=True)
    assert companies.calls == [COMPANY_ID, UNKNOWN]


def test_negative_answers_are_cached_for_the_shorter_ttl(
    directory: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    assert directory.resolve([UNKNOWN]) is None
    monotonic.advance(9)
    assert directory.resolve([UNKNOWN]) is None
    assert companies.calls == [UNKNOWN]
    monotonic.advance(1)  # 10 s: the negative TTL, far below the 60 s positive one
    assert directory.resolve([UNKNOWN]) is None
    assert companies.calls == [UNKNOWN, UNKNOWN]


def test_newly_onboarded_company_is_seen_after_the_negative_ttl(
    directory: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    companies.mappings = []
    assert directory.resolve([COMPANY_ID]) is None
    companies.mappings = [company_mapping()]
    assert directory.resolve([COMPANY_ID]) is None  # still the cached negative answer
    monotonic.advance(10)
    assert directory.resolve([COMPANY_ID]) is not None


def test_invalidate_forgets_cached_answers(
    directory: CompanyDirectory, companies: InMemoryCompanies
) -> None:
    directory.resolve([COMPANY_ID])
    directory.invalidate()
    directory.resolve([COMPANY_ID])
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_falls_back_to_the_legacy_key(
    directory: CompanyDirectory, companies: InMemoryCompanies
) -> None:
    resolved = directory.resolve([UNKNOWN, LEGACY_COMPANY_ID])
    assert resolved is not None and resolved.mapping.company_id == COMPANY_ID
    assert companies.calls == [UNKNOWN, LEGACY_COMPANY_ID]
    # both answers are cached: the unknown key negatively, the legacy key positively
    assert directory.resolve([UNKNOWN, LEGACY_COMPANY_ID]) is resolved
    assert companies.calls == [UNKNOWN, LEGACY_COMPANY_ID]


def test_first_key_that_resolves_wins(
    directory: CompanyDirectory, companies: InMemoryCompanies
) -> None:
    directory.resolve([COMPANY_ID, LEGACY_COMPANY_ID])
    assert companies.calls == [COMPANY_ID]


def test_no_keys_resolves_to_none(directory: CompanyDirectory) -> None:
    assert directory.resolve([]) is None


def test_inactive_tokens_are_skipped_and_their_secrets_not_read(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    companies.mappings = [
        company_mapping((token_ref("tokrevoked", active=False), token_ref("tokactive")))
    ]
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tokrevoked"), "revoked")
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tokactive"), "active")
    secret_store.reads.clear()
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic)

    resolved = directory.resolve([COMPANY_ID])
    assert resolved is not None
    assert resolved.tokens == (SigningToken("tokactive", "active"),)
    assert secret_store.reads == [signing_token_secret_name(COMPANY_ID, "tokactive")]


def test_missing_secret_is_skipped_and_logged_other_tokens_still_used(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    capture_logs: Callable[[str], LogCapture],
) -> None:
    logs = capture_logs("callpipe.tenancy")
    companies.mappings = [company_mapping((token_ref("tokgone"), token_ref("tokthere")))]
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tokthere"), "there-secret")
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic)

    resolved = directory.resolve([COMPANY_ID])
    assert resolved is not None
    assert resolved.tokens == (SigningToken("tokthere", "there-secret"),)
    (entry,) = logs.records()
    assert entry["severity"] == "ERROR"
    assert entry["token_id"] == "tokgone"
    assert entry["tenant_id"] == TENANT_ID


def test_lookup_exception_becomes_directory_unavailable_and_is_not_cached(
    directory: CompanyDirectory, companies: InMemoryCompanies
) -> None:
    companies.error = ConnectionResetError("spanner went away")
    with pytest.raises(DirectoryUnavailable, match="ConnectionResetError") as caught:
        directory.resolve([COMPANY_ID])
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    companies.error = None
    assert directory.resolve([COMPANY_ID]) is not None
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_secret_store_outage_becomes_directory_unavailable(
    companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    directory = CompanyDirectory(
        companies, DictSecretStore(unavailable=True), 60, 10, clock=monotonic
    )
    with pytest.raises(DirectoryUnavailable):
        directory.resolve([COMPANY_ID])


def test_zero_ttl_disables_caching(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    directory = CompanyDirectory(companies, secret_store, 0, 0, clock=monotonic)
    directory.resolve([COMPANY_ID])
    directory.resolve([COMPANY_ID])
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_onboarding_request_repr_hides_tokens_and_api_key() -> None:
    request = OnboardingRequest(
        tenant_id=TENANT_ID,
        name="Acme Dental",
        callrail_account_id="512345678",
        callrail_company_id=COMPANY_ID,
        signing_tokens=("super-secret-token",),
        api_key="super-secret-api-key",
    )
    text = repr(request) + str(request)
    assert "super-secret" not in text
    assert COMPANY_ID in text
