"""The demo tenant and realistic sample webhooks, for the local stack and the CLI."""

from __future__ import annotations

import secrets
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
        "id": 2_000_000_000 + zlib.crc32(call.encode()) % 100_000_000,  # legacy number
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


def webhook_from_call(
    call: dict[str, Any],
    legacy_company_id: str = DEMO_LEGACY_COMPANY_ID,
    now: datetime | None = None,
    company_id: str | None = None,
) -> dict[str, Any]:
    """The Post-Call webhook CallRail would send for an API call object (the simulator's
    data), with CallRail's string booleans and durations; ``company_id`` replaces the
    call's company."""
    sent = now or datetime.now(UTC)
    call_id = str(call["id"])
    account_id = str(call.get("account_id") or DEMO_ACCOUNT_ID)

    def text(value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        return value

    payload = sample_post_call(
        company_id=company_id or str(call.get("company_id") or DEMO_COMPANY_ID),
        legacy_company_id=legacy_company_id,
        account_id=account_id,
        call_id=call_id,
        now=sent,
    )
    for field in (
        "answered",
        "voicemail",
        "first_call",
        "duration",
        "recording_duration",
        "direction",
        "start_time",
        "customer_name",
        "customer_phone_number",
        "customer_city",
        "customer_state",
        "customer_country",
        "tracking_phone_number",
        "business_phone_number",
        "source",
        "source_name",
        "call_type",
    ):
        if field in call:
            payload[field] = text(call[field])
    payload["recording"] = call.get("recording")
    payload["recording_player"] = call.get("recording_player")
    if not call.get("recording"):
        payload["recording_duration"] = None
    payload["spam"] = text(bool(call.get("spam", False)))
    return payload


def clone_demo_call(
    data_dir: Path, template_id: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Add a new call to a simulator data folder, copied from one of its calls with a
    recording (or ``template_id``), with a new id, a recent start time and no faults."""
    import json
    import os
    import random

    calls = []
    for path in sorted((data_dir / "calls").glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # the simulator skips such files too
            continue
        if isinstance(document, dict):
            calls.append(document)
    if template_id:
        candidates = [c for c in calls if c.get("id") == template_id]
        if not candidates:
            raise LookupError(f"no call {template_id} in {data_dir}")
    else:
        candidates = [c for c in calls if (c.get("_simulator") or {}).get("audio")]
        if not candidates:
            raise LookupError(f"{data_dir} has no call with a recording to copy")
    call = dict(random.choice(candidates))
    started = (now or datetime.now(UTC)) - timedelta(minutes=4)
    template, call["id"] = str(call.get("id")), new_call_id()
    for link in ("recording", "recording_player"):  # they name the call
        if isinstance(call.get(link), str):
            call[link] = call[link].replace(template, call["id"])
    call["start_time"] = started.isoformat(timespec="milliseconds")
    call["created_at"] = call["start_time"]
    if isinstance(call.get("_simulator"), dict):  # the copy is served plainly
        call["_simulator"] = {k: v for k, v in call["_simulator"].items() if k != "faults"}
    target = data_dir / "calls" / f"{call['id']}.json"
    # the simulator reads *.json files whenever they change: it must never see half of one
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(call, indent=2), encoding="utf-8")
    os.replace(partial, target)
    return call
