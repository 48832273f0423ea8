"""The API's router, error mapping and recording URLs, with in-memory fakes (no emulators)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from callpipe.api.analytics import aggregate
from callpipe.api.app import ApiResponse, CachedKey, TenantApi
from callpipe.api.auth import AuthError, TokenVerifier, issue_token
from callpipe.api.queries import ListParams, Page
from callpipe.api.signed_urls import (
    EmulatorUrls,
    GcsV4Signer,
    RecordingNotAvailable,
    RecordingUrls,
    recording_object,
)
from callpipe.secrets import SecretNotFound, SecretStoreUnavailable
from tests.unit.conftest import LogCapture

KEY = "s" * 64
BUCKET = "recordings"


class FakeQueries:
    def __init__(self) -> None:
        self.calls = {("acme", "CAL1"): {"request_id": "CAL1", "tenant_id": "acme"}}
        self.fail: Exception | None = None
        self.status_reads: list[str] = []
        self.time_zones: dict[str, str] = {}
        self.offices: dict[tuple[str, str], str | None] = {
            ("acme", "main"): None,
            ("acme", "denver"): "America/Denver",
        }

    def tenant_exists(self, tenant_id: str) -> bool:
        return tenant_id in {"acme", "other", "paused"}

    def tenant_active(self, tenant_id: str) -> bool:
        self.status_reads.append(tenant_id)
        return tenant_id in {"acme", "other"}

    def tenants_of_call(self, call_id: str) -> list[str]:
        return [t for t, c in self.calls if c == call_id]

    def tenant_time_zone(self, tenant_id: str) -> str | None:
        return self.time_zones.get(tenant_id)

    def office_time_zone(self, tenant_id: str, office_id: str) -> tuple[bool, str | None]:
        if (tenant_id, office_id) not in self.offices:
            return False, None
        return True, self.offices[(tenant_id, office_id)]

    def list_calls(self, tenant_id: str, params: ListParams) -> Page:
        if self.fail is not None:
            raise self.fail
        return Page([v for (t, _), v in self.calls.items() if t == tenant_id], None)

    def get_call(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        found = self.calls.get((tenant_id, call_id))
        return dict(found) if found else None

    def get_transcript(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        return None

    def get_analysis(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
        return None

    def get_recording(self, tenant_id: str, call_id: str) -> tuple[str | None, str | None] | None:
        if (tenant_id, call_id) not in self.calls:
            return None
        return f"gs://{BUCKET}/tenants/{tenant_id}/calls/{call_id}/recording.mp3", "audio/mpeg"


class FakeAnalytics:
    def compute(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime,
        zone: ZoneInfo,
        office_id: str | None = None,
    ) -> dict[str, Any]:
        return aggregate(tenant_id, start, end, [], zone, office_id)


def make_api(
    key: Any = lambda: KEY,
    queries: FakeQueries | None = None,
    signer: Any = None,
    cache_clock: Callable[[], float] = time.monotonic,
) -> TenantApi:
    return TenantApi(
        verifier=TokenVerifier(key),
        queries=queries or FakeQueries(),
        analytics=FakeAnalytics(),
        recordings=RecordingUrls(signer or EmulatorUrls("http://127.0.0.1:4443"), BUCKET),
        health=lambda: {"status": "ok", "checks": {}},
        clock=lambda: datetime(2026, 3, 1, tzinfo=UTC),
        cache_clock=cache_clock,
    )


def get(api: TenantApi, path: str, token: str | None = None, **query: str) -> ApiResponse:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return api.handle("GET", path, {k: [v] for k, v in query.items()}, headers)


def test_routes_methods_and_trailing_slashes() -> None:
    api = make_api()
    token = issue_token(KEY, tenant_id="acme")
    assert get(api, "/health").status == 200
    assert get(api, "/api/v1/requests/", token).status == 200
    assert api.handle("HEAD", "/health", {}, {}).status == 200
    response = api.handle("POST", "/api/v1/requests", {}, {})
    assert response.status == 405 and response.headers["Allow"] == "GET"
    assert get(api, "/api/v1/unknown", token).status == 404


def test_recording_url_for_the_callers_call_only() -> None:
    api = make_api()
    response = get(api, "/api/v1/requests/CAL1/recording", issue_token(KEY, tenant_id="acme"))
    assert response.status == 200
    assert response.body["url"] == (
        "http://127.0.0.1:4443/storage/v1/b/recordings/o/"
        "tenants%2Facme%2Fcalls%2FCAL1%2Frecording.mp3?alt=media"
    )
    other = get(api, "/api/v1/requests/CAL1/recording", issue_token(KEY, tenant_id="other"))
    assert other.status == 404


class Refusing:
    """A URL signer whose IAM signBlob call (or credential refresh) fails."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def sign(self, bucket: str, name: str, ttl: timedelta) -> str:
        raise self.failure


