"""WebhookIntake: every outcome of one request, against in-memory ports and a fixed clock."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import pytest

from callpipe.callrail.webhook import EventType
from callpipe.intake.service import (
    IntakeOutcome,
    client_disconnected,
    correlation_id_from,
    event_key,
    log_outcome,
)
from callpipe.messages import CallReceived, QuarantinedWebhook
from callpipe.registration import RegisterCall
from callpipe.secrets import signing_token_secret_name
from callpipe.tenancy import CompanyMapping
from tests.unit.conftest import (
    ACCOUNT_ID,
    CALLS_TOPIC,
    COMPANY_ID,
    LEGACY_COMPANY_ID,
    MAX_BODY,
    NOW,
    OFFICE_ID,
    POST_CALL_ID,
    QUARANTINE_TOPIC,
    TENANT_ID,
    TOKEN_ID,
    FailingPublisher,
    InMemoryArchive,
    InMemoryCompanies,
    InMemoryEventLedger,
    IntakeHarness,
    LogCapture,
    RecordingPublisher,
    company_mapping,
    event_body,
    load_event,
    sign,
    token_ref,
    wait_until,
)

OTHER_CALL_ID = "CAL0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
UNKNOWN_COMPANY = "COM00000000000000000000000000000000"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PACIFIC = timezone(timedelta(hours=-7))


def received(harness: IntakeHarness) -> list[CallReceived]:
    return [CallReceived.from_data(m.data) for m in harness.publisher.on(CALLS_TOPIC)]


# -- the happy path ------------------------------------------------------------------------


def test_signed_post_call_is_accepted_and_published(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    outcome = harness.post(body)

    assert outcome.status == 202
    assert outcome.outcome == "accepted"
    assert outcome.body == {
        "status": "accepted",
        "call_id": POST_CALL_ID,
        "event_type": "post_call",
        "correlation_id": outcome.correlation_id,
    }
    assert len(harness.publisher.messages) == 1
    published = harness.publisher.messages[0]
    assert published.topic == CALLS_TOPIC
    assert published.attributes == {
        "kind": "call.received",
        "schema_version": "1",
        "tenant_id": TENANT_ID,
        "office_id": OFFICE_ID,
        "call_id": POST_CALL_ID,
        "event_type": "post_call",
        "event_key": f"completion:{POST_CALL_ID}",
        "correlation_id": outcome.correlation_id,
    }
    assert outcome.fields["message_id"] == published.message_id
    assert outcome.fields["token_id"] == TOKEN_ID


def test_published_call_received_carries_the_raw_bytes_and_mapping(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    harness.post(body, extra_headers={"Cookie": "session=abc", "Authorization": "Bearer x"})

    (message,) = received(harness)
    assert message.webhook.body == body
    assert message.webhook.received_at == NOW
    assert message.webhook.path == "/api/v1/callrail/webhook"
    # only the headers needed to verify and replay are kept
    assert message.webhook.headers == {
        "signature": sign(harness.token, body),
        "content-type": "application/json",
        "user-agent": "CallRail-Webhooks/1.0",
    }
    assert message.tenant_id == TENANT_ID
    assert message.office_id == OFFICE_ID
    assert message.company_id == COMPANY_ID
    assert message.callrail_account_id == ACCOUNT_ID
    assert message.signing_token_id == TOKEN_ID
    assert message.event_type is EventType.POST_CALL


def test_raw_bytes_are_kept_exactly_including_whitespace(harness: IntakeHarness) -> None:
    body = b"  " + json.dumps(load_event("post_call"), indent=2).encode() + b"\r\n"
    assert harness.post(body).status == 202
    (message,) = received(harness)
    assert message.webhook.body == body


@pytest.mark.parametrize(
    ("event", "hint", "expected"),
    [
        ("post_call", None, EventType.POST_CALL),
        ("post_call", "post-call", EventType.POST_CALL),
        ("call_modified", None, EventType.CALL_MODIFIED),
        ("call_modified", "Call Modified", EventType.CALL_MODIFIED),
        ("outbound_post_call", None, EventType.OUTBOUND_POST_CALL),
        ("text_message", None, EventType.TEXT_MESSAGE_RECEIVED),
        ("form_submission", None, EventType.FORM_SUBMISSION),
        ("pre_call", "pre-call", EventType.PRE_CALL),
        ("pre_call", None, EventType.PRE_CALL),
    ],
)
def test_every_canonical_event_is_accepted(
    harness: IntakeHarness, event: str, hint: str | None, expected: EventType
) -> None:
    outcome = harness.post(event_body(event), hint=hint)
    assert outcome.status == 202, outcome.body
    assert outcome.body["event_type"] == expected.value
    (message,) = received(harness)
    assert message.event_type is expected
    assert message.call_id == load_event(event).get("resource_id", load_event(event).get("id"))


def test_form_submission_without_timeline_url_takes_the_account_from_the_mapping(
    harness: IntakeHarness,
) -> None:
    harness.post(event_body("form_submission"))
    (message,) = received(harness)
    assert message.callrail_account_id == ACCOUNT_ID


def test_the_account_is_the_onboarded_one_whatever_the_body_says(harness: IntakeHarness) -> None:
    """Whoever holds a company's token must not point fetch-call at another account."""
    body = event_body(
        "post_call", timeline_url="https://app.callrail.com/a/999999999/calls/CAL1/timeline"
    )
    assert harness.post(body).status == 202
    (message,) = received(harness)
    assert message.callrail_account_id == ACCOUNT_ID != "999999999"


def test_legacy_numeric_company_id_alone_is_enough(harness: IntakeHarness) -> None:
    body = event_body("post_call", company_resource_id=None)
    assert b"company_resource_id" not in body
    outcome = harness.post(body)
    assert outcome.status == 202, outcome.body
    assert harness.companies.calls == [LEGACY_COMPANY_ID]
    (message,) = received(harness)
    assert message.company_id == COMPANY_ID
    assert message.tenant_id == TENANT_ID


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"],
)
def test_json_content_type_variants_are_accepted(harness: IntakeHarness, content_type: str) -> None:
    assert harness.post(event_body("post_call"), content_type=content_type).status == 202


