"""Which call fields the API returns: the defaults always, the others only via ``fields=``.

The lists follow CallRail's API v3 call object. A stored call may hold any of them; a known
field the file lacks comes back as null, as CallRail answers for a field with no value.
Unknown names in ``fields=`` are ignored, except names the stored call actually holds
(``account_id`` for example), which are returned like any other optional field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_FIELDS: tuple[str, ...] = (
    "answered",
    "business_phone_number",
    "customer_city",
    "customer_country",
    "customer_name",
    "customer_phone_number",
    "customer_state",
    "direction",
    "duration",
    "id",
    "recording",
    "recording_duration",
    "recording_player",
    "start_time",
    "tracking_phone_number",
    "voicemail",
)

OPTIONAL_FIELDS: frozenset[str] = frozenset(
    {
        "agent_email",
        "blocked_number",
        "call_highlights",
        "call_summary",
        "call_type",
        "campaign",
        "company_id",
        "company_name",
        "company_time_zone",
        "conversational_transcript",
        "created_at",
        "custom",
        "detail_tags",
        "device_type",
        "fbclid",
        "first_call",
        "formatted_business_phone_number",
        "formatted_call_type",
        "formatted_customer_location",
        "formatted_customer_name",
        "formatted_customer_name_or_phone_number",
        "formatted_customer_phone_number",
        "formatted_duration",
        "formatted_tracking_phone_number",
        "formatted_tracking_source",
        "formatted_value",
        "ga",
        "gclid",
        "good_lead_call_id",
        "good_lead_call_time",
        "integration_data",
        "keypad_entries",
        "keywords",
        "keywords_spotted",
        "landing_page_url",
        "last_requested_url",
        "lead_status",
        "medium",
        "milestones",
        "msclkid",
        "note",
        "person_id",
        "prior_calls",
        "referrer_domain",
        "referring_url",
        "sentiment",
        "session_uuid",
        "source",
        "source_name",
        "speaker_percent",
        "tags",
        "timeline_url",
        "total_calls",
        "tracker_id",
        "transcription",
        "utm_campaign",
        "utm_content",
        "utm_medium",
        "utm_source",
        "utm_term",
        "utma",
        "utmb",
        "utmc",
        "utmv",
        "utmz",
        "value",
        "voice_assist_message",
        "waveforms",
        "zip_code",
    }
)


def parse_fields(raw: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``, order kept, duplicates dropped."""
    if not raw:
        return ()
    seen: dict[str, None] = {}
    for part in raw.split(","):
        name = part.strip()
        if name:
            seen[name] = None
    return tuple(seen)


def select_fields(call: Mapping[str, Any], requested: Iterable[str]) -> dict[str, Any]:
    out = {name: call.get(name) for name in DEFAULT_FIELDS}
    for name in requested:
        if name in out:
            continue
        if name in OPTIONAL_FIELDS or name in call:
            out[name] = call.get(name)
    return out