def test_a_recording_url_iam_cannot_sign_is_a_503() -> None:
    from google.auth.exceptions import RefreshError, TransportError

    for failure in (TransportError("signBlob: 403"), RefreshError("metadata server")):
        api = make_api(signer=Refusing(failure))
        response = get(api, "/api/v1/requests/CAL1/recording", issue_token(KEY, tenant_id="acme"))
        assert response.status == 503 and response.body["error"] == "unavailable"
        assert "signBlob" not in json.dumps(response.body)  # no details out


def test_a_missing_signing_key_is_a_503_not_an_open_door() -> None:
    def missing() -> str:
        raise SecretNotFound("no key")

    api = make_api(key=missing)
    response = get(api, "/api/v1/requests", issue_token(KEY, tenant_id="acme"))
    assert response.status == 503 and response.body["error"] == "unavailable"


def test_a_backing_service_failure_is_a_503_without_details(
    capture_logs: Callable[[str], LogCapture],
) -> None:
    from google.api_core.exceptions import ServiceUnavailable

    logs = capture_logs("callpipe.api.app")
    queries = FakeQueries()
    queries.fail = ServiceUnavailable("spanner exploded with secret details")
    response = get(
        make_api(queries=queries), "/api/v1/requests", issue_token(KEY, tenant_id="acme")
    )
    assert response.status == 503 and "secret" not in str(response.body)
    (entry,) = logs.records()
    assert entry["severity"] == "ERROR" and entry["path"] == "/api/v1/requests"


def test_a_bug_is_not_swallowed() -> None:
    import pytest

    queries = FakeQueries()
    queries.fail = RuntimeError("a programming error")
    with pytest.raises(RuntimeError, match="programming error"):
        get(make_api(queries=queries), "/api/v1/requests", issue_token(KEY, tenant_id="acme"))


def test_analytics_days_are_the_offices_unless_tz_says_otherwise() -> None:
    queries = FakeQueries()
    queries.time_zones["acme"] = "America/Los_Angeles"
    api = make_api(queries=queries)  # its clock: 2026-03-01T00:00Z, 28 Feb 4 pm in California
    token = issue_token(KEY, tenant_id="acme")
    local = get(api, "/api/v1/tenants/acme/analytics", token).body
    assert local["time_zone"] == "America/Los_Angeles"
    assert local["calls_by_day"][-1]["date"] == "2026-02-28"
    assert local["from"].startswith("2026-01-30T08:00:00")  # local midnight
    asked = get(api, "/api/v1/tenants/acme/analytics", token, tz="UTC").body
    assert asked["time_zone"] == "UTC" and asked["from"].startswith("2026-01-30T00:00:00")
    for written in ("Not/AZone", "America", ""):  # whatever an office row says
        queries.time_zones["acme"] = written
        fresh = make_api(queries=queries)
        assert get(fresh, "/api/v1/tenants/acme/analytics", token).body["time_zone"] == "UTC"
    folder = get(api, "/api/v1/tenants/acme/analytics", token, tz="America")
    assert folder.status == 400 and folder.body["error"] == "invalid_parameters"


