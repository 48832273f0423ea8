"""The tenant API function through functions-framework's test client, on the emulators.

Calls rows are inserted directly (the columns the pipeline fills), so each test controls
exactly what a tenant has and can compute the expected answers by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO, Tenant

pytestmark = pytest.mark.emulators

BASE = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signing_key(stack: Any) -> str:
    from callpipe.api.auth import load_signing_key
    from callpipe.config import Settings
    from callpipe.wiring import build_secret_store

    return load_signing_key(build_secret_store(Settings()), create_if_missing=True)


@pytest.fixture(scope="module")
def operator_key(stack: Any) -> str:
    from callpipe.api.auth import OPERATOR_KEY_SECRET, load_signing_key
    from callpipe.config import Settings
    from callpipe.wiring import build_secret_store

    store = build_secret_store(Settings())
    return load_signing_key(store, create_if_missing=True, secret=OPERATOR_KEY_SECRET)


@pytest.fixture(scope="module")
def client(stack: Any, signing_key: str) -> Any:
    from functions_framework import create_app

    return create_app(target="api", source=str(REPO / "functions/api/main.py")).test_client()


def token_for(key: str, tenant: str | None, operator: bool = False, **kwargs: Any) -> str:
    from callpipe.api.auth import issue_token

    return issue_token(key, tenant_id=tenant, operator=operator, **kwargs)


def insert_call(
    database: Any, tenant: Tenant, call_id: str, received: datetime, **cols: Any
) -> None:
    from google.cloud.spanner_v1 import COMMIT_TIMESTAMP

    row: dict[str, Any] = {
        "TenantId": tenant.tenant_id,
        "CallId": call_id,
        "OfficeId": tenant.office_id,
        "CompanyId": tenant.company_id,
        "CorrelationId": uuid.uuid4().hex,
        "Stage": "analyze",
        "StageStatus": "ok",
        "ReceivedAt": received,
        "CreatedAt": COMMIT_TIMESTAMP,
        "UpdatedAt": COMMIT_TIMESTAMP,
    }
    row.update(_spanner_values(cols))
    with database.batch() as batch:
        batch.insert("Calls", columns=list(row), values=[list(row.values())])


def _spanner_values(cols: dict[str, Any]) -> dict[str, Any]:
    from google.cloud.spanner_v1 import JsonObject

    json_columns = ("Analysis", "TranscriptSegments", "Webhook", "CallRailCall")
    return {name: JsonObject(v) if name in json_columns else v for name, v in cols.items()}


SPEC: dict[str, Any] = yaml.safe_load((REPO / "schemas/openapi.yaml").read_text())


def check_against_openapi(path: str, status: int, body: dict[str, Any]) -> None:
    """Every answer the tests see must match the documented response schema."""
    from jsonschema import Draft202012Validator

    from callpipe.api.app import ROUTES

    route = next((r for r in ROUTES if r.pattern.match(path.split("?")[0])), None)
    assert route is not None, path
    response = SPEC["paths"][route.template][route.method.lower()]["responses"][str(status)]
    while "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    schema = {**response["content"]["application/json"]["schema"], "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)


class Api:
    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, path: str, **query: Any) -> tuple[int, dict[str, Any]]:
        response = self.client.get(
            path, query_string=query, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.mimetype == "application/json", response.data
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_json()
        check_against_openapi(path, response.status_code, body)
        return response.status_code, body


def listed(api: Api, **query: Any) -> list[str]:
    """The ids of the calls the listing gives the caller, in order."""
    status, body = api.get("/api/v1/requests", **query)
    assert status == 200, body
    return [item["request_id"] for item in body["items"]]


@pytest.fixture
def api_as(client: Any, signing_key: str, operator_key: str) -> Callable[..., Api]:
    def make(tenant: Tenant | None, operator: bool = False) -> Api:
        key = operator_key if operator else signing_key
        return Api(client, token_for(key, tenant.tenant_id if tenant else None, operator))

    return make


@pytest.fixture
def two_tenants(make_tenant: Callable[..., Tenant], database: Any) -> dict[str, Any]:
    a, b = make_tenant(), make_tenant()
    shared = f"CAL{uuid.uuid4().hex}"  # the same call id in both tenants
    only_b = f"CAL{uuid.uuid4().hex}"
    insert_call(
        database,
        a,
        shared,
        BASE,
        Intent="quote_request",
        LeadScore=80,
        TranscriptStatus="transcribed",
        TranscriptText="caller: A's kitchen",
        AnalysisStatus="analyzed",
        Analysis={"summary": "A"},
    )
    insert_call(
        database,
        b,
        shared,
        BASE,
        Intent="complaint",
        LeadScore=10,
        TranscriptStatus="transcribed",
        TranscriptText="caller: B's secret",
        AnalysisStatus="analyzed",
        Analysis={"summary": "B"},
        RecordingUri=f"gs://callpipe-recordings/tenants/{b.tenant_id}/calls/{shared}/recording.mp3",
    )
    insert_call(database, b, only_b, BASE + timedelta(minutes=1), Intent="spam", IsSpam=True)
    return {"a": a, "b": b, "shared": shared, "only_b": only_b}


def test_health_needs_no_token(client: Any) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_a_tenant_token_never_reads_another_tenant(
    two_tenants: dict[str, Any], api_as: Callable[..., Api]
) -> None:
    a, b, shared, only_b = (two_tenants[k] for k in ("a", "b", "shared", "only_b"))
    api = api_as(a)

    status, body = api.get(f"/api/v1/requests/{shared}")
    assert (
        status == 200 and body["tenant_id"] == a.tenant_id and body["analysis"] == {"summary": "A"}
    )
    status, body = api.get(f"/api/v1/requests/{shared}/transcript")
    assert status == 200 and body["text"] == "caller: A's kitchen"

    not_found = api.get(f"/api/v1/requests/{uuid.uuid4().hex}")
    assert not_found[0] == 404
    paths = [
        (f"/api/v1/requests/{only_b}", {}),
        (f"/api/v1/requests/{only_b}/transcript", {}),
        (f"/api/v1/requests/{only_b}/analysis", {}),
        (f"/api/v1/requests/{only_b}/recording", {}),
        (f"/api/v1/requests/{shared}", {"tenant_id": b.tenant_id}),
        (f"/api/v1/requests/{shared}/transcript", {"tenant_id": b.tenant_id}),
        (f"/api/v1/requests/{shared}/recording", {"tenant_id": b.tenant_id}),
        ("/api/v1/requests", {"tenant_id": b.tenant_id}),
        (f"/api/v1/tenants/{b.tenant_id}/requests", {}),
        (f"/api/v1/tenants/{b.tenant_id}/requests", {"intent": "spam"}),
        (f"/api/v1/tenants/{b.tenant_id}/analytics", {}),
        ("/api/v1/tenants/no-such-tenant/requests", {}),
    ]
    for path, query in paths:
        status, body = api.get(path, **query)
        # Exactly the answer a missing resource gets: nothing tells B's data exists.
        assert (status, body) == not_found, (path, query, body)

    status, body = api.get("/api/v1/requests", limit=200)
    assert status == 200
    assert [item["request_id"] for item in body["items"]] == [shared]
    assert {item["tenant_id"] for item in body["items"]} == {a.tenant_id}
    status, body = api.get(f"/api/v1/tenants/{a.tenant_id}/requests", intent="spam")
    assert status == 200 and body["items"] == []


def test_an_operator_reads_every_tenant(
    two_tenants: dict[str, Any], api_as: Callable[..., Api]
) -> None:
    a, b, shared, only_b = (two_tenants[k] for k in ("a", "b", "shared", "only_b"))
    api = api_as(None, operator=True)
    for tenant, expected in ((a, {shared}), (b, {shared, only_b})):
        status, body = api.get(f"/api/v1/tenants/{tenant.tenant_id}/requests")
        assert status == 200 and {i["request_id"] for i in body["items"]} == expected
        status, body = api.get("/api/v1/requests", tenant_id=tenant.tenant_id)
        assert status == 200 and {i["request_id"] for i in body["items"]} == expected
        status, body = api.get(f"/api/v1/tenants/{tenant.tenant_id}/analytics")
        assert status == 200 and body["tenant_id"] == tenant.tenant_id
    status, body = api.get(f"/api/v1/requests/{only_b}")
    assert status == 200 and body["tenant_id"] == b.tenant_id
    status, body = api.get(f"/api/v1/requests/{shared}/analysis", tenant_id=b.tenant_id)
    assert status == 200 and body["analysis"] == {"summary": "B"}
    # The same call id in two tenants: the operator must say which.
    assert api.get(f"/api/v1/requests/{shared}")[0] == 400
    assert api.get("/api/v1/requests")[0] == 400
    assert api.get("/api/v1/tenants/no-such-tenant/analytics")[0] == 404


def test_pagination_neither_skips_nor_repeats_while_rows_arrive(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    expected: list[tuple[datetime, str]] = []
    for i in range(23):
        # Pairs of calls share a timestamp, so the CallId tie-break is exercised too.
        received = BASE - timedelta(minutes=i // 2)
        call_id = f"CAL{i:03d}{uuid.uuid4().hex[:8]}"
        insert_call(database, tenant, call_id, received)
        expected.append((received, call_id))
    api = api_as(tenant)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 5}
        if cursor:
            query["cursor"] = cursor
        status, body = api.get("/api/v1/requests", **query)
        assert status == 200, body
        seen.extend(item["request_id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Between pages: a newer call (sorts before the cursor, so not on later pages) and
        # an older one (after the cursor, so it must show up exactly once).
        insert_call(
            database, tenant, f"NEW{pages:03d}{uuid.uuid4().hex[:8]}", BASE + timedelta(hours=pages)
        )
        older = (BASE - timedelta(days=1, minutes=pages), f"OLD{pages:03d}{uuid.uuid4().hex[:8]}")
        insert_call(database, tenant, older[1], older[0])
        expected.append(older)
    order = [c for _, c in sorted(expected, key=lambda rc: (-rc[0].timestamp(), rc[1]))]
    assert len(seen) == len(set(seen))
    assert seen == order
    assert pages >= 5


def update_call(database: Any, tenant: Tenant, call_id: str, **cols: Any) -> None:
    """Change a stored call as a pipeline step does: its UpdatedAt moves to the commit."""
    from google.cloud.spanner_v1 import COMMIT_TIMESTAMP

    row = {
        "TenantId": tenant.tenant_id,
        "CallId": call_id,
        **_spanner_values(cols),
        "UpdatedAt": COMMIT_TIMESTAMP,
    }
    with database.batch() as batch:
        batch.update("Calls", columns=list(row), values=[list(row.values())])


def test_the_change_feed_gives_every_change_once_in_commit_order(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    # received out of order: the feed follows the changes, not the received times
    for call_id, received in (("C1", BASE), ("C2", BASE - timedelta(days=3)), ("C3", BASE)):
        insert_call(database, tenant, call_id, received)
    api = api_as(tenant)
    path = f"/api/v1/tenants/{tenant.tenant_id}/requests"

    def page(**query: Any) -> tuple[list[str], str | None, list[dict[str, Any]]]:
        status, body = api.get(path, **query)
        assert status == 200, body
        return [i["request_id"] for i in body["items"]], body["next_cursor"], body["items"]

    ids, cursor, items = page(updated_since="2000-01-01T00:00:00Z", limit=2)
    assert ids == ["C1", "C2"] and cursor is not None
    assert items[0]["updated_at"] < items[1]["updated_at"]
    ids, cursor, _ = page(cursor=cursor, limit=2)  # the feed's cursor reads the feed on
    assert ids == ["C3"] and cursor is not None  # the last page keeps the position
    caught_up = cursor
    ids, cursor, _ = page(cursor=caught_up)
    assert (ids, cursor) == ([], caught_up)  # nothing changed: the same position

    update_call(database, tenant, "C2", Intent="quote_request", LeadScore=77)
    insert_call(database, tenant, "C4", BASE - timedelta(days=9))
    ids, cursor, items = page(cursor=caught_up, updated_since="2000-01-01T00:00:00Z")
    assert ids == ["C2", "C4"]
    assert (items[0]["intent"], items[0]["lead_score"]) == ("quote_request", 77)
    # the other filters apply to each call's latest state
    assert page(cursor=caught_up, min_lead_score=50)[0] == ["C2"]
    # updated_since alone starts where it says: C1 and C3 changed before C2's update
    assert page(updated_since=items[0]["updated_at"])[0] == ["C2", "C4"]
    # the listing is unchanged: newest received first, with when each call last changed
    ids, cursor, items = page()
    assert ids == ["C1", "C3", "C2", "C4"] and cursor is None
    assert all(item["updated_at"] for item in items)


def test_an_empty_first_page_of_the_feed_gives_a_position_to_poll_from(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    insert_call(database, tenant, "C1", BASE)
    api = api_as(tenant)
    since = datetime.now(UTC).isoformat()  # after C1's change was committed
    status, body = api.get("/api/v1/requests", updated_since=since)
    assert status == 200 and body["items"] == [] and body["next_cursor"]
    start = body["next_cursor"]
    assert api.get("/api/v1/requests", cursor=start)[1]["items"] == []
    insert_call(database, tenant, "C2", BASE)
    status, body = api.get("/api/v1/requests", cursor=start)
    assert status == 200, body
    assert [item["request_id"] for item in body["items"]] == ["C2"]


def test_a_listing_cursor_is_no_position_in_the_change_feed(
    make_tenant: Callable[..., Tenant], api_as: Callable[..., Api], database: Any
) -> None:
    tenant = make_tenant()
    for call_id in ("C1", "C2"):
        insert_call(database, tenant, call_id, BASE)
    api = api_as(tenant)
    status, body = api.get("/api/v1/requests", limit=1)
    assert status == 200 and body["next_cursor"]
    status, refused = api.get(
        "/api/v1/requests", cursor=body["next_cursor"], updated_since="2000-01-01T00:00:00Z"
    )
    assert status == 400
    assert refused["details"] == [
        {"parameter": "cursor", "message": "the cursor belongs to another listing"}
    ]


def test_filters_select_the_right_calls(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    insert_call(
        database,
        tenant,
        "C1",
        BASE,
        Intent="quote_request",
        ProjectType="kitchen",
        LeadScore=90,
        IsSpam=False,
        FollowUpRequired=True,
        AppointmentRequested=False,
    )
    insert_call(
        database,
        tenant,
        "C2",
        BASE + timedelta(days=1),
        Intent="spam",
        ProjectType="unknown",
        LeadScore=2,
        IsSpam=True,
        FollowUpRequired=False,
        AppointmentRequested=True,
    )
    insert_call(
        database, tenant, "C3", BASE + timedelta(days=2), StageStatus="failed", OfficeId="east"
    )
    api = api_as(tenant)

    def ids(**query: Any) -> list[str]:
        return listed(api, **query)

    assert ids() == ["C3", "C2", "C1"]
    assert ids(intent="quote_request") == ["C1"]
    assert ids(min_lead_score=50) == ["C1"]
    assert ids(spam="true") == ["C2"]
    assert ids(spam="false") == ["C3", "C1"]
    assert ids(project_type="kitchen") == ["C1"]
    assert ids(project_type="roofing") == []
    assert ids(follow_up_required="true") == ["C1"]
    assert ids(follow_up_required="false") == ["C3", "C2"]  # C3 is not analysed yet
    assert ids(appointment_requested="true") == ["C2"]
    assert ids(appointment_requested="false", updated_since=BASE.isoformat()) == ["C1", "C3"]
    assert ids(status="failed") == ["C3"]
    assert ids(office_id="east") == ["C3"]
    assert ids(office_id=tenant.office_id) == ["C2", "C1"]
    start = (BASE + timedelta(hours=1)).isoformat()
    assert ids(**{"from": start}) == ["C3", "C2"]
    assert ids(**{"from": start, "to": (BASE + timedelta(days=2)).isoformat()}) == ["C2"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/requests", {"limit": "0"}),
        ("/api/v1/requests", {"limit": "abc"}),
        ("/api/v1/requests", {"limit": "201"}),
        ("/api/v1/requests", {"min_lead_score": "101"}),
        ("/api/v1/requests", {"intent": "bogus"}),
        ("/api/v1/requests", {"project_type": "castle"}),
        ("/api/v1/requests", {"follow_up_required": "maybe"}),
        ("/api/v1/requests", {"spam": "maybe"}),
        ("/api/v1/requests", {"status": "weird"}),
        ("/api/v1/requests", {"from": "yesterday"}),
        ("/api/v1/requests", {"updated_since": "yesterday"}),
        ("/api/v1/requests", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}),
        ("/api/v1/requests", {"cursor": "not-a-cursor"}),
        ("/api/v1/requests", {"cursor": "eyJ0IjogMX0"}),
        ("/api/v1/requests", {"unknown": "1"}),
        ("/api/v1/requests", {"tenant_id": "Not A Tenant"}),
        ("/api/v1/requests/bad%20id!", {}),
        ("/api/v1/requests/CAL1", {"limit": "5"}),
        ("/api/v1/tenants/{self}/analytics", {"from": "2024-01-01", "to": "2026-01-01"}),
        ("/api/v1/tenants/{self}/analytics", {"from": "2026-01-01T00:00:00+99:00"}),
        ("/api/v1/tenants/{self}/requests", {"limit": "-1"}),
        ("/api/v1/requests", {"from": "0001-01-01T00:00:00+05:00"}),
        ("/api/v1/tenants/{self}/analytics", {"to": "0001-01-02T00:00:00Z"}),
        ("/api/v1/tenants/{self}/analytics", {"from": "9999-01-01T00:00:00Z"}),
    ],
)
def test_invalid_parameters_are_a_400_with_json(
    make_tenant: Callable[..., Tenant],
    api_as: Callable[..., Api],
    path: str,
    query: dict[str, str],
) -> None:
    tenant = make_tenant()
    status, body = api_as(tenant).get(path.replace("{self}", tenant.tenant_id), **query)
    assert status == 400, body
    assert body["error"] == "invalid_parameters" and body["message"] and body["details"]


def test_a_repeated_parameter_is_a_400(
    client: Any, signing_key: str, make_tenant: Callable[..., Tenant]
) -> None:
    token = token_for(signing_key, make_tenant().tenant_id)
    response = client.get(
        "/api/v1/requests?limit=1&limit=2", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_parameters"


def test_a_cursor_of_another_tenant_is_refused(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    a, b = make_tenant(), make_tenant()
    for i in range(3):
        insert_call(database, b, f"B{i}", BASE - timedelta(minutes=i))
    status, body = api_as(b).get("/api/v1/requests", limit=1)
    assert status == 200 and body["next_cursor"]
    status, body = api_as(a).get("/api/v1/requests", cursor=body["next_cursor"])
    assert status == 400 and body["error"] == "invalid_parameters"


@pytest.mark.parametrize("call_id", ["\ud800", "CAL 1", "CAL1' OR '1'='1", ""])
def test_a_tampered_cursor_is_a_400(
    make_tenant: Callable[..., Tenant], api_as: Callable[..., Api], call_id: str
) -> None:
    import base64
    import json

    tenant = make_tenant()
    raw = json.dumps({"t": tenant.tenant_id, "r": "2026-03-02T12:00:00Z", "c": call_id})
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    status, body = api_as(tenant).get("/api/v1/requests", cursor=cursor)
    assert status == 400 and body["error"] == "invalid_parameters", body


def test_an_unexpected_failure_is_still_a_json_answer(
    client: Any, signing_key: str, make_tenant: Callable[..., Tenant], monkeypatch: Any
) -> None:
    from callpipe.api.app import TenantApi

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TenantApi, "handle", broken)
    token = token_for(signing_key, make_tenant().tenant_id)
    response = client.get("/api/v1/requests", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500 and response.mimetype == "application/json"
    assert response.get_json()["error"] == "internal"
    assert "a bug" not in response.get_data(as_text=True)


def test_tokens_are_checked_over_http(client: Any, signing_key: str) -> None:
    def answer(headers: dict[str, str]) -> tuple[int, dict[str, Any], str | None]:
        response = client.get("/api/v1/requests", headers=headers)
        return response.status_code, response.get_json(), response.headers.get("WWW-Authenticate")

    status, body, challenge = answer({})
    assert (status, body["error"]) == (401, "missing_token") and challenge
    expired = token_for(
        signing_key, "acme", now=datetime.now(UTC) - timedelta(days=1), ttl_seconds=60
    )
    assert answer({"Authorization": f"Bearer {expired}"})[:2][1]["error"] == "token_expired"
    forged = token_for("x" * 64, None, operator=True)
    status, body, _ = answer({"Authorization": f"Bearer {forged}"})
    assert (status, body["error"]) == (401, "invalid_signature")
    # the tenants' key makes no operator
    promoted = token_for(signing_key, None, operator=True)
    status, body, _ = answer({"Authorization": f"Bearer {promoted}"})
    assert (status, body["error"]) == (401, "invalid_signature")
    assert client.post("/api/v1/requests").status_code == 405
    assert client.get("/api/v1/nothing-here").status_code == 404


def test_analytics_match_hand_computed_figures(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    day1, day2 = BASE, BASE + timedelta(days=1)
    rows = [
        # id, received, answered, voicemail, spam, score, intent, project, sentiment,
        # appointment, follow-up, seconds from webhook to analysis, key details
        (
            "A1",
            day1,
            True,
            False,
            False,
            80,
            "quote_request",
            "kitchen",
            "positive",
            True,
            True,
            30,
            ["Budget $40k", "Pasadena"],
        ),
        (
            "A2",
            day1 + timedelta(hours=1),
            True,
            False,
            False,
            60,
            "quote_request",
            "bathroom",
            "neutral",
            False,
            False,
            90,
            ["budget  $40K"],
        ),
        (
            "A3",
            day1 + timedelta(hours=2),
            False,
            False,
            False,
            20,
            "other",
            "unknown",
            "neutral",
            False,
            True,
            60,
            [],
        ),
        (
            "A4",
            day2,
            True,
            True,
            False,
            40,
            "service_request",
            "kitchen",
            "negative",
            True,
            False,
            None,
            ["Pasadena"],
        ),
        (
            "A5",
            day2 + timedelta(hours=3),
            True,
            False,
            True,
            1,
            "spam",
            "unknown",
            "neutral",
            False,
            False,
            120,
            [],
        ),
    ]
    for (
        call_id,
        received,
        answered,
        voicemail,
        spam,
        score,
        intent,
        project,
        sentiment,
        appt,
        follow,
        after,
        details,
    ) in rows:
        analyzed = after is not None
        insert_call(
            database,
            tenant,
            call_id,
            received,
            **SOURCES.get(call_id, {}),
            Answered=answered,
            Voicemail=voicemail,
            IsSpam=spam,
            LeadScore=score,
            Intent=intent,
            ProjectType=project,
            Sentiment=sentiment,
            AppointmentRequested=appt,
            FollowUpRequired=follow,
            # as persist writes them: a failed analysis is stamped when the step gave up
            AnalysisStatus="analyzed" if analyzed else "failed",
            AnalyzedAt=received + (timedelta(seconds=after) if analyzed else timedelta(hours=6)),
            Analysis={"key_details": details},
        )
    # Outside the range: must not count.
    insert_call(database, tenant, "OUT", day1 - timedelta(days=5), Answered=True, LeadScore=100)

    status, body = api_as(tenant).get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics",
        **{"from": "2026-03-02T00:00:00Z", "to": "2026-03-04T00:00:00Z"},
    )
    assert status == 200, body
    assert body["total_calls"] == 5
    assert body["calls_by_day"] == [
        {"date": "2026-03-02", "calls": 3},
        {"date": "2026-03-03", "calls": 2},
    ]
    assert body["outcomes"] == {"answered": 3, "missed": 1, "voicemail": 1, "unknown": 0}
    assert body["spam_calls"] == 1 and body["spam_rate"] == 0.2
    assert body["lead_score"]["average"] == round((80 + 60 + 20 + 40 + 1) / 5, 2)
    assert [b["calls"] for b in body["lead_score"]["distribution"]] == [2, 1, 1, 1, 0]
    assert body["intents"] == {"quote_request": 2, "other": 1, "service_request": 1, "spam": 1}
    assert body["project_types"] == {"kitchen": 2, "unknown": 2, "bathroom": 1}
    assert body["sentiment"] == {"neutral": 3, "positive": 1, "negative": 1}
    # Appointment rate over the 4 analysed calls (A4's analysis failed): A1 only.
    assert body["analyzed_calls"] == 4 and body["appointment_rate"] == 0.25
    assert body["follow_ups_pending"] == 2
    assert body["top_key_details"] == [
        {"detail": "Budget $40k", "calls": 2},
        {"detail": "Pasadena", "calls": 2},
    ]
    assert body["average_seconds_webhook_to_analysis"] == 75.0
    # A5 is spam: counted for Google Ads, out of its average; A3's webhook names no source
    # (a reconciled call's), its API view does; A4 names none
    assert body["lead_sources"] == [
        {
            "source": "Google Ads",
            "calls": 3,
            "spam_calls": 1,
            "average_lead_score": 70.0,
            "appointments": 1,
        },
        {
            "source": "Direct",
            "calls": 1,
            "spam_calls": 0,
            "average_lead_score": 20.0,
            "appointments": 0,
        },
        {
            "source": "unknown",
            "calls": 1,
            "spam_calls": 0,
            "average_lead_score": 40.0,
            "appointments": 0,
        },
    ]


# where the calls of the hand-computed analytics came from
SOURCES: dict[str, dict[str, Any]] = {
    "A1": {"CallRailCall": {"source": "Google Ads"}},
    "A2": {"Webhook": {"source": "Google Ads"}},
    "A3": {"Webhook": {"company_id": "COM1"}, "CallRailCall": {"source": "Direct"}},
    "A5": {"CallRailCall": {"source": "Google Ads"}},
}


def test_a_call_says_where_it_came_from(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    insert_call(
        database,
        tenant,
        "CALSOURCE",
        BASE,
        Webhook={
            "source": "Google Organic",
            "source_name": "Website Pool",
            "utm_medium": "organic",
        },
        CallRailCall={"source": "Google Ads", "campaign": "Kitchens 2026", "keywords": None},
    )
    insert_call(
        database,
        tenant,
        "CALRECONCILED",
        BASE,
        Webhook={"company_id": tenant.company_id},  # what reconcile stores: a listing entry
        CallRailCall={"source": "Google Ads", "campaign": "Kitchens 2026", "medium": "cpc"},
    )
    status, body = api_as(tenant).get("/api/v1/requests/CALSOURCE")
    assert status == 200, body
    # all from one record: the webhook names a source, so none of the API view's mixes in
    assert body["attribution"] == {
        "source": "Google Organic",
        "source_name": "Website Pool",
        "campaign": None,
        "medium": "organic",
        "keywords": None,
    }
    status, body = api_as(tenant).get("/api/v1/requests/CALRECONCILED")
    assert body["attribution"] == {
        "source": "Google Ads",
        "source_name": None,
        "campaign": "Kitchens 2026",
        "medium": "cpc",
        "keywords": None,
    }


def test_the_listing_shows_one_marketing_source_as_analytics_names_it(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant()
    # the webhook's source wins over the API view's, as in the call's attribution
    insert_call(
        database,
        tenant,
        "C1",
        BASE,
        Webhook={"source": " Google  Ads"},
        CallRailCall={"source": "Direct"},
    )
    insert_call(
        database, tenant, "C2", BASE - timedelta(hours=1), CallRailCall={"source": "Direct"}
    )
    insert_call(database, tenant, "C3", BASE - timedelta(hours=2), Webhook={"source": ""})
    insert_call(database, tenant, "C4", BASE - timedelta(hours=3))
    insert_call(database, tenant, "C5", BASE - timedelta(hours=4), Webhook={"source": "google ads"})
    # a no-break space is no space to Spanner's regular expressions: another source
    insert_call(
        database, tenant, "C6", BASE - timedelta(hours=5), Webhook={"source": "Google\u00a0Ads"}
    )
    api = api_as(tenant)
    status, analytics = api.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics",
        **{"from": "2026-03-01", "to": "2026-03-03"},
    )
    assert status == 200, analytics
    # one spelling of each source is shown (the first met): compared in lower case here
    names = {row["source"].lower(): row["calls"] for row in analytics["lead_sources"]}
    assert names == {"google ads": 2, "google\u00a0ads": 1, "direct": 1, "unknown": 2}

    def ids(source: str, **query: Any) -> list[str]:
        return listed(api, source=source, **query)

    # each source as analytics names it finds exactly its calls, which name it so too
    for figures in analytics["lead_sources"]:
        assert len(ids(figures["source"])) == figures["calls"], figures
    status, listing = api.get("/api/v1/requests")
    shown = {item["request_id"]: item["source"] for item in listing["items"]}
    assert shown == {
        "C1": "Google Ads",
        "C2": "Direct",
        "C3": None,
        "C4": None,
        "C5": "google ads",
        "C6": "Google\u00a0Ads",
    }
    assert ids("Google\u00a0Ads") == ["C6"]

    # each name analytics shows finds its calls, in any case and spacing
    assert ids("Google Ads") == ["C1", "C5"]
    assert ids("GOOGLE ADS ") == ["C1", "C5"]
    assert ids("Direct") == ["C2"]
    assert ids("unknown") == ["C3", "C4"]
    assert ids("Google") == []
    assert ids("Google Ads", updated_since="2000-01-01T00:00:00Z") == ["C1", "C5"]
    # a source filled in later (the API view fetched) moves the call into it
    update_call(database, tenant, "C4", CallRailCall={"source": "Direct"})
    assert ids("Direct") == ["C2", "C4"]
    assert api.get("/api/v1/requests", source="  ")[0] == 400


def test_analytics_count_days_in_the_offices_time_zone(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    tenant = make_tenant(time_zone="America/Los_Angeles")
    # 6 pm on 2 March in California, already 3 March in UTC
    insert_call(database, tenant, "CALEVENING", datetime(2026, 3, 3, 2, 0, tzinfo=UTC))
    window = {"from": "2026-03-02T08:00:00Z", "to": "2026-03-04T08:00:00Z"}
    api = api_as(tenant)
    status, body = api.get(f"/api/v1/tenants/{tenant.tenant_id}/analytics", **window)
    assert status == 200, body
    assert body["time_zone"] == "America/Los_Angeles"
    assert body["calls_by_day"] == [
        {"date": "2026-03-02", "calls": 1},
        {"date": "2026-03-03", "calls": 0},
    ]
    status, body = api.get(f"/api/v1/tenants/{tenant.tenant_id}/analytics", **window, tz="UTC")
    assert {d["date"]: d["calls"] for d in body["calls_by_day"]}["2026-03-03"] == 1


def test_analytics_of_one_office_in_its_own_time_zone(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api]
) -> None:
    """A roofer with offices on both coasts: each office's figures, in its own days."""
    from google.cloud.spanner_v1 import COMMIT_TIMESTAMP

    tenant = make_tenant(time_zone="America/Los_Angeles")
    with database.batch() as batch:
        batch.insert(
            "Offices",
            ["TenantId", "OfficeId", "Name", "TimeZone", "CreatedAt", "UpdatedAt"],
            [
                [
                    tenant.tenant_id,
                    "east",
                    "East",
                    "America/New_York",
                    COMMIT_TIMESTAMP,
                    COMMIT_TIMESTAMP,
                ]
            ],
        )
    # 11 pm on 2 March in New York (04:00 UTC on the 3rd), taken by the east office
    insert_call(
        database, tenant, "CALEAST", datetime(2026, 3, 3, 4, 0, tzinfo=UTC), OfficeId="east"
    )
    insert_call(database, tenant, "CALWEST", datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    api = api_as(tenant)
    path = f"/api/v1/tenants/{tenant.tenant_id}/analytics"
    status, east = api.get(path, office_id="east", **{"from": "2026-03-02", "to": "2026-03-04"})
    assert status == 200, east
    assert (east["office_id"], east["time_zone"], east["total_calls"]) == (
        "east",
        "America/New_York",
        1,
    )
    assert east["calls_by_day"][0] == {"date": "2026-03-02", "calls": 1}
    status, whole = api.get(path, tz="UTC", **{"from": "2026-03-02", "to": "2026-03-04"})
    assert (whole["office_id"], whole["total_calls"]) == (None, 2)
    assert api.get(path, office_id="nowhere")[0] == 404


def test_transcript_analysis_and_recording_url(
    make_tenant: Callable[..., Tenant], database: Any, api_as: Callable[..., Api], stack: Any
) -> None:
    from google.cloud import storage  # type: ignore[attr-defined]

    from callpipe.config import Settings

    tenant = make_tenant()
    bucket = Settings().audio_storage_bucket
    name = f"tenants/{tenant.tenant_id}/calls/CALREC/recording.mp3"
    audio = b"ID3" + uuid.uuid4().bytes * 10
    storage.Client().bucket(bucket).blob(name).upload_from_string(audio, content_type="audio/mpeg")
    segments = [{"speaker": "caller", "start": 0.0, "end": 2.5, "text": "Hi"}]
    insert_call(
        database,
        tenant,
        "CALREC",
        BASE,
        RecordingUri=f"gs://{bucket}/{name}",
        RecordingContentType="audio/mpeg",
        TranscriptStatus="transcribed",
        TranscriptText="caller: Hi",
        TranscriptSegments=segments,
        SpeakerCount=1,
        AnalysisStatus="analyzed",
        Analysis={"intent": "other", "lead_score": 5},
    )
    insert_call(database, tenant, "CALNOREC", BASE, RecordingStatus="no_recording")
    api = api_as(tenant)

    status, body = api.get("/api/v1/requests/CALREC/transcript")
    assert status == 200 and body["segments"] == segments and body["speaker_count"] == 1
    status, body = api.get("/api/v1/requests/CALREC/analysis")
    assert status == 200 and body["analysis"]["lead_score"] == 5
    status, body = api.get("/api/v1/requests/CALREC")
    assert status == 200 and "recording_uri" not in body and body["links"]["recording"]

    status, body = api.get("/api/v1/requests/CALREC/recording")
    assert status == 200, body
    assert body["content_type"] == "audio/mpeg"
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)
    assert httpx.get(body["url"], timeout=10).content == audio

    status, body = api.get("/api/v1/requests/CALNOREC/recording")
    assert status == 404 and body["error"] == "no_recording"
