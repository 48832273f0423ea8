"""Intake against generated webhook bodies: every one gets an answer, none an exception.

The bodies are signed with the company's token, so they get past the signature to the
payload model and the messages built from it. The examples are derived from the test's
own code (``derandomize``), so every run checks the same ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpipe.messages import CallReceived, QuarantinedWebhook
from tests.unit.conftest import COMPANY_ID, LEGACY_COMPANY_ID, IntakeHarness, event_body

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


EXAMPLES = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# Past the signature, with a known company, these are the only possible answers.
AUTHENTIC = {"accepted", "invalid_payload", "missing_call_id", "invalid_call_id", "stale_webhook"}


def check_answer(harness: IntakeHarness, body: bytes) -> str:
    """Post the body; check the answer's shape and that what was published reads back."""
    outcome = harness.post(body)

    assert outcome.status in {202, 400, 401, 404}, outcome.body
    assert ("error" in outcome.body) is (outcome.status != 202)
    model = CallReceived if outcome.status == 202 else QuarantinedWebhook
    for published in harness.publisher.messages:
        # what intake publishes, the next step can read, with the body byte for byte
        assert model.from_data(published.data).webhook.body == body
    return outcome.outcome


@EXAMPLES
@given(document=documents, company=company_ids)
def test_any_signed_body_is_answered_and_what_is_kept_reads_back(
    make_intake: Callable[..., IntakeHarness], document: dict[str, Any], company: Any
) -> None:
    harness = make_intake()
    key = "company_resource_id" if company == COMPANY_ID else "company_id"
    body = json.dumps({**document, key: company}).encode()  # NaN, Infinity as JS writes them

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