def test_signature_header_with_surrounding_whitespace_is_accepted(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    assert harness.post(body, signature=f"  {sign(harness.token, body)} \t").status == 202


def test_header_names_are_case_insensitive(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    request = harness.request(body, signature=None, content_type=None)
    request.headers = {"content-type": "application/json", "SIGNATURE": sign(harness.token, body)}
    assert harness.intake.handle(request).status == 202


def test_body_exactly_at_the_limit_is_not_too_large(harness: IntakeHarness) -> None:
    payload = load_event("post_call")
    payload["padding"] = ""
    base = len(json.dumps(payload).encode())
    payload["padding"] = "x" * (MAX_BODY - base)
    body = json.dumps(payload).encode()
    assert len(body) == MAX_BODY
    assert harness.post(body).status == 202


def test_rotated_token_is_used_and_recorded(
    make_intake: Callable[..., IntakeHarness], companies, secret_store
) -> None:
    companies.mappings = [company_mapping((token_ref("tokold0001"), token_ref("toknew0002")))]
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tokold0001"), "old-secret")
    secret_store.put(signing_token_secret_name(COMPANY_ID, "toknew0002"), "new-secret")
    harness = make_intake()
    body = event_body("post_call")
    outcome = harness.post(body, signature=sign("new-secret", body))
    assert outcome.status == 202
    assert outcome.fields["token_id"] == "toknew0002"
    assert received(harness)[0].signing_token_id == "toknew0002"


# -- rejections before anything is looked up -----------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE"])
def test_non_post_is_405(harness: IntakeHarness, method: str) -> None:
    outcome = harness.post(event_body("post_call"), method=method)
    assert outcome.status == 405
    assert outcome.body["error"] == "method_not_allowed"
    assert harness.publisher.messages == []


def test_lowercase_post_is_accepted(harness: IntakeHarness) -> None:
    assert harness.post(event_body("post_call"), method="post").status == 202


def test_declared_oversized_body_is_413(harness: IntakeHarness) -> None:
    outcome = harness.post(b"", oversized=True)
    assert outcome.status == 413
    assert outcome.body["error"] == "payload_too_large"
    assert harness.companies.calls == []


def test_body_over_the_limit_is_413(harness: IntakeHarness) -> None:
    outcome = harness.post(b"{" + b" " * MAX_BODY + b"}")
    assert outcome.status == 413
    assert str(MAX_BODY) in outcome.body["message"]
    assert harness.publisher.messages == []


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"],
)
def test_non_json_content_type_is_415(harness: IntakeHarness, content_type: str | None) -> None:
    outcome = harness.post(event_body("post_call"), content_type=content_type)
    assert outcome.status == 415
    assert outcome.body["error"] == "unsupported_media_type"
    assert harness.publisher.messages == []


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_missing_signature_is_401(harness: IntakeHarness, signature: str | None) -> None:
    outcome = harness.post(event_body("post_call"), signature=signature)
    assert outcome.status == 401
    assert outcome.body["error"] == "missing_signature"
    assert harness.companies.calls == []
    assert harness.publisher.messages == []


@pytest.mark.parametrize("hint", ["post-calls", "unknown", "post_call/extra"])
def test_unknown_event_path_is_404_before_any_lookup(harness: IntakeHarness, hint: str) -> None:
    outcome = harness.post(event_body("post_call"), hint=hint)
    assert outcome.status == 404
    assert outcome.body["error"] == "unknown_event_path"
    assert harness.companies.calls == []
    assert harness.publisher.messages == []


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2, 3]", b'"a string"', b"42", b"null", b"\xff\xfe{}", b""]
)
def test_malformed_json_or_non_object_is_400(harness: IntakeHarness, body: bytes) -> None:
    outcome = harness.post(body)
    assert outcome.status == 400
    assert outcome.body["error"] == "malformed_json"
    assert harness.companies.calls == []
    assert harness.publisher.messages == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"resource_id": POST_CALL_ID},
        {"company_resource_id": "", "company_id": None},
        {"company_resource_id": "   "},
        {"company_id": True},
    ],
)
def test_missing_company_id_is_400(harness: IntakeHarness, payload: dict[str, object]) -> None:
    outcome = harness.post(json.dumps(payload).encode())
    assert outcome.status == 400
    assert outcome.body["error"] == "missing_company_id"
    assert harness.companies.calls == []


# -- unknown companies and an unavailable directory ------------------------------------------


def test_unknown_company_is_404_and_quarantined(harness: IntakeHarness) -> None:
    body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
    outcome = harness.post(body, signature=sign("some-other-companys-token", body))

    assert outcome.status == 404
    assert outcome.body["error"] == "unknown_company"
    assert outcome.fields["quarantined"] is True
    assert outcome.fields["company_id"] == UNKNOWN_COMPANY
    assert "kept in quarantine" in outcome.body["message"]
    assert harness.publisher.on(CALLS_TOPIC) == []
    (published,) = harness.publisher.on(QUARANTINE_TOPIC)
    assert published.attributes == {
        "kind": "webhook.quarantined",
        "schema_version": "1",
        "company_key": UNKNOWN_COMPANY,
        "reason": "unknown_company",
        "correlation_id": outcome.correlation_id,
    }
    quarantined = QuarantinedWebhook.from_data(published.data)
    assert quarantined.webhook.body == body
    assert quarantined.webhook.received_at == NOW
    assert quarantined.webhook.headers["signature"] == sign("some-other-companys-token", body)


