"""CallRailWebhook: real payload quirks (string booleans and numbers, legacy ids, extras)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from callpipe.callrail.webhook import CallRailWebhook, EventType
from tests.unit.conftest import ACCOUNT_ID, COMPANY_ID, LEGACY_COMPANY_ID, POST_CALL_ID, load_event


def parse(name: str) -> CallRailWebhook:
    return CallRailWebhook.model_validate(load_event(name))


def test_post_call_string_booleans_and_numbers_are_coerced() -> None:
    webhook = parse("post_call")
    assert webhook.answered is True
    assert webhook.voicemail is False
    assert webhook.spam is False
    assert webhook.first_call is False
    assert webhook.duration == 184
    assert webhook.recording_duration == 176


def test_post_call_legacy_numeric_ids_become_strings() -> None:
    webhook = parse("post_call")
    assert webhook.company_id == LEGACY_COMPANY_ID
    assert webhook.id == "2931847562"
    assert webhook.resource_id == POST_CALL_ID
    assert webhook.company_resource_id == COMPANY_ID


def test_post_call_timestamps_keep_their_offset() -> None:
    webhook = parse("post_call")
    assert webhook.timestamp == datetime(2025, 3, 14, 17, 27, 41, 512000, tzinfo=UTC)
    assert webhook.timestamp is not None
    assert webhook.timestamp.utcoffset() == timedelta(hours=-7)
    assert webhook.start_time == datetime(
        2025, 3, 14, 10, 21, 3, 118000, tzinfo=timezone(timedelta(hours=-7))
    )


def test_unknown_and_unmodelled_fields_are_kept_as_extras() -> None:
    webhook = parse("post_call")
    extra = webhook.model_extra or {}
    assert extra["lead_score_breakdown"] == {"intent": 0.92, "urgency": "high", "model": "2025-02"}
    assert extra["customer_phone_number"] == "+15035550199"
    assert extra["callernum"] == "+15035550199"
    assert extra["datetime"] == "2025-03-14 17:21:03"
    assert extra["utm_content"] is None
    assert extra["milestones"]["first_touch"]["source"] == "Google Organic"
    dumped = webhook.model_dump()
    assert dumped["lead_score_breakdown"]["urgency"] == "high"


def test_every_field_of_the_payload_survives_a_round_trip() -> None:
    payload = load_event("post_call")
    dumped = CallRailWebhook.model_validate(payload).model_dump(exclude_unset=True)
    assert set(payload) <= set(dumped)


def test_call_id_prefers_resource_id_then_falls_back_to_legacy_id() -> None:
    assert parse("post_call").call_id == POST_CALL_ID
    payload = load_event("post_call")
    del payload["resource_id"]
    assert CallRailWebhook.model_validate(payload).call_id == "2931847562"
    assert CallRailWebhook.model_validate({}).call_id is None


def test_form_submission_call_id_is_its_id() -> None:
    assert parse("form_submission").call_id == "FOR6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6c"


def test_company_keys_resource_id_first_then_legacy_number() -> None:
    assert parse("post_call").company_keys == [COMPANY_ID, LEGACY_COMPANY_ID]


@pytest.mark.parametrize(
    ("payload", "keys"),
    [
        ({"company_id": 381234567}, ["381234567"]),
        ({"company_id": "381234567"}, ["381234567"]),
        ({"company_resource_id": COMPANY_ID}, [COMPANY_ID]),
        ({"company_resource_id": "  ", "company_id": 42}, ["42"]),
        ({}, []),
    ],
)
def test_company_keys_with_partial_ids(payload: dict[str, object], keys: list[str]) -> None:
    assert CallRailWebhook.model_validate(payload).company_keys == keys


@pytest.mark.parametrize(
    ("url", "account"),
    [
        (f"https://app.callrail.com/a/{ACCOUNT_ID}/calls/CAL1/timeline", ACCOUNT_ID),
        ("https://app.callrail.com/a/728790660", "728790660"),
        ("https://app.callrail.com/calls/CAL1/timeline", None),
        ("https://app.callrail.com/a/notanumber/calls", None),
        (None, None),
    ],
)
def test_callrail_account_id_comes_from_timeline_url(url: str | None, account: str | None) -> None:
    assert CallRailWebhook(timeline_url=url).callrail_account_id == account


def test_callrail_account_id_of_the_canonical_post_call() -> None:
    assert parse("post_call").callrail_account_id == ACCOUNT_ID


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("post_call", EventType.POST_CALL),
        ("call_modified", EventType.CALL_MODIFIED),
        ("outbound_post_call", EventType.OUTBOUND_POST_CALL),
        ("text_message", EventType.TEXT_MESSAGE_RECEIVED),
        ("form_submission", EventType.FORM_SUBMISSION),
    ],
)
def test_classify_canonical_events_by_shape(event: str, expected: EventType) -> None:
    assert parse(event).classify() is expected


def test_classify_outbound_modification() -> None:
    payload = load_event("outbound_post_call")
    payload["changes"] = ["note"]
    assert CallRailWebhook.model_validate(payload).classify() is EventType.OUTBOUND_CALL_MODIFIED


def test_classify_payload_without_completion_fields_is_pre_call() -> None:
    payload = {
        "resource_id": "CAL5d2a8e0c4b7f49a1e3c6d8b0a2f4e697",
        "company_resource_id": COMPANY_ID,
        "direction": "inbound",
    }
    assert CallRailWebhook.model_validate(payload).classify() is EventType.PRE_CALL


def test_classify_real_pre_call_shape_without_hint_is_pre_call_not_post_call() -> None:
    """CallRail's Pre-Call carries answered=false, duration=0, call_type=missed (support docs).

    Classified as Post-Call, a Pre-Call would get the event key ``post_call:<call>``;
    register-call would forward it, and the real Post-Call 20 minutes later would have the
    same key and be dropped as a duplicate.
    """
    assert parse("pre_call").classify() is EventType.PRE_CALL


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"recording": None}, EventType.POST_CALL),  # missed call: no recording, key present
        ({"recording": None, "recording_duration": None}, EventType.POST_CALL),
        ({"recording_player": None}, EventType.POST_CALL),
        ({}, EventType.PRE_CALL),
    ],
)
def test_missed_call_post_call_is_told_apart_from_pre_call_by_recording_fields(
    changes: dict[str, object], expected: EventType
) -> None:
    """A missed call's Post-Call looks like a Pre-Call (answered false, duration 0)."""
    payload = load_event("pre_call")
    payload.update(changes)
    assert CallRailWebhook.model_validate(payload).classify() is expected