def test_the_office_time_zone_is_read_once_a_minute_per_tenant() -> None:
    class Counting(FakeQueries):
        reads = 0

        def tenant_time_zone(self, tenant_id: str) -> str | None:
            Counting.reads += 1
            return "America/Denver"

    api = make_api(queries=Counting())
    token = issue_token(KEY, tenant_id="acme")
    for _ in range(3):
        assert get(api, "/api/v1/tenants/acme/analytics", token).status == 200
    assert Counting.reads == 1


def test_analytics_default_window_is_the_last_30_days() -> None:
    api = make_api()
    response = get(api, "/api/v1/tenants/acme/analytics", issue_token(KEY, tenant_id="acme"))
    assert response.status == 200
    assert response.body["from"].startswith("2026-01-30") and response.body["to"].startswith(
        "2026-03-01"
    )
    assert len(response.body["calls_by_day"]) == 30
    assert response.body["spam_rate"] is None and response.body["lead_score"]["average"] is None


def test_cached_key_rereads_after_ttl_and_never_caches_failures() -> None:
    values = iter(["k1", "k2"])
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return next(values)

    key = CachedKey(load, ttl_seconds=0.0)
    assert key() == "k1" and key() == "k2" and len(calls) == 2
    cached = CachedKey(lambda: "k", ttl_seconds=60.0)
    assert cached() == cached() == "k"

    outcomes: list[Any] = [SecretStoreUnavailable("Secret Manager did not answer"), "k3"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    later = CachedKey(flaky, ttl_seconds=60.0)
    with pytest.raises(SecretStoreUnavailable):
        later()
    assert later() == "k3"  # the failure was not kept


def test_a_key_that_does_not_exist_yet_is_asked_for_again_after_a_few_seconds() -> None:
    now = [0.0]
    reads: list[int] = []
    created: list[str] = []

    def load() -> str:
        reads.append(1)
        if not created:
            raise SecretNotFound("api-operator-signing-key")
        return created[0]

    key = CachedKey(load, clock=lambda: now[0])
    for _ in range(5):  # tokens naming the role of a key not created yet
        with pytest.raises(SecretNotFound):
            key()
    assert len(reads) == 1
    created.append(KEY)
    now[0] = 11.0
    assert key() == KEY and len(reads) == 2


def test_a_token_signed_with_a_key_rotated_since_the_last_read_verifies_at_once() -> None:
    store = {"key": KEY}
    reads: list[str] = []

    def load() -> str:
        reads.append(store["key"])
        return store["key"]

    key = CachedKey(load, ttl_seconds=300.0, refresh_seconds=0.0)
    verifier = TokenVerifier(key, refresh_key=key.refresh)
    assert verifier.verify(issue_token(KEY, tenant_id="acme")).tenant_id == "acme"
    store["key"] = "n" * 64  # rotated in the secret store
    assert verifier.verify(issue_token("n" * 64, tenant_id="acme")).tenant_id == "acme"
    assert reads == [KEY, "n" * 64]


def test_concurrent_forged_tokens_re_read_the_key_once_and_a_failing_store_once() -> None:
    import threading

    now = [0.0]
    reads: list[int] = []
    release = threading.Event()

    def load() -> str:
        reads.append(1)
        if len(reads) == 2:  # the re-read: the other threads pile up behind it
            release.wait(timeout=5)
        return KEY

    key = CachedKey(load, ttl_seconds=300.0, refresh_seconds=30.0, clock=lambda: now[0])
    key()  # read at 0
    now[0] = 100.0  # the refresh period has passed
    verifier = TokenVerifier(key, refresh_key=key.refresh)
    forged = issue_token("f" * 64, tenant_id="acme")
    codes: list[str] = []

    def attempt() -> None:
        try:
            verifier.verify(forged)
        except AuthError as error:
            codes.append(error.code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()
    assert codes == ["invalid_signature"] * 8
    assert len(reads) == 2  # the first read, and one re-read for all eight

    failing_reads: list[int] = []
    answers = iter([KEY])

    def down() -> str:
        failing_reads.append(1)
        try:
            return next(answers)
        except StopIteration:
            raise SecretStoreUnavailable("Secret Manager is down") from None

    cached = CachedKey(down, ttl_seconds=300.0, refresh_seconds=30.0, clock=lambda: now[0])
    cached()  # read before the outage, at 100
    now[0] = 200.0
    verifier = TokenVerifier(cached, refresh_key=cached.refresh)
    with pytest.raises(SecretStoreUnavailable):
        verifier.verify(forged)  # the one re-read meets the outage
    with pytest.raises(AuthError, match="signature"):
        verifier.verify(forged)  # not asked again within the period: a 401
    assert len(failing_reads) == 2


def test_a_token_of_the_new_key_verifies_when_another_request_re_read_it_first() -> None:
    current = {"key": KEY}
    now = [0.0]
    key = CachedKey(
        lambda: current["key"], ttl_seconds=300.0, refresh_seconds=30.0, clock=lambda: now[0]
    )
    key()
    current["key"] = "n" * 64
    now[0] = 100.0
    assert key.refresh(KEY) is True  # another request saw the rotation and re-read
    # this request decoded with the old key before that re-read: it decodes again
    assert key.refresh(KEY) is True and key() == "n" * 64
    verifier = TokenVerifier(key, refresh_key=key.refresh)
    assert verifier.verify(issue_token("n" * 64, tenant_id="acme")).tenant_id == "acme"


def test_transcript_and_analysis_reasons_reach_tenants_as_codes() -> None:
    reason = (
        "transcription_failed: BatchRecognize of gs://prod-rec/tenants/acme/calls/CAL1/"
        "recording.mp3 (operation projects/callpipe-prod/locations/us/operations/42)"
    )

    class Failed(FakeQueries):
        def get_transcript(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
            return {"request_id": call_id, "status": "no_transcript", "reason": reason}

        def get_analysis(self, tenant_id: str, call_id: str) -> dict[str, Any] | None:
            return {
                "request_id": call_id,
                "status": "failed",
                "reason": "signed as runner@callpipe-prod.iam.gserviceaccount.com via "
                "https://storage.googleapis.com/prod-rec/x",
            }

    api = make_api(queries=Failed())
    tenant = issue_token(KEY, tenant_id="acme")
    transcript = get(api, "/api/v1/requests/CAL1/transcript", tenant).body
    assert transcript["reason"] == "transcription_failed"
    analysis = get(api, "/api/v1/requests/CAL1/analysis", tenant).body
    assert analysis["reason"] == "signed as [internal] via [internal]"
    operator = issue_token(KEY, tenant_id=None, operator=True)
    full = get(api, "/api/v1/requests/CAL1/transcript", operator, tenant_id="acme").body
    assert full["reason"] == reason


def test_forged_tokens_re_read_the_key_at_most_once_per_refresh_period() -> None:
    reads: list[int] = []

    def load() -> str:
        reads.append(1)
        return KEY

    key = CachedKey(load, ttl_seconds=300.0, refresh_seconds=3600.0)
    verifier = TokenVerifier(key, refresh_key=key.refresh)
    forged = issue_token("f" * 64, tenant_id="acme")
    for _ in range(5):
        with pytest.raises(AuthError, match="signature"):
            verifier.verify(forged)
    assert len(reads) == 1  # read once; refreshes within the period are refused


@pytest.mark.parametrize(
    "uri",
    [
        None,
        "",
        "gs://other-bucket/tenants/acme/calls/CAL1/recording.mp3",
        f"gs://{BUCKET}/tenants/other/calls/CAL1/recording.mp3",
        f"gs://{BUCKET}/tenants/acme/calls/CAL2/recording.mp3",
        f"gs://{BUCKET}/tenants/acme/calls/CAL1/../../../other/calls/X/recording.mp3",
    ],
)
def test_only_the_calls_own_object_is_signed(uri: str | None) -> None:
    with pytest.raises(RecordingNotAvailable):
        recording_object(uri, BUCKET, "acme", "CAL1")


def test_production_urls_are_v4_signed_get_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.cloud import storage  # type: ignore[attr-defined]
    from google.oauth2 import service_account

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    credentials = service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "client_email": "api@project.iam.gserviceaccount.com",
            "private_key": pem,
            "token_uri": "https://oauth2.googleapis.com/token",
            "project_id": "project",
        }
    )
    client = storage.Client(project="project", credentials=credentials)
    urls = RecordingUrls(GcsV4Signer(client), BUCKET, ttl=timedelta(minutes=10))
    signed = urls.for_call(f"gs://{BUCKET}/tenants/acme/calls/CAL1/recording.mp3", "acme", "CAL1")
    parts = urlsplit(signed.url)
    query = parse_qs(parts.query)
    assert parts.netloc == "storage.googleapis.com"
    assert parts.path == f"/{BUCKET}/tenants/acme/calls/CAL1/recording.mp3"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["600"]
    assert query["X-Goog-Credential"][0].startswith("api@project.iam.gserviceaccount.com/")
    assert len(query["X-Goog-Signature"][0]) == 512  # hex RSA-2048 signature
    assert timedelta(minutes=9) < signed.expires_at - datetime.now(UTC) <= timedelta(minutes=10)


def test_a_tenant_that_is_not_active_is_refused_whatever_its_tokens_say() -> None:
    queries = FakeQueries()
    api = make_api(queries=queries)
    paused = get(api, "/api/v1/requests", issue_token(KEY, tenant_id="paused"))
    assert paused.status == 401 and paused.body["error"] == "tenant_inactive"
    removed = get(api, "/api/v1/tenants/gone/requests", issue_token(KEY, tenant_id="gone"))
    assert removed.status == 401 and removed.body["error"] == "tenant_inactive"

    token = issue_token(KEY, tenant_id="acme")
    assert get(api, "/api/v1/requests", token).status == 200
    assert get(api, "/api/v1/requests", token).status == 200
    assert queries.status_reads == ["paused", "gone", "acme"]  # cached, not read per request

    operator = issue_token(KEY, tenant_id=None, operator=True)
    assert get(api, "/api/v1/tenants/paused/requests", operator).status == 200


def test_a_tenant_sees_reason_codes_not_the_internal_details_operators_see() -> None:
    queries = FakeQueries()
    queries.calls[("acme", "CAL2")] = {
        "request_id": "CAL2",
        "tenant_id": "acme",
        "stage_detail": "retries_exhausted: attempt 10 of 10: ServiceUnavailable: "
        "projects/callpipe-prod/locations/us/recognizers/_ did not answer",
        "transcript_reason": "transcription_failed: BatchRecognize finished without a result "
        "for gs://prod-rec/tenants/acme/calls/CAL2/recording.mp3",
        "analysis_reason": "Vertex AI refused the credentials of "
        "123456789-compute@developer.gserviceaccount.com",
        "stages": [
            {
                "stage": "download-recording",
                "status": "ok",
                "detail": "gs://prod-rec/tenants/acme/calls/CAL2/recording.mp3",
            },
            {
                "stage": "transcribe",
                "status": "retrying",
                "detail": "retries_exhausted: attempt 10 of 10",
            },
            {
                "stage": "persist",
                "status": "ok",
                "detail": "transcript transcribed, analysis analyzed",
            },
        ],
    }
    api = make_api(queries=queries)

    tenant = get(api, "/api/v1/requests/CAL2", issue_token(KEY, tenant_id="acme")).body
    assert tenant["stage_detail"] == "retries_exhausted"
    assert tenant["transcript_reason"] == "transcription_failed"
    assert tenant["analysis_reason"] == "Vertex AI refused the credentials of [internal]"
    assert [s["detail"] for s in tenant["stages"]] == [
        "[internal]",
        "retries_exhausted",
        "transcript transcribed, analysis analyzed",
    ]
    listed = get(api, "/api/v1/requests", issue_token(KEY, tenant_id="acme")).body["items"]
    assert {item["request_id"]: item.get("stage_detail") for item in listed} == {
        "CAL1": None,
        "CAL2": "retries_exhausted",
    }

    operator = get(
        api,
        "/api/v1/requests/CAL2",
        issue_token(KEY, tenant_id=None, operator=True),
        tenant_id="acme",
    )
    assert operator.body["stages"][0]["detail"].startswith("gs://prod-rec/")
    assert "projects/callpipe-prod" in operator.body["stage_detail"]


def test_analytics_of_one_office_count_its_days_in_its_zone() -> None:
    """A tenant with offices in several zones gets UTC days for the whole business; one
    office's analytics are in that office's zone, unless tz says otherwise."""
    api = make_api(queries=FakeQueries())
    token = issue_token(KEY, tenant_id="acme")
    path = "/api/v1/tenants/acme/analytics"
    denver = get(api, path, token, office_id="denver").body
    assert (denver["office_id"], denver["time_zone"]) == ("denver", "America/Denver")
    assert get(api, path, token, office_id="main").body["time_zone"] == "UTC"
    # an office that names no zone counts its days as the tenant's whole do
    queries = FakeQueries()
    queries.time_zones["acme"] = "America/Los_Angeles"
    main = get(make_api(queries=queries), path, token, office_id="main").body
    assert main["time_zone"] == "America/Los_Angeles"
    chosen = get(api, path, token, office_id="denver", tz="Asia/Tokyo").body
    assert chosen["time_zone"] == "Asia/Tokyo"
    assert get(api, path, token).body["office_id"] is None
    unknown = get(api, path, token, office_id="nowhere")
    assert (unknown.status, unknown.body["message"]) == (404, "no office nowhere in tenant acme")
    assert get(api, path, token, office_id="../x").status == 400


def test_an_office_onboarded_after_a_miss_is_found_within_seconds() -> None:
    """ "No such office" is remembered 5 s, an office that exists a minute (its zone)."""
    now = [1000.0]
    queries = FakeQueries()
    api = make_api(queries=queries, cache_clock=lambda: now[0])
    token = issue_token(KEY, tenant_id="acme")
    path = "/api/v1/tenants/acme/analytics"
    assert get(api, path, token, office_id="boise").status == 404
    queries.offices[("acme", "boise")] = "America/Boise"
    now[0] += 4.0
    assert get(api, path, token, office_id="boise").status == 404
    now[0] += 1.5
    found = get(api, path, token, office_id="boise")
    assert (found.status, found.body["time_zone"]) == (200, "America/Boise")
    del queries.offices[("acme", "boise")]
    now[0] += 55.0
    assert get(api, path, token, office_id="boise").status == 200
    now[0] += 6.0
    assert get(api, path, token, office_id="boise").status == 404


def test_a_cursor_says_which_listing_it_is_a_position_in() -> None:
    from callpipe.api.queries import Cursor, InvalidParameters

    at = "2026-03-02T12:00:00.123456789Z"
    listing = Cursor("acme", at, "CAL1")
    feed = Cursor("acme", at, "CAL1", updated=True)
    assert Cursor.decode(listing.encode(), "acme") == listing
    assert Cursor.decode(feed.encode(), "acme") == feed
    assert listing.encode() != feed.encode()
    with pytest.raises(InvalidParameters):
        Cursor.decode(feed.encode(), "other")
