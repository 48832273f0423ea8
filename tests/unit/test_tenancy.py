"""CompanyDirectory: company → tenant, office and active tokens, through a TTL cache."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from callpipe.apikeys import InvalidApiKey, api_key_from_input
from callpipe.callrail.signature import SigningToken
from callpipe.secrets import signing_token_secret_name
from callpipe.tenancy import (
    RELOAD_GRACE_SECONDS,
    SIGNATURE_RELOAD_SECONDS,
    SIGNATURE_RELOAD_WAITERS,
    CompanyDirectory,
    CompanyMapping,
    DirectoryUnavailable,
    NotCached,
    OnboardingRequest,
    ResolvedCompany,
)
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
    wait_until,
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
    monotonic.advance(10)
    with pytest.raises(NotCached):  # an unknown company is never answered from the past
        directory.resolve([UNKNOWN], cached_only=True)
    monotonic.advance(111)  # expired more than a TTL ago: too old to answer with
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


def resolve_with_secrets(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    secrets: dict[str, str | None],
) -> ResolvedCompany:
    """The company with one active token per key of ``secrets``, each secret holding its
    value (None: no secret at all), resolved by a fresh directory."""
    companies.mappings = [company_mapping(tuple(token_ref(token_id) for token_id in secrets))]
    for token_id, value in secrets.items():
        if value is not None:
            secret_store.put(signing_token_secret_name(COMPANY_ID, token_id), value)
    resolved = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic).resolve(
        [COMPANY_ID]
    )
    assert resolved is not None
    return resolved


def test_missing_secret_is_skipped_and_logged_other_tokens_still_used(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    capture_logs: Callable[[str], LogCapture],
) -> None:
    logs = capture_logs("callpipe.tenancy")
    resolved = resolve_with_secrets(
        companies, secret_store, monotonic, {"tokgone": None, "tokthere": "there-secret"}
    )
    assert resolved.tokens == (SigningToken("tokthere", "there-secret"),)
    (entry,) = logs.records()
    assert entry["severity"] == "ERROR"
    assert entry["token_id"] == "tokgone"
    assert entry["tenant_id"] == TENANT_ID


def test_a_token_written_by_hand_with_its_newline_still_verifies(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    capture_logs: Callable[[str], LogCapture],
) -> None:
    """`echo TOKEN | gcloud secrets versions add` stores the newline; CallRail signs with
    the token alone. An empty secret is no token, and says so."""
    logs = capture_logs("callpipe.tenancy")
    resolved = resolve_with_secrets(
        companies,
        secret_store,
        monotonic,
        {"tokecho": "echoed-token-value\n", "tokempty": " \n"},
    )
    assert resolved.tokens == (SigningToken("tokecho", "echoed-token-value"),)
    (entry,) = logs.records()
    assert (entry["severity"], entry["token_id"]) == ("ERROR", "tokempty")


def test_a_flood_of_unknown_ids_does_not_push_real_companies_out_of_the_cache(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic)
    assert directory.resolve([COMPANY_ID]) is not None
    for n in range(10_050):  # more than the cache holds
        assert directory.resolve([f"COMforged{n}"]) is None
    assert directory.resolve([COMPANY_ID]) is not None
    assert companies.calls.count(COMPANY_ID) == 1  # still cached: not loaded again
    assert directory.resolve(["COMforged10049"]) is None
    assert companies.calls.count("COMforged10049") == 1  # and the unknown one remembered


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


def test_a_secret_read_failing_in_any_other_way_is_directory_unavailable(
    companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    class BrokenStore(DictSecretStore):
        def get(self, name: str) -> str:
            raise RuntimeError("credentials could not be refreshed")

    directory = CompanyDirectory(companies, BrokenStore(), 60, 10, clock=monotonic)
    with pytest.raises(DirectoryUnavailable, match="RuntimeError"):
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


def test_an_api_key_loses_the_whitespace_pasted_around_it() -> None:
    assert api_key_from_input("  0123456789abcdef0123456789abcdef\n") == (
        "0123456789abcdef0123456789abcdef"
    )


@pytest.mark.parametrize(
    "given",
    ["", " \n", "first-key second-key", 'Token token="abcdef"', "abc\x00def", "abc\\def", "clé"],
)
def test_an_api_key_that_cannot_travel_in_a_header_is_refused_without_echoing_it(
    given: str,
) -> None:
    with pytest.raises(InvalidApiKey) as refused:
        api_key_from_input(given)
    assert given.strip() == "" or given.strip() not in str(refused.value)


# -- a directory outage, and many requests missing the cache at once -------------------------


@pytest.fixture
def forgiving(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> CompanyDirectory:
    """A directory that keeps using a company's last known mapping for 15 min of outage."""
    return CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic, stale_seconds=900)