@pytest.mark.parametrize("event", ["post_call", "pre_call", "text_message", "form_submission"])
@pytest.mark.parametrize("hint", [EventType.CALL_MODIFIED, EventType.PRE_CALL])
def test_hint_overrides_the_shape(event: str, hint: EventType) -> None:
    assert parse(event).classify(hint) is hint


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("post-call", EventType.POST_CALL),
        ("Post-Call", EventType.POST_CALL),
        ("post_call", EventType.POST_CALL),
        ("Call Modified", EventType.CALL_MODIFIED),
        ("call-modified", EventType.CALL_MODIFIED),
        ("Outbound Post Call", EventType.OUTBOUND_POST_CALL),
        ("outbound-call-modified", EventType.OUTBOUND_CALL_MODIFIED),
        ("  Text Message Received ", EventType.TEXT_MESSAGE_RECEIVED),
        ("form-submission", EventType.FORM_SUBMISSION),
        ("pre-call", EventType.PRE_CALL),
        ("call-routing-complete", EventType.CALL_ROUTING_COMPLETE),
        ("Convert Assist Complete", EventType.CONVERT_ASSIST_COMPLETE),
    ],
)
def test_event_type_from_hint(hint: str, expected: EventType) -> None:
    assert EventType.from_hint(hint) is expected


@pytest.mark.parametrize(
    "hint", ["", "unknown", "post-calls", "postcall", "post/call", "../post-call"]
)
def test_event_type_from_unknown_hint_is_none(hint: str) -> None:
    assert EventType.from_hint(hint) is None


PIPELINE_EVENTS = {
    EventType.POST_CALL,
    EventType.OUTBOUND_POST_CALL,
    EventType.CALL_MODIFIED,
    EventType.OUTBOUND_CALL_MODIFIED,
}


@pytest.mark.parametrize("event_type", list(EventType))
def test_feeds_pipeline_only_for_call_completions_and_modifications(event_type: EventType) -> None:
    assert event_type.feeds_pipeline is (event_type in PIPELINE_EVENTS)
    assert event_type.is_call_completion is (
        event_type in {EventType.POST_CALL, EventType.OUTBOUND_POST_CALL}
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" false ", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        (True, True),
        (False, False),
        ("", None),
        ("null", None),
        (None, None),
    ],
)
def test_loose_booleans(raw: object, expected: bool | None) -> None:
    assert CallRailWebhook.model_validate({"answered": raw}).answered is expected


def test_unrecognised_boolean_string_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CallRailWebhook.model_validate({"answered": "maybe"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("184", 184),
        (" 13 ", 13),
        ("184.0", 184),
        (184, 184),
        ("", None),
        ("null", None),
        (None, None),
    ],
)
def test_loose_integers(raw: object, expected: int | None) -> None:
    assert CallRailWebhook.model_validate({"duration": raw}).duration == expected


def test_non_numeric_duration_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CallRailWebhook.model_validate({"duration": "three minutes"})


def test_blank_timestamp_is_none() -> None:
    assert CallRailWebhook.model_validate({"timestamp": "  "}).timestamp is None


def test_call_modified_keeps_its_changes() -> None:
    webhook = parse("call_modified")
    assert webhook.changes == ["tags", "note", "value"]
    assert webhook.tags == ["New Patient", "Emergency", "Booked"]
