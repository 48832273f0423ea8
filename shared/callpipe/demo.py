"""The demo tenant and realistic sample webhooks, for the local stack and the CLI."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

DEMO_TENANT_ID = "demo"
DEMO_TENANT_NAME = "Demo Kitchens & Baths"
DEMO_ACCOUNT_ID = "728790660"
DEMO_COMPANY_ID = "COM8154748ae6bd4e278a7cddd38a662f4f"
DEMO_LEGACY_COMPANY_ID = "155920786"


def new_call_id() -> str:
    return "CAL" + secrets.token_hex(16)


def sample_post_call(
    company_id: str = DEMO_COMPANY_ID,
    legacy_company_id: str = DEMO_LEGACY_COMPANY_ID,
    account_id: str = DEMO_ACCOUNT_ID,
    call_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A Post-Call webhook shaped like CallRail's (string booleans and duration included)."""
    sent = now or datetime.now(UTC)
    started = sent - timedelta(minutes=6)
    call = call_id or new_call_id()
    return {
        "answered": "true",
        "business_phone_number": "+15555550100",
        "call_type": "inbound",
        "company_id": int(legacy_company_id),
        "company_name": DEMO_TENANT_NAME,
        "company_resource_id": company_id,
        "company_time_zone": "America/Los_Angeles",
        "created_at": started.isoformat(timespec="milliseconds"),
        "customer_city": "Pasadena",
        "customer_country": "US",
        "customer_name": "Jordan Alvarez",
        "customer_phone_number": "+16265550187",
        "customer_state": "CA",
        "direction": "inbound",
        "duration": "184",
        "first_call": "true",
        "id": 2_000_000_000 + int(call[-6:], 16) % 100_000_000,
        "keywords": None,
        "lead_status": None,
        "milestones": {
            "first_touch": {"event_date": started.isoformat(), "source": "Google Organic"}
        },
        "note": None,
        "person_resource_id": "PERf0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        "recording": f"https://api.callrail.com/v3/a/{account_id}/calls/{call}/recording.json",
        "recording_duration": "178",
        "recording_player": f"https://app.callrail.com/calls/{call}/recording?access_key=demo",
        "resource_id": call,
        "source": "Google Organic",
        "source_name": "Website Pool",
        "spam": "false",
        "start_time": started.isoformat(timespec="milliseconds"),
        "tags": [],
        "timeline_url": f"https://app.callrail.com/a/{account_id}/calls/{call}/timeline",
        "timestamp": sent.isoformat(timespec="milliseconds"),
        "tracker_resource_id": "TRK9d2f4c1e8b7a4d3c9e0f1a2b3c4d5e6f",
        "tracking_phone_number": "+15555550123",
        "transcription": None,
        "utm_campaign": None,
        "value": None,
        "voicemail": "false",
    }