def test_an_outage_is_answered_from_the_last_known_mapping(
    forgiving: CompanyDirectory,
    companies: InMemoryCompanies,
    monotonic: FakeMonotonic,
    capture_logs: Callable[[str], LogCapture],
) -> None:
    logs = capture_logs("callpipe.tenancy")
    loaded = forgiving.resolve([COMPANY_ID])
    monotonic.advance(61)  # past the TTL
    companies.error = ConnectionResetError("spanner went away")

    assert forgiving.resolve([COMPANY_ID]) == loaded
    (entry,) = logs.records()
    assert entry["severity"] == "WARNING"
    assert (entry["company_id"], entry["loaded_seconds_ago"]) == (COMPANY_ID, 61)
    assert "ConnectionResetError" in entry["error"]

    # the failing backend is asked again only every few seconds, not per request
    monotonic.advance(1)
    assert forgiving.resolve([COMPANY_ID], cached_only=True) == loaded
    assert companies.calls == [COMPANY_ID, COMPANY_ID]
    monotonic.advance(5)
    assert forgiving.resolve([COMPANY_ID]) == loaded
    assert companies.calls == [COMPANY_ID, COMPANY_ID, COMPANY_ID]

    # once it answers again, fresh loads are back
    companies.error = None
    monotonic.advance(5)
    forgiving.resolve([COMPANY_ID])
    assert len(companies.calls) == 4