def test_unknown_company_with_quarantine_limit_exhausted_is_not_kept(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    harness = make_intake(quarantine_per_minute=1)
    body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)

    first = harness.post(body)
    second = harness.post(body)

    assert first.status == 404 and first.fields["quarantined"] is True
    assert second.status == 404 and second.fields["quarantined"] is False
    assert "not kept" in second.body["message"]
    assert len(harness.publisher.on(QUARANTINE_TOPIC)) == 1

    harness.limiter_clock.advance(60)  # the bucket refills: one more is kept
    assert harness.post(body).fields["quarantined"] is True
    assert len(harness.publisher.on(QUARANTINE_TOPIC)) == 2


def forged_unknown_company_flood(harness: IntakeHarness, requests: int) -> None:
    """Requests anyone can send: unknown company, signed with a made-up token."""
    for n in range(requests):
        body = event_body(
            "post_call", company_resource_id=f"COM{n:032d}", company_id=None, resource_id=None
        )
        harness.post(body, signature=sign("anything", body))


def test_forged_unknown_company_requests_leave_the_outage_budget_to_real_webhooks(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    harness = make_intake(quarantine_per_minute=120)
    forged_unknown_company_flood(harness, 121)
    assert len(harness.publisher.on(QUARANTINE_TOPIC)) == 120  # its own budget is spent

    harness.companies.error = ConnectionError("spanner: deadline exceeded")  # then an outage
    body = event_body("post_call")
    outcome = harness.post(body)

    assert (outcome.status, outcome.outcome) == (503, "directory_unavailable")
    assert outcome.fields["quarantined"] is True  # kept: a replay can still queue it
    kept = harness.publisher.on(QUARANTINE_TOPIC)[-1]
    assert kept.attributes["reason"] == "directory_unavailable"
    assert QuarantinedWebhook.from_data(kept.data).webhook.body == body


def test_during_an_outage_a_body_too_large_for_an_unknown_company_is_not_kept(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    """Unverifiable until the directory answers: a flood of large forged bodies must not
    fill the hold the real webhooks of the outage go to."""
    body = event_body("post_call")
    harness = make_intake(unknown_max_body=len(body))
    harness.companies.error = ConnectionError("spanner: deadline exceeded")
    padded = event_body("post_call", padding="x" * 2000)
    outcomes = [harness.post(body), harness.post(padded, signature=sign("forged-token", padded))]
    assert [(o.status, o.fields["quarantined"]) for o in outcomes] == [(503, True), (503, False)]
    (kept,) = harness.publisher.on(QUARANTINE_TOPIC)
    assert QuarantinedWebhook.from_data(kept.data).webhook.body == body


def test_forged_unknown_company_requests_leave_the_unusable_budget_to_signed_webhooks(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    harness = make_intake(quarantine_per_minute=120)
    forged_unknown_company_flood(harness, 121)

    outcome = harness.post(event_body("post_call", timestamp="yesterday-ish"))

    assert (outcome.status, outcome.outcome) == (400, "invalid_payload")
    assert outcome.fields["quarantined"] is True
    assert harness.publisher.on(QUARANTINE_TOPIC)[-1].attributes["reason"] == "invalid_payload"


@pytest.mark.parametrize("kind", ["unusable", "outage"])
def test_the_unusable_and_outage_budgets_are_bounded_too(
    make_intake: Callable[..., IntakeHarness], kind: str
) -> None:
    harness = make_intake(unusable_per_minute=1, outage_per_minute=1, quarantine_per_minute=0)
    if kind == "outage":
        harness.companies.error = ConnectionError("spanner: deadline exceeded")
        body = event_body("post_call")
    else:
        body = event_body("post_call", timestamp="yesterday-ish")

    first, second = harness.post(body), harness.post(body)

    assert first.fields["quarantined"] is True
    assert second.fields["quarantined"] is False
    harness.limiter_clock.advance(60)
    assert harness.post(body).fields["quarantined"] is True


def test_unknown_company_body_over_its_size_limit_is_not_kept(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    small = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
    limit = len(small)
    harness = make_intake(quarantine_per_minute=1, unknown_max_body=limit)
    big = event_body(
        "post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None, pad="x" * 64
    )
    assert len(big) > limit

    outcome = harness.post(big)

    assert (outcome.status, outcome.outcome) == (404, "unknown_company")
    assert outcome.fields["quarantined"] is False
    assert f"over {limit} bytes" in outcome.body["message"]
    assert harness.publisher.messages == []
    # it spent nothing of the budget: one at the limit is still kept
    assert harness.post(small).fields["quarantined"] is True


def test_unknown_company_when_quarantine_publish_fails_is_404_not_kept(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    harness = make_intake(publisher=FailingPublisher())
    body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
    outcome = harness.post(body)
    assert outcome.status == 404
    assert outcome.fields["quarantined"] is False
    assert harness.publisher.attempts == [QUARANTINE_TOPIC]


def test_directory_failure_is_503_and_the_webhook_is_quarantined(harness: IntakeHarness) -> None:
    harness.companies.error = ConnectionError("spanner: deadline exceeded")
    body = event_body("post_call")
    outcome = harness.post(body)

    assert outcome.status == 503
    assert outcome.body["error"] == "directory_unavailable"
    assert outcome.fields["quarantined"] is True
    assert harness.publisher.on(CALLS_TOPIC) == []
    (published,) = harness.publisher.on(QUARANTINE_TOPIC)
    assert published.attributes["reason"] == "directory_unavailable"
    assert published.attributes["company_key"] == COMPANY_ID
    assert QuarantinedWebhook.from_data(published.data).webhook.body == body


def test_directory_failure_for_a_company_known_before_queues_the_webhook(
    make_intake: Callable[..., IntakeHarness],
) -> None:
    harness = make_intake(stale_seconds=900)
    assert harness.post(event_body("post_call")).status == 202
    harness.limiter_clock.advance(61)  # the company's cache entry has expired
    harness.companies.error = ConnectionError("spanner: deadline exceeded")

    outcome = harness.post(event_body("post_call", resource_id=OTHER_CALL_ID))

    assert (outcome.status, outcome.fields["call_id"]) == (202, OTHER_CALL_ID)
    assert len(harness.publisher.on(CALLS_TOPIC)) == 2
    assert harness.publisher.on(QUARANTINE_TOPIC) == []


# -- authenticity -----------------------------------------------------------------------------


def test_invalid_signature_is_401_and_nothing_is_published(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    outcome = harness.post(body, signature=sign("wrong-token", body))
    assert outcome.status == 401
    assert outcome.body["error"] == "invalid_signature"
    assert outcome.fields["tenant_id"] == TENANT_ID
    assert harness.publisher.messages == []


def test_signature_of_a_different_serialisation_is_401(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    resent = json.dumps(json.loads(body), indent=2).encode()
    assert harness.post(resent, signature=sign(harness.token, body)).status == 401
    assert harness.publisher.messages == []


def test_company_with_no_usable_token_rejects_every_signature(
    make_intake: Callable[..., IntakeHarness], companies, secret_store
) -> None:
    companies.mappings = [company_mapping((token_ref("tokrevoked", active=False),))]
    secret_store.put(signing_token_secret_name(COMPANY_ID, "tokrevoked"), "revoked-secret")
    harness = make_intake()
    body = event_body("post_call")
    assert harness.post(body, signature=sign("revoked-secret", body)).status == 401
    assert harness.publisher.messages == []


# -- token rotation: a token added since the company was loaded ------------------------------


def add_token(companies: InMemoryCompanies, secret_store: Any, token_id: str, secret: str) -> None:
    """What `callpipe tenants add-token` does, seen from the directory's side."""
    (mapping,) = companies.mappings
    companies.mappings = [company_mapping((*mapping.tokens, token_ref(token_id)))]
    secret_store.put(signing_token_secret_name(COMPANY_ID, token_id), secret)


def test_a_token_added_since_the_company_was_loaded_is_honoured_within_seconds(
    harness: IntakeHarness, companies: InMemoryCompanies, secret_store: Any
) -> None:
    assert harness.post(event_body("post_call")).status == 202  # loaded, cached for 60 s
    add_token(companies, secret_store, "toknew0002", "the-new-token")
    harness.limiter_clock.advance(6)  # the directory's clock: well within the TTL

    body = event_body("post_call", resource_id=OTHER_CALL_ID)
    outcome = harness.post(body, signature=sign("the-new-token", body))

    assert outcome.status == 202, outcome.body
    assert outcome.fields["token_id"] == "toknew0002"
    assert companies.calls == [COMPANY_ID, COMPANY_ID]  # loaded once more
    # and the reloaded company is what the next requests find
    assert harness.post(body, signature=sign("the-new-token", body)).status == 202
    assert companies.calls == [COMPANY_ID, COMPANY_ID]


def test_wrong_signatures_reload_a_company_at_most_once_every_few_seconds(
    harness: IntakeHarness, companies: InMemoryCompanies
) -> None:
    body = event_body("post_call")
    harness.post(body)  # loaded
    forged = sign("not-the-token", body)
    assert harness.post(body, signature=forged).status == 401
    assert companies.calls == [COMPANY_ID]  # just loaded: nothing newer to find

    harness.limiter_clock.advance(6)
    for _ in range(50):
        assert harness.post(body, signature=forged).status == 401
    assert companies.calls == [COMPANY_ID, COMPANY_ID]

    harness.limiter_clock.advance(5)
    for _ in range(50):
        assert harness.post(body, signature=forged).status == 401
    assert companies.calls == [COMPANY_ID] * 3
    assert len(harness.publisher.messages) == 1  # the first request's, nothing since


def test_a_failed_reload_for_a_signature_is_a_401_and_not_retried_at_once(
    harness: IntakeHarness, companies: InMemoryCompanies
) -> None:
    body = event_body("post_call")
    harness.post(body)
    harness.limiter_clock.advance(6)
    companies.error = ConnectionError("spanner: deadline exceeded")
    forged = sign("not-the-token", body)

    assert harness.post(body, signature=forged).status == 401
    assert harness.post(body, signature=forged).status == 401
    assert len(companies.calls) == 2  # the first load and one reload


def test_handle_async_reloads_for_a_new_token_off_the_loop(
    harness: IntakeHarness, companies: InMemoryCompanies, secret_store: Any
) -> None:
    harness.post(event_body("post_call"))
    add_token(companies, secret_store, "toknew0002", "the-new-token")
    harness.limiter_clock.advance(6)
    body = event_body("post_call", resource_id=OTHER_CALL_ID)
    publisher = RecordingPublisher()

    async def on_the_loop() -> tuple[int, IntakeOutcome]:
        request = harness.request(body, signature=sign("the-new-token", body))
        outcome = await harness.intake.handle_async(request, OnTheLoop(publisher))
        return threading.get_ident(), outcome

    loop_thread, outcome = asyncio.run(on_the_loop())

    assert (outcome.status, outcome.fields["token_id"]) == (202, "toknew0002")
    assert len(companies.threads) == 2 and companies.threads[1] != loop_thread
    assert [m.topic for m in publisher.messages] == [CALLS_TOPIC]


# -- checks after the signature ------------------------------------------------------------------


def assert_only_quarantined(harness: IntakeHarness, reason: str) -> None:
    """An authentic but unusable webhook is not queued, but kept in quarantine for replay."""
    topics = [m.topic for m in harness.publisher.messages]
    assert topics == ["webhooks.quarantine"]
    assert harness.publisher.messages[0].attributes["reason"] == reason


def test_missing_call_id_is_400(harness: IntakeHarness) -> None:
    outcome = harness.post(event_body("post_call", resource_id=None, id=None))
    assert outcome.status == 400
    assert outcome.body["error"] == "missing_call_id"
    assert_only_quarantined(harness, "missing_call_id")


@pytest.mark.parametrize("call_id", ["../x", "CAL/../../etc", "CAL 1", "a" * 65, "CAL\n1"])
def test_invalid_call_id_is_400(harness: IntakeHarness, call_id: str) -> None:
    outcome = harness.post(event_body("post_call", resource_id=call_id))
    assert outcome.status == 400
    assert outcome.body["error"] == "invalid_call_id"
    assert_only_quarantined(harness, "invalid_call_id")


def test_unparseable_typed_field_is_400_invalid_payload(harness: IntakeHarness) -> None:
    outcome = harness.post(event_body("post_call", timestamp="yesterday-ish"))
    assert outcome.status == 400
    assert outcome.body["error"] == "invalid_payload"
    assert "timestamp" in outcome.body["message"]
    assert_only_quarantined(harness, "invalid_payload")


HUGE = "1" + "0" * 5000  # past Python's 4,300-digit limit on reading an integer


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        # numbers no id or count can be: refused, and kept once the signature holds
        ('"duration": "1e400"', 400, "invalid_payload"),
        ('"duration": 1e400', 400, "invalid_payload"),
        ('"duration": NaN', 400, "invalid_payload"),
        ('"resource_id": null, "id": Infinity', 400, "invalid_payload"),
        ('"resource_id": null, "id": NaN', 400, "invalid_payload"),
        ('"resource_id": null, "id": 1' + "0" * 400, 400, "invalid_call_id"),
        # JSON Python reads but register-call could neither store (Spanner's JSON type) nor
        # serialise: refused, and kept, once the signature holds
        ('"x": NaN', 400, "invalid_payload"),
        ('"x": [1, Infinity]', 400, "invalid_payload"),
        ('"x": {"y": -Infinity}', 400, "invalid_payload"),
        ('"x": 1e400', 400, "invalid_payload"),
        ('"tags": [1E+309]', 400, "invalid_payload"),
        ('"x": 1' + "0" * 400, 400, "invalid_payload"),  # an integer past any double
        ('"duration": 1' + "0" * 400, 400, "invalid_payload"),  # typed fields are INT64
        ('"recording_duration": 99999999999999999999', 400, "invalid_payload"),
        ('"duration": "99999999999999999999"', 400, "invalid_payload"),
        ('"x": [-1' + "0" * 309 + "]", 400, "invalid_payload"),
        ('"x": "\\ud800"', 400, "invalid_payload"),
        ('"x": {"\\udfff": 1}', 400, "invalid_payload"),
        ('"x": ["a\\udc00\\ud83d"]', 400, "invalid_payload"),
        ('"changes": ["\\ud800"]', 400, "invalid_payload"),
        ('"x": ' + "[" * 64 + "]" * 64, 400, "invalid_payload"),  # 65 levels
        ('"x": ' + "{" * 64 + "}" * 64, 400, "malformed_json"),  # objects need keys
        ('"x": ' + '{"a": ' * 64 + "1" + "}" * 64, 400, "invalid_payload"),
        ('"x": ' + "[" * 500 + "]" * 500, 400, "invalid_payload"),
        ('"x": ' + "[" * 800 + "]" * 800, 400, "invalid_payload"),
        # JSON that Python cannot read: refused before any lookup
        ('"duration": ' + HUGE, 400, "malformed_json"),
        ('"extra": ' + "[" * 30_000 + "]" * 30_000, 400, "malformed_json"),
    ],
)
def test_numbers_and_nesting_out_of_range_are_refused(
    harness: IntakeHarness, fields: str, status: int, error: str
) -> None:
    body = f'{{"company_resource_id": "{COMPANY_ID}", "resource_id": "{POST_CALL_ID}", {fields}}}'
    outcome = harness.post(body.encode())
    assert (outcome.status, outcome.body["error"]) == (status, error)
    if error == "malformed_json":
        assert harness.publisher.messages == []
    else:
        assert_only_quarantined(harness, error)


@pytest.mark.parametrize(
    "fields",
    [
        '"x": ' + "[" * 63 + "]" * 63,  # 64 levels, the limit
        '"x": "\\ud83d\\ude00", "y": "caf\\u00e9"',  # a surrogate pair is one character
        '"x": 1e308, "y": -0.0, "z": 1e-400',  # finite
        '"x": "NaN Infinity"',
    ],
)
def test_json_at_the_limits_of_what_the_pipeline_takes_is_accepted(
    harness: IntakeHarness, fields: str
) -> None:
    body = f'{{"company_resource_id": "{COMPANY_ID}", "resource_id": "{POST_CALL_ID}", {fields}}}'
    outcome = harness.post(body.encode())
    assert outcome.status == 202, outcome.body
    (message,) = received(harness)
    assert register_all([message]) == ["ignored_event_type"]  # a Pre-Call's shape


def test_an_unusable_payload_is_refused_without_quoting_it(harness: IntakeHarness) -> None:
    body = event_body("post_call", customer_name="Marisol \ud800", note=float("nan"))
    outcome = harness.post(body)
    assert (outcome.status, outcome.outcome) == (400, "invalid_payload")
    assert "Marisol" not in json.dumps(outcome.body)
    assert_only_quarantined(harness, "invalid_payload")


@pytest.mark.parametrize(
    ("company_id", "status", "error"),
    [
        ("Infinity", 400, "missing_company_id"),
        ("NaN", 400, "missing_company_id"),
        ("1e400", 400, "missing_company_id"),
        ("1" + "0" * 400, 400, "invalid_company_id"),
        ("381234567.5", 400, "invalid_company_id"),
        ('"COM\\ud800x"', 400, "invalid_company_id"),
        ('"COM/../other"', 400, "invalid_company_id"),
        ('"' + "C" * 65 + '"', 400, "invalid_company_id"),
        (HUGE, 400, "malformed_json"),
    ],
)
def test_company_id_that_is_no_callrail_id_is_refused_before_any_lookup(
    harness: IntakeHarness, company_id: str, status: int, error: str
) -> None:
    body = f'{{"company_id": {company_id}, "resource_id": "{POST_CALL_ID}"}}'.encode()
    outcome = harness.post(body)
    assert (outcome.status, outcome.body["error"]) == (status, error)
    assert harness.companies.calls == []
    assert harness.publisher.messages == []


def test_legacy_company_id_as_whole_float_finds_the_company(harness: IntakeHarness) -> None:
    body = event_body("post_call", company_resource_id=None, company_id=float(LEGACY_COMPANY_ID))
    assert harness.post(body).status == 202


@pytest.mark.parametrize(
    ("offset", "status"),
    [
        (timedelta(hours=-25), 401),
        (timedelta(hours=25), 401),
        (timedelta(hours=-24, seconds=-1), 401),
        (timedelta(hours=-24), 202),
        (timedelta(hours=-23, minutes=59), 202),
        (timedelta(hours=23), 202),
        (timedelta(minutes=-3), 202),
    ],
)
def test_timestamp_tolerance_window(harness: IntakeHarness, offset: timedelta, status: int) -> None:
    sent = (NOW + offset).astimezone(PACIFIC).isoformat()
    outcome = harness.post(event_body("post_call", timestamp=sent))
    assert outcome.status == status, outcome.body
    if status == 401:
        assert outcome.body["error"] == "stale_webhook"
        assert harness.publisher.messages == []


def test_naive_timestamp_is_taken_as_utc(harness: IntakeHarness) -> None:
    sent = (NOW - timedelta(hours=25)).replace(tzinfo=None).isoformat()
    assert harness.post(event_body("post_call", timestamp=sent)).status == 401


def test_publish_failure_is_503(make_intake: Callable[..., IntakeHarness]) -> None:
    harness = make_intake(publisher=FailingPublisher())
    outcome = harness.post(event_body("post_call"))
    assert outcome.status == 503
    assert outcome.body["error"] == "queue_unavailable"
    assert outcome.fields["call_id"] == POST_CALL_ID
    assert harness.publisher.attempts == [CALLS_TOPIC]


# -- correlation ids --------------------------------------------------------------------------------


def test_correlation_id_from_traceparent(harness: IntakeHarness) -> None:
    outcome = harness.post(
        event_body("post_call"),
        extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    assert outcome.correlation_id == TRACE_ID
    assert received(harness)[0].correlation_id == TRACE_ID
    assert harness.publisher.messages[0].attributes["correlation_id"] == TRACE_ID


def test_correlation_id_from_cloud_trace_context(harness: IntakeHarness) -> None:
    trace = "105445aa7843bc8bf206b12000100000"
    outcome = harness.post(
        event_body("post_call"), extra_headers={"X-Cloud-Trace-Context": f"{trace}/1;o=1"}
    )
    assert outcome.correlation_id == trace


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
        {"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
        {"x-cloud-trace-context": "not-a-trace/1;o=1"},
        {"x-cloud-trace-context": f"{'0' * 32}/1;o=1"},
    ],
)
def test_invalid_or_missing_trace_gives_a_random_correlation_id(headers: dict[str, str]) -> None:
    first = correlation_id_from(headers)
    second = correlation_id_from(headers)
    assert HEX32.fullmatch(first)
    assert first != second
    assert first != "0" * 32


def test_traceparent_wins_over_cloud_trace_context() -> None:
    headers = {
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
    }
    assert correlation_id_from(headers) == TRACE_ID


def test_error_answers_carry_the_correlation_id(harness: IntakeHarness) -> None:
    outcome = harness.post(
        b"{", extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    )
    assert outcome.body["correlation_id"] == TRACE_ID == outcome.correlation_id


# -- event keys -----------------------------------------------------------------------------------


def test_same_post_call_twice_has_the_same_event_key(harness: IntakeHarness) -> None:
    body = event_body("post_call")
    harness.post(body)
    harness.post(body)
    harness.post(json.dumps(json.loads(body), indent=1).encode())  # re-serialised replay
    keys = {m.attributes["event_key"] for m in harness.publisher.messages}
    assert len(harness.publisher.messages) == 3
    assert keys == {f"completion:{POST_CALL_ID}"}


def test_two_call_modified_bodies_have_different_event_keys(harness: IntakeHarness) -> None:
    first = event_body("call_modified")
    second = event_body("call_modified", changes=["tags"], tags=["New Patient"])
    harness.post(first)
    harness.post(second)
    harness.post(first)  # a redelivery of the first keeps its key
    keys = [m.attributes["event_key"] for m in harness.publisher.messages]
    assert keys[0] != keys[1]
    assert keys[0] == keys[2]
    assert all(re.fullmatch(rf"body:{POST_CALL_ID}:[0-9a-f]{{40}}", k) for k in keys)


def register_all(messages: list[CallReceived]) -> list[str]:
    """Run the messages through register-call (in-memory ledger); its outcome for each."""
    register = RegisterCall(
        InMemoryArchive(), InMemoryEventLedger(), RecordingPublisher(), "calls.registered"
    )
    return [register(message)["outcome"] for message in messages]


@pytest.mark.parametrize("event", ["post_call", "outbound_post_call"])
def test_the_same_completion_through_any_completion_url_is_one_event(
    harness: IntakeHarness, event: str
) -> None:
    """The URL's event type is not signed: it cannot make a second completion of one body."""
    body = event_body(event)
    hints = [None, "post-call", "outbound-post-call"]
    for hint in hints:
        assert harness.post(body, hint=hint).status == 202

    messages = received(harness)
    assert {m.event_key for m in messages} == {f"completion:{messages[0].call_id}"}
    assert register_all(messages) == ["registered", "duplicate", "duplicate"]


def test_the_same_body_through_other_urls_is_one_more_event_at_most(
    harness: IntakeHarness,
) -> None:
    """A completion posted to modification URLs is keyed by its body there (see the next
    test for why it cannot take the completion key): one more event however many times."""
    body = event_body("post_call")
    for hint in [None, "call-modified", "outbound-call-modified", "call-modified"]:
        assert harness.post(body, hint=hint).status == 202

    messages = received(harness)
    assert len({m.event_key for m in messages}) == 2
    assert register_all(messages) == ["registered", "registered", "duplicate", "duplicate"]


def test_a_modification_through_any_url_is_one_event(harness: IntakeHarness) -> None:
    body = event_body("call_modified")
    hints = [None, "post-call", "outbound-post-call", "call-modified", "outbound-call-modified"]
    for hint in hints:
        assert harness.post(body, hint=hint).status == 202
    messages = received(harness)
    assert len({m.event_key for m in messages}) == 1


def test_a_routing_event_that_looks_like_a_completion_leaves_the_post_call_its_key(
    harness: IntakeHarness,
) -> None:
    """A Call Routing Complete (or Pre-Call) body with null recording fields has a
    completion's shape; through its own URL it must not take the call's completion key, or
    the real Post-Call would be dropped as a duplicate."""
    routing = load_event("pre_call")
    routing.update(resource_id=POST_CALL_ID, recording=None, recording_duration=None)
    for hint in ["call-routing-complete", "pre-call"]:
        assert harness.post(json.dumps(routing).encode(), hint=hint).status == 202
    assert harness.post(event_body("post_call")).status == 202

    *routed, post_call = received(harness)
    assert post_call.event_key == f"completion:{POST_CALL_ID}"
    assert all(m.event_key != post_call.event_key for m in routed)
    assert register_all([*routed, post_call])[-1] == "registered"


def test_a_body_that_is_no_completion_never_takes_the_calls_completion_key(
    harness: IntakeHarness,
) -> None:
    """A signed Pre-Call posted to the Post-Call URL (a captured one, replayed within the
    window) must not take the key of the Post-Call that comes later, or that one would be
    dropped as a duplicate."""
    pre_call = event_body("pre_call", resource_id=POST_CALL_ID)
    assert harness.post(pre_call, hint="post-call").status == 202
    assert harness.post(event_body("post_call")).status == 202

    first, second = received(harness)
    assert first.event_type is EventType.POST_CALL  # the hint still sets the type
    assert first.event_key.startswith(f"body:{POST_CALL_ID}:")
    assert second.event_key == f"completion:{POST_CALL_ID}"
    assert register_all([first, second]) == ["registered", "registered"]


def test_event_key_function() -> None:
    assert event_key(EventType.POST_CALL, "CAL1", b"a") == event_key(
        EventType.POST_CALL, "CAL1", b"b"
    )
    assert event_key(EventType.POST_CALL, "CAL1", b"a") == "completion:CAL1"
    assert event_key(EventType.OUTBOUND_POST_CALL, "CAL1", b"a") == "completion:CAL1"
    modified = event_key(EventType.CALL_MODIFIED, "CAL1", b"a")
    assert re.fullmatch(r"body:CAL1:[0-9a-f]{40}", modified)
    assert modified == event_key(EventType.OUTBOUND_CALL_MODIFIED, "CAL1", b"a")
    assert modified != event_key(EventType.CALL_MODIFIED, "CAL1", b"b")
    assert event_key(EventType.POST_CALL, "CAL1", b"a") != event_key(
        EventType.POST_CALL, "CAL2", b"a"
    )


# -- the replay path ----------------------------------------------------------------------------


def test_replay_judges_the_timestamp_at_the_original_receipt_time(harness: IntakeHarness) -> None:
    captured_at = NOW - timedelta(days=30)
    body = event_body("post_call", timestamp=(captured_at - timedelta(minutes=2)).isoformat())
    assert harness.post(body).status == 401  # too old for a live request

    outcome = harness.intake.handle(harness.request(body), received_at=captured_at)
    assert outcome.status == 202
    (message,) = received(harness)
    assert message.webhook.received_at == captured_at


def test_replay_with_keep_unknown_false_does_not_quarantine_again(harness: IntakeHarness) -> None:
    body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
    outcome = harness.intake.handle(harness.request(body), received_at=NOW, keep_unknown=False)
    assert outcome.status == 404
    assert outcome.fields["quarantined"] is False
    assert "still unknown" in outcome.body["message"]
    assert harness.publisher.messages == []


def test_replay_with_keep_unknown_false_on_directory_failure(harness: IntakeHarness) -> None:
    harness.companies.error = TimeoutError()
    outcome = harness.intake.handle(harness.request(event_body("post_call")), keep_unknown=False)
    assert outcome.status == 503
    assert outcome.fields["quarantined"] is False
    assert harness.publisher.messages == []


# -- the log line ---------------------------------------------------------------------------------

PII = ["+15035550199", "5035550199", "503-555-0199", "Marisol", "Tenorio", "dana.whitfield"]


def outcome_cases() -> list[tuple[str, str, int]]:
    return [
        ("accepted", "INFO", 202),
        ("invalid_signature", "WARNING", 401),
        ("unknown_company", "WARNING", 404),
        ("stale_webhook", "WARNING", 401),
        ("malformed_json", "WARNING", 400),
        ("queue_unavailable", "ERROR", 503),
        ("directory_unavailable", "ERROR", 503),
    ]


@pytest.mark.parametrize(("case", "severity", "status"), outcome_cases())
def test_log_outcome_is_one_json_line_with_severity_and_no_pii(
    make_intake: Callable[..., IntakeHarness],
    capture_logs: Callable[[str], LogCapture],
    case: str,
    severity: str,
    status: int,
) -> None:
    logs = capture_logs("callpipe.intake")
    body = event_body("post_call")
    harness = make_intake(publisher=FailingPublisher() if case == "queue_unavailable" else None)
    signature = sign(harness.token, body)
    if case == "invalid_signature":
        signature = sign("wrong", body)
    elif case == "unknown_company":
        body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
        signature = sign(harness.token, body)
    elif case == "stale_webhook":
        body = event_body("post_call", timestamp="2020-01-01T00:00:00+00:00")
        signature = sign(harness.token, body)
    elif case == "malformed_json":
        body = body[:-1] + b" +15035550199 Marisol"
    elif case == "directory_unavailable":
        harness.companies.error = RuntimeError("lookup of +15035550199 failed")
    outcome = harness.post(body, signature=signature)
    assert outcome.status == status
    assert outcome.outcome == case

    log_outcome(outcome, latency_ms=3.14159)

    lines = logs.lines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == severity
    assert entry["message"] == f"webhook {case}"
    assert entry["status"] == status
    assert entry["outcome"] == case
    assert entry["step"] == "intake"
    assert entry["correlation_id"] == outcome.correlation_id
    assert entry["latency_ms"] == 3.14
    for secret in PII:
        assert secret not in lines[0]
    assert harness.token not in lines[0]
    if status == 202:
        assert entry["tenant_id"] == TENANT_ID
        assert entry["call_id"] == POST_CALL_ID


# -- on an event loop (the served function) -------------------------------------------------------


class OnTheLoop:
    """One of the thread-based publisher doubles, awaited as the served function awaits its
    asynchronous publisher."""

    def __init__(self, publisher: RecordingPublisher | FailingPublisher) -> None:
        self.publisher = publisher

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        await asyncio.sleep(0)  # a real publish yields to the loop while Pub/Sub answers
        return self.publisher.publish(topic, data, attributes)


def test_handle_async_publishes_with_the_loops_publisher(harness: IntakeHarness) -> None:
    publisher = RecordingPublisher()
    body = event_body("post_call")
    outcome = asyncio.run(harness.intake.handle_async(harness.request(body), OnTheLoop(publisher)))

    assert outcome.status == 202
    assert outcome.fields["message_id"] == "msg-1"
    assert harness.publisher.messages == []  # the intake's own publisher is not used
    (published,) = publisher.messages
    assert published.topic == CALLS_TOPIC
    message = CallReceived.from_data(published.data)
    assert message.call_id == POST_CALL_ID and message.webhook.body == body
    assert published.attributes["correlation_id"] == outcome.correlation_id


def test_handle_async_loads_an_uncached_company_off_the_loop(
    harness: IntakeHarness, companies: InMemoryCompanies
) -> None:
    publisher = OnTheLoop(RecordingPublisher())

    async def twice() -> tuple[int, list[Any]]:
        loop_thread = threading.get_ident()
        first = await harness.intake.handle_async(
            harness.request(event_body("post_call")), publisher
        )
        second = await harness.intake.handle_async(
            harness.request(event_body("post_call", resource_id=OTHER_CALL_ID)), publisher
        )
        return loop_thread, [first, second]

    loop_thread, outcomes = asyncio.run(twice())
    assert [o.status for o in outcomes] == [202, 202]
    assert companies.calls == [COMPANY_ID]  # the second request found it cached
    assert companies.threads and loop_thread not in companies.threads


def test_handle_async_answers_an_expired_company_at_once_and_reloads_it_off_the_loop(
    harness: IntakeHarness, companies: InMemoryCompanies
) -> None:
    publisher = OnTheLoop(RecordingPublisher())
    harness.post(event_body("post_call"))  # loaded
    harness.limiter_clock.advance(61)  # the directory's clock: past the TTL
    release = threading.Event()

    def slow_lookup(key: str) -> CompanyMapping | None:
        release.wait(10)  # a reload that takes its time
        return companies(key)

    harness.intake._directory._lookup = slow_lookup

    async def on_the_loop() -> tuple[int, IntakeOutcome]:
        request = harness.request(event_body("post_call", resource_id=OTHER_CALL_ID))
        # answered while the reload still waits, not after it
        outcome = await asyncio.wait_for(harness.intake.handle_async(request, publisher), 5)
        return threading.get_ident(), outcome

    try:
        loop_thread, outcome = asyncio.run(on_the_loop())
    finally:
        release.set()
    assert outcome.status == 202
    wait_until(lambda: len(companies.threads) == 2)  # reloaded, in the background
    assert companies.threads[1] != loop_thread


def test_handle_async_answers_503_when_pubsub_refuses(harness: IntakeHarness) -> None:
    outcome = asyncio.run(
        harness.intake.handle_async(
            harness.request(event_body("post_call")), OnTheLoop(FailingPublisher())
        )
    )
    assert (outcome.status, outcome.outcome) == (503, "queue_unavailable")
    assert "DeadlineExceeded" in outcome.fields["detail"]
    assert outcome.fields["call_id"] == POST_CALL_ID


def test_handle_async_quarantines_an_unknown_company(harness: IntakeHarness) -> None:
    publisher = RecordingPublisher()
    body = event_body("post_call", company_resource_id=UNKNOWN_COMPANY, company_id=None)
    outcome = asyncio.run(harness.intake.handle_async(harness.request(body), OnTheLoop(publisher)))
    assert (outcome.status, outcome.outcome) == (404, "unknown_company")
    assert outcome.fields["quarantined"] is True
    assert [m.topic for m in publisher.messages] == [QUARANTINE_TOPIC]
    assert QuarantinedWebhook.from_data(publisher.messages[0].data).webhook.body == body

    refused = asyncio.run(
        harness.intake.handle_async(harness.request(body), OnTheLoop(FailingPublisher()))
    )
    assert refused.status == 404 and refused.fields["quarantined"] is False
    assert "not kept" in refused.body["message"]


def test_a_client_gone_mid_upload_is_a_logged_refusal_with_the_trace_id() -> None:
    outcome = client_disconnected({"Traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    assert (outcome.status, outcome.outcome) == (400, "client_disconnected")
    assert outcome.body["correlation_id"] == outcome.correlation_id == TRACE_ID
