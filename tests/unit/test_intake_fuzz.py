"""Intake against generated webhook bodies: every one gets an answer, none an exception.

The bodies are signed with the company's token, so they get past the signature to the
payload model and the messages built from it. What intake accepts goes on through
register-call, which must be able to store and pass it on: intake must not accept what
the next step can never process. The examples are derived from the test's own code
(``derandomize``), so every run checks the same ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpipe.messages import CallReceived, CallRegistered, QuarantinedWebhook
from callpipe.registration import RegisterCall
from tests.unit.conftest import (
    COMPANY_ID,
    LEGACY_COMPANY_ID,
    InMemoryArchive,
    InMemoryEventLedger,
    IntakeHarness,
    RecordingPublisher,
    event_body,
)

# The fields the payload model reads, and a few it keeps as extras.
FIELDS = [
    "resource_id",
    "id",
    "company_resource_id",
    "company_id",
    "timestamp",
    "start_time",
    "created_at",
    "direction",
    "answered",
    "voicemail",
    "spam",
    "first_call",
    "duration",
    "recording_duration",
    "recording",
    "call_type",
    "timeline_url",
    "changes",
    "tags",
    "form_data",
    "content",
    "customer_phone_number",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**60, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "true",
            "false",
            "0",
            "184",
            "1e400",
            "NaN",
            " ",
            "2025-03-14T15:00:00Z",
            "2020-01-01T00:00:00Z",
            # JSON carries these as \ud800 escapes: lone surrogates are no Unicode text
            "\ud800",
            "x\udfff",
            "\udc00\ud800",
            "\ud83d\ude00",  # a pair: one character, fine
        ]
    )
)
values = scalars | st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
# each field present or not, with a value of any JSON type; plus fields nobody knows
documents = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, values)),
    st.dictionaries(st.text(max_size=12), values, max_size=3),
)
company_ids = st.sampled_from([COMPANY_ID, int(LEGACY_COMPANY_ID), float(LEGACY_COMPANY_ID)])
# arrays nested this deep, spliced into the body (json.dumps stops at Python's recursion
# limit): around the limit the pipeline takes, and deep enough to break serialisers
nestings = st.none() | st.sampled_from([1, 62, 63, 64, 79, 80, 199, 200, 500, 800])


EXAMPLES = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# Past the signature, with a known company, these are the only possible answers.
AUTHENTIC = {"accepted", "invalid_payload", "missing_call_id", "invalid_call_id", "stale_webhook"}


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def assert_spanner_json_takes(payload: dict[str, Any]) -> None:
    """What Spanner's JSON type (Calls.Webhook) takes: strict JSON (no NaN or Infinity) in
    UTF-8, nested at most 80 levels."""
    json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert depth(payload) <= 80
    assert all(abs(n) <= sys.float_info.max for n in numbers(payload))  # 1e400 is refused


def numbers(value: Any) -> list[int | float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return [value] if type(value) in (int, float) else []


def register(message: CallReceived) -> None:
    """Run an accepted message through register-call, as its push subscription would."""
    ledger = InMemoryEventLedger()
    publisher = RecordingPublisher()
    register_call = RegisterCall(InMemoryArchive(), ledger, publisher, "calls.registered")

    result = register_call(message)  # a PermanentError or any other exception fails

    if not message.event_type.feeds_pipeline:
        assert result["outcome"] == "ignored_event_type"
        return
    assert result["outcome"] == "registered"
    (stored,) = ledger.calls.values()
    assert_spanner_json_takes(stored)
    (published,) = publisher.messages
    assert CallRegistered.from_data(published.data).webhook == json.loads(message.webhook.body)


def check_answer(harness: IntakeHarness, body: bytes) -> str:
    """Post the body; check the answer's shape and that what was published reads back, and
    that an accepted call goes through register-call."""
    outcome = harness.post(body)

    assert outcome.status in {202, 400, 401, 404}, outcome.body
    assert ("error" in outcome.body) is (outcome.status != 202)
    model = CallReceived if outcome.status == 202 else QuarantinedWebhook
    for published in harness.publisher.messages:
        # what intake publishes, the next step can read, with the body byte for byte
        assert model.from_data(published.data).webhook.body == body
    if outcome.status == 202:
        register(CallReceived.from_data(harness.publisher.messages[0].data))
    return outcome.outcome


@EXAMPLES
@given(document=documents, company=company_ids, nesting=nestings)
def test_any_signed_body_is_answered_and_what_is_kept_reads_back(
    make_intake: Callable[..., IntakeHarness],
    document: dict[str, Any],
    company: Any,
    nesting: int | None,
) -> None:
    harness = make_intake()
    key = "company_resource_id" if company == COMPANY_ID else "company_id"
    body = json.dumps({**document, key: company}).encode()  # NaN, Infinity as JS writes them
    if nesting is not None:
        body = body[:-1] + b', "nested": ' + b"[" * nesting + b"]" * nesting + b"}"

    outcome = check_answer(harness, body)

    # every example gets past the signature to the payload (none is refused earlier)
    assert outcome in AUTHENTIC
    topics = [m.topic for m in harness.publisher.messages]
    if outcome == "accepted":
        assert topics == ["calls.received"]
    elif outcome == "stale_webhook":
        assert topics == []  # outside the window: a captured request replayed, not kept
    else:
        assert topics == ["webhooks.quarantine"]


# extra fields (CallRail adds fields over time, and keeps lists and objects in some)
extra_keys = st.text(max_size=8) | st.sampled_from(["\ud800", "k\udfff", "\ud83d\ude00"])
extras = st.dictionaries(extra_keys, values, max_size=4)


@EXAMPLES
@given(
    extra=extras,
    changes=st.none() | st.lists(values, max_size=3),
    tags=st.none() | st.lists(values, max_size=3),
    nesting=nestings,
)
def test_a_valid_post_call_with_any_extra_content_is_refused_or_goes_through_register_call(
    make_intake: Callable[..., IntakeHarness],
    extra: dict[str, Any],
    changes: list[Any] | None,
    tags: list[Any] | None,
    nesting: int | None,
) -> None:
    harness = make_intake()
    document = {**extra, **json.loads(event_body("post_call"))}
    if changes is not None:
        document["changes"] = changes  # a Call Modified, then
    if tags is not None:
        document["tags"] = tags
    body = json.dumps(document).encode()
    if nesting is not None:
        body = body[:-1] + b', "nested": ' + b"[" * nesting + b"]" * nesting + b"}"

    outcome = check_answer(harness, body)

    assert outcome in {"accepted", "invalid_payload"}


# id-like text with the characters that break ids (lone surrogates included: JSON carries
# them as \ud800 escapes), and any other text
any_text = st.lists(
    st.sampled_from(["C", "O", "M", "7", "_", "-", ".", "/", " ", "\ud800", "\udfff"])
    | st.characters(),
    max_size=70,
).map("".join)


@EXAMPLES
@given(company_resource_id=any_text | values, company_id=any_text | values, signed=st.booleans())
def test_any_company_id_signed_or_not_is_answered(
    make_intake: Callable[..., IntakeHarness],
    company_resource_id: Any,
    company_id: Any,
    signed: bool,
) -> None:
    harness = make_intake()
    if not signed:
        harness.token = "not-the-companys-token"
    document = {
        **json.loads(event_body("post_call")),
        "company_resource_id": company_resource_id,
        "company_id": company_id,
    }
    check_answer(harness, json.dumps(document).encode())