def test_the_last_known_mapping_is_not_used_past_the_window(
    forgiving: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    forgiving.resolve([COMPANY_ID])
    monotonic.advance(60 + 900 + 1)
    companies.error = ConnectionResetError("spanner went away")
    with pytest.raises(DirectoryUnavailable):
        forgiving.resolve([COMPANY_ID])


def test_a_secret_store_outage_is_answered_from_the_last_known_tokens(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    directory = CompanyDirectory(
        companies, secret_store, 60, 10, clock=monotonic, stale_seconds=900
    )
    loaded = directory.resolve([COMPANY_ID])
    assert loaded is not None and loaded.tokens
    monotonic.advance(61)
    secret_store.unavailable = True
    assert directory.resolve([COMPANY_ID]) == loaded


def test_when_only_the_secret_store_fails_spanners_fresh_mapping_decides(
    forgiving: CompanyDirectory,
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
) -> None:
    forgiving.resolve([COMPANY_ID])
    monotonic.advance(61)
    # meanwhile the company moved office, its token was revoked and another one added
    companies.mappings[0] = company_mapping(
        tokens=(token_ref(TOKEN_ID, active=False), token_ref("toknew")), office_id="uptown"
    )
    secret_store.unavailable = True

    resolved = forgiving.resolve([COMPANY_ID])

    assert resolved is not None
    assert resolved.mapping.office_id == "uptown"
    assert resolved.tokens == ()  # the revoked token is not honoured; the new one is unread


def test_requests_arriving_during_a_load_get_the_last_known_mapping_at_once(
    secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    release = threading.Event()
    companies = InMemoryCompanies(company_mapping())
    blocked: list[str] = []

    def lookup(key: str) -> CompanyMapping | None:
        if companies.calls:  # the second load blocks
            blocked.append(key)
            release.wait(10)
        return companies(key)

    directory = CompanyDirectory(lookup, secret_store, 60, 10, clock=monotonic, stale_seconds=900)
    known = directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    leader = threading.Thread(target=directory.resolve, args=([COMPANY_ID],))
    leader.start()
    wait_until(lambda: blocked == [COMPANY_ID])

    assert directory.resolve([COMPANY_ID]) == known  # not waiting on the blocked load
    release.set()
    leader.join(10)
    assert len(companies.calls) == 2


def test_without_a_window_or_a_mapping_an_outage_is_refused(
    directory: CompanyDirectory,
    forgiving: CompanyDirectory,
    companies: InMemoryCompanies,
    monotonic: FakeMonotonic,
) -> None:
    directory.resolve([COMPANY_ID])  # stale_seconds=0
    monotonic.advance(61)
    companies.error = ConnectionResetError("spanner went away")
    with pytest.raises(DirectoryUnavailable):
        directory.resolve([COMPANY_ID])
    with pytest.raises(DirectoryUnavailable):  # never loaded
        forgiving.resolve([COMPANY_ID])


def test_a_company_found_unknown_is_no_longer_a_fallback(
    forgiving: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    forgiving.resolve([COMPANY_ID])
    monotonic.advance(61)
    removed = companies.mappings.pop()
    assert forgiving.resolve([COMPANY_ID]) is None  # offboarded
    monotonic.advance(11)  # past the negative TTL
    companies.mappings.append(removed)
    companies.error = ConnectionResetError("spanner went away")
    with pytest.raises(DirectoryUnavailable):
        forgiving.resolve([COMPANY_ID])


def test_requests_missing_the_cache_together_share_one_load(
    secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    release = threading.Event()
    started = threading.Event()
    companies = InMemoryCompanies(company_mapping())

    def slow_lookup(key: str) -> CompanyMapping | None:
        started.set()
        release.wait(10)
        return companies(key)

    directory = CompanyDirectory(slow_lookup, secret_store, 60, 10, clock=monotonic)
    answers: list[object] = []
    workers = [
        threading.Thread(target=lambda: answers.append(directory.resolve([COMPANY_ID])))
        for _ in range(5)
    ]
    for worker in workers:
        worker.start()
    assert started.wait(10)
    wait_until(lambda: _waiting(directory, COMPANY_ID) == 4)
    release.set()
    for worker in workers:
        worker.join(10)

    assert len(answers) == 5 and all(a is not None and a == answers[0] for a in answers)
    assert companies.calls == [COMPANY_ID]
    assert secret_store.reads == [signing_token_secret_name(COMPANY_ID, TOKEN_ID)]


@pytest.mark.parametrize("loaded_before", [False, True], ids=["never-loaded", "expired"])
def test_requests_waiting_on_a_failed_load_get_its_error(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    loaded_before: bool,
) -> None:
    release = threading.Event()
    calls: list[str] = []
    failing = threading.Event()

    def failing_lookup(key: str) -> CompanyMapping | None:
        calls.append(key)
        if not failing.is_set():
            return companies(key)
        release.wait(10)
        raise ConnectionResetError("spanner went away")

    directory = CompanyDirectory(failing_lookup, secret_store, 60, 10, clock=monotonic)
    if loaded_before:  # and expired; with no outage window, no stale answer for waiters
        directory.resolve([COMPANY_ID])
        monotonic.advance(61)
    failing.set()
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            directory.resolve([COMPANY_ID])
        except DirectoryUnavailable as error:
            errors.append(error)

    workers = [threading.Thread(target=resolve) for _ in range(3)]
    for worker in workers:
        worker.start()
    wait_until(lambda: _waiting(directory, COMPANY_ID) == 2)
    release.set()
    for worker in workers:
        worker.join(10)

    assert len(errors) == 3 and all("ConnectionResetError" in str(e) for e in errors)
    # one load, and a failure is not cached: the next request tries again
    assert calls == [COMPANY_ID] * (2 if loaded_before else 1)
    assert COMPANY_ID not in directory._flights
    with pytest.raises(NotCached):  # nor is the failed company answered on the loop
        directory.resolve([COMPANY_ID], cached_only=True)


def _waiting(directory: CompanyDirectory, key: str) -> int:
    flight = directory._flights.get(key)
    return flight.waiters if flight is not None else -1


class Deferred:
    """A directory's ``background``: keeps the jobs until the test runs them."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def test_an_expired_company_is_answered_at_once_and_reloaded_in_the_background(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    later = Deferred()
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic, background=later)
    loaded = directory.resolve([COMPANY_ID])
    monotonic.advance(61)

    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    assert companies.calls == [COMPANY_ID]  # nothing loaded on the caller's thread
    assert len(later.jobs) == 1  # one reload, however many requests came

    # the token was rotated meanwhile: the reload brings the new one
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tok-new"), "rotated-secret")
    companies.mappings = [company_mapping(tokens=(token_ref("tok-new"),))]
    later.run()
    assert companies.calls == [COMPANY_ID, COMPANY_ID]
    reloaded = directory.resolve([COMPANY_ID], cached_only=True)
    assert reloaded is not None and reloaded.tokens == (SigningToken("tok-new", "rotated-secret"),)
    assert later.jobs == []  # fresh again: no reload


def test_a_company_removed_meanwhile_is_unknown_after_its_reload(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    later = Deferred()
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic, background=later)
    directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    companies.mappings = []
    assert directory.resolve([COMPANY_ID], cached_only=True) is not None
    later.run()
    assert directory.resolve([COMPANY_ID], cached_only=True) is None


def test_a_failed_reload_without_an_outage_window_leaves_the_load_to_the_next_request(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    capture_logs: Callable[[str], LogCapture],
) -> None:
    logs = capture_logs("callpipe.tenancy")
    later = Deferred()
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic, background=later)
    loaded = directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    companies.error = ConnectionResetError("spanner went away")
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    later.run()

    (entry,) = logs.records()
    assert entry["severity"] == "WARNING" and entry["company_id"] == COMPANY_ID
    assert "ConnectionResetError" in entry["error"]
    with pytest.raises(NotCached):  # the request loads it, and gets the outage's answer
        directory.resolve([COMPANY_ID], cached_only=True)
    with pytest.raises(DirectoryUnavailable):
        directory.resolve([COMPANY_ID])


def test_a_failed_reload_within_the_outage_window_keeps_the_last_known_mapping(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    later = Deferred()
    directory = CompanyDirectory(
        companies, secret_store, 60, 10, clock=monotonic, stale_seconds=900, background=later
    )
    loaded = directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    companies.error = ConnectionResetError("spanner went away")
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    later.run()
    # answered from it, and the failing backend is asked again in a few seconds only
    assert directory.resolve([COMPANY_ID], cached_only=True) == loaded
    assert later.jobs == [] and companies.calls == [COMPANY_ID, COMPANY_ID]
    monotonic.advance(600)  # long past the TTL, still within the window
    assert directory.resolve([COMPANY_ID]) == loaded


def test_the_default_reload_runs_on_a_thread_of_its_own(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic)
    loaded = directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    wait_until(lambda: len(companies.threads) == 2)
    assert companies.threads[1] != threading.get_ident()
    wait_until(lambda: directory.resolve([COMPANY_ID], cached_only=True) is not loaded)


def test_a_reload_that_cannot_start_leaves_the_load_to_the_request(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    attempts: list[Callable[[], None]] = []

    def refusing(job: Callable[[], None]) -> None:
        attempts.append(job)
        raise RuntimeError("can't start new thread")

    directory = CompanyDirectory(
        companies, secret_store, 60, 10, clock=monotonic, background=refusing
    )
    directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    for _ in range(2):
        with pytest.raises(NotCached):
            directory.resolve([COMPANY_ID], cached_only=True)
    assert len(attempts) == 2  # not left marked as under way

    class Interrupted(BaseException):
        pass

    def interrupted(job: Callable[[], None]) -> None:
        raise Interrupted

    directory = CompanyDirectory(
        companies, secret_store, 60, 10, clock=monotonic, background=interrupted
    )
    directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    with pytest.raises(Interrupted):
        directory.resolve([COMPANY_ID], cached_only=True)
    assert directory._reloading == {}


def test_a_reload_taking_longer_than_its_grace_leaves_the_load_to_the_requests(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    later = Deferred()  # the reload never gets to run: a hung directory
    directory = CompanyDirectory(companies, secret_store, 60, 10, clock=monotonic, background=later)
    loaded = directory.resolve([COMPANY_ID])
    monotonic.advance(61)
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    monotonic.advance(RELOAD_GRACE_SECONDS)
    assert directory.resolve([COMPANY_ID], cached_only=True) is loaded
    monotonic.advance(0.5)
    with pytest.raises(NotCached):
        directory.resolve([COMPANY_ID], cached_only=True)
    assert len(later.jobs) == 1


def test_tokens_dropped_during_a_secret_store_outage_stay_dropped_on_the_loop(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tok-old"), "old-secret")
    companies.mappings = [company_mapping(tokens=(token_ref(TOKEN_ID), token_ref("tok-old")))]
    later = Deferred()
    directory = CompanyDirectory(
        companies, secret_store, 60, 10, clock=monotonic, stale_seconds=900, background=later
    )
    loaded = directory.resolve([COMPANY_ID])
    assert loaded is not None and len(loaded.tokens) == 2
    monotonic.advance(61)
    companies.mappings = [
        company_mapping(tokens=(token_ref(TOKEN_ID), token_ref("tok-old", active=False)))
    ]
    secret_store.unavailable = True
    directory.resolve([COMPANY_ID], cached_only=True)
    later.run()  # Spanner answers, the secret store does not: "tok-old" is dropped
    monotonic.advance(6)  # past the retry entry: the last known mapping answers again
    answer = directory.resolve([COMPANY_ID], cached_only=True)
    assert answer is not None
    assert [t.token_id for t in answer.tokens] == [TOKEN_ID]


# -- reloading a company for a signature its tokens do not match ------------------------------


def add_token(companies: InMemoryCompanies, secret_store: DictSecretStore) -> None:
    (mapping,) = companies.mappings
    companies.mappings = [company_mapping((*mapping.tokens, token_ref("toknew0002")))]
    secret_store.put(signing_token_secret_name(COMPANY_ID, "toknew0002"), "the-new-token")


def token_ids(resolved: object) -> list[str]:
    assert resolved is not None
    return [t.token_id for t in resolved.tokens]  # type: ignore[attr-defined]


def loaded_then_slow(
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
    then: Callable[[InMemoryCompanies, DictSecretStore], None] | None = None,
) -> tuple[CompanyDirectory, ResolvedCompany, threading.Event]:
    """A directory that has loaded the company, old enough to be reloaded for a signature,
    whose next loads wait until the returned event is set (after ``then`` changed it)."""
    release = threading.Event()
    slow = threading.Event()

    def lookup(key: str) -> CompanyMapping | None:
        if slow.is_set():
            release.wait(10)
        return companies(key)

    directory = CompanyDirectory(lookup, secret_store, 60, 10, clock=monotonic)
    seen = directory.resolve([COMPANY_ID])
    assert seen is not None
    if then is not None:
        then(companies, secret_store)
    monotonic.advance(SIGNATURE_RELOAD_SECONDS)
    slow.set()
    return directory, seen, release


def test_reload_for_signature_finds_a_token_added_since_the_load(
    directory: CompanyDirectory,
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
) -> None:
    seen = directory.resolve([COMPANY_ID])
    assert seen is not None
    add_token(companies, secret_store)
    assert directory.reload_for_signature([COMPANY_ID], seen) is None  # loaded just now

    monotonic.advance(SIGNATURE_RELOAD_SECONDS)
    reloaded = directory.reload_for_signature([COMPANY_ID], seen)

    assert token_ids(reloaded) == [TOKEN_ID, "toknew0002"]
    assert directory.resolve([COMPANY_ID]) is reloaded  # cached for the next requests
    # a request that still holds the old answer gets the new one without another load
    assert directory.reload_for_signature([COMPANY_ID], seen) is reloaded
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_reload_for_signature_uses_the_key_that_found_the_company(
    directory: CompanyDirectory,
    companies: InMemoryCompanies,
    secret_store: DictSecretStore,
    monotonic: FakeMonotonic,
) -> None:
    keys = [UNKNOWN, LEGACY_COMPANY_ID]  # a resource id nobody has, and the legacy id
    seen = directory.resolve(keys)
    assert seen is not None
    add_token(companies, secret_store)
    monotonic.advance(SIGNATURE_RELOAD_SECONDS)

    reloaded = directory.reload_for_signature(keys, seen)

    assert token_ids(reloaded) == [TOKEN_ID, "toknew0002"]
    assert companies.calls == [UNKNOWN, LEGACY_COMPANY_ID, LEGACY_COMPANY_ID]
    assert directory.resolve(keys) is reloaded


def test_reload_for_signature_on_an_event_loop_asks_for_a_thread(
    directory: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    seen = directory.resolve([COMPANY_ID])
    assert seen is not None
    monotonic.advance(SIGNATURE_RELOAD_SECONDS)
    with pytest.raises(NotCached):
        directory.reload_for_signature([COMPANY_ID], seen, cached_only=True)
    assert companies.calls == [COMPANY_ID]  # nothing loaded on the loop


def test_requests_during_a_reload_for_a_signature_wait_for_it(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    directory, seen, release = loaded_then_slow(companies, secret_store, monotonic, add_token)
    answers: dict[str, object] = {}

    def reload(name: str) -> None:
        answers[name] = directory.reload_for_signature([COMPANY_ID], seen)

    first = threading.Thread(target=reload, args=("first",))
    first.start()
    wait_until(lambda: COMPANY_ID in directory._signature_reloads)
    running = directory._signature_reloads[COMPANY_ID]
    waiting = threading.Event()
    wait = running.wait

    def observed_wait(timeout: float | None = None) -> bool:
        waiting.set()
        return wait(timeout)

    running.wait = observed_wait  # type: ignore[method-assign]
    second = threading.Thread(target=reload, args=("second",))
    second.start()
    assert waiting.wait(10)  # the second request waits for the first one's reload
    release.set()
    first.join(10)
    second.join(10)

    assert token_ids(answers["first"]) == [TOKEN_ID, "toknew0002"]
    assert answers["second"] is answers["first"]
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_forged_signatures_during_a_reload_hold_no_more_than_a_few_threads(
    companies: InMemoryCompanies, secret_store: DictSecretStore, monotonic: FakeMonotonic
) -> None:
    """Each request waiting for a company's reload holds a worker thread for up to 5 s; a
    flood of forged signatures would take them all from the requests that need one."""
    directory, seen, release = loaded_then_slow(companies, secret_store, monotonic)
    threads = [
        threading.Thread(target=directory.reload_for_signature, args=([COMPANY_ID], seen))
        for _ in range(1 + SIGNATURE_RELOAD_WAITERS)
    ]
    try:
        threads[0].start()
        wait_until(lambda: COMPANY_ID in directory._signature_reloads)
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: directory._signature_waiters == SIGNATURE_RELOAD_WAITERS)

        # answered at once, on a thread or on the event loop (no thread asked for)
        assert directory.reload_for_signature([COMPANY_ID], seen) is None
        assert directory.reload_for_signature([COMPANY_ID], seen, cached_only=True) is None
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert directory._signature_waiters == 0


def test_signature_reloads_are_bounded_across_companies(
    directory: CompanyDirectory, companies: InMemoryCompanies, monotonic: FakeMonotonic
) -> None:
    seen = directory.resolve([COMPANY_ID])
    assert seen is not None
    monotonic.advance(SIGNATURE_RELOAD_SECONDS)
    while directory._signature_budget.take():  # other companies' forged signatures
        pass
    assert directory.reload_for_signature([COMPANY_ID], seen) is None
    assert companies.calls == [COMPANY_ID]  # nothing loaded
    monotonic.advance(2)  # the budget refills (one a second)
    assert directory.reload_for_signature([COMPANY_ID], seen) is not None
