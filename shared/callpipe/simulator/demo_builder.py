"""Build the demo calls: real spoken audio plus call JSON in the simulator's data format.

``callpipe sim build-demo [--out DIR]`` writes ``DIR/calls/<CALL_ID>.json`` and the audio
next to it. The shipped copy lives in ``callpipe/simulator/demo_calls`` and is what the
local stack serves. Rebuilding with the same espeak-ng, sox and lame versions gives the
same bytes (seeded pauses and noise, sox in repeatable mode, no dither, no MP3 tags).

Needs the Debian packages espeak-ng, sox and lame; without them it stops with a message
naming the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from callpipe.demo import DEMO_ACCOUNT_ID, DEMO_COMPANY_ID, DEMO_TENANT_NAME
from callpipe.simulator.demo_content import DEMO_CALLS, DemoCall
from callpipe.simulator.store import SIMULATOR_KEY
from callpipe.simulator.synth import (
    RATE,
    MissingTools,
    Rendered,
    check_tools,
    encode_mp3,
    render_conversation,
    write_wav,
)

__all__ = ["BuiltCall", "MissingTools", "build_demo_calls", "call_id_for"]

BUSINESS_PHONE = "+15555550100"
TRACKING_PHONE = "+15555550123"
TIME_ZONE = "America/Los_Angeles"
SPEAKER_LABELS = {"agent": "Agent", "caller": "Caller"}


@dataclass(frozen=True)
class BuiltCall:
    call_id: str
    title: str
    audio_name: str | None
    audio_bytes: int
    seconds: float


def call_id_for(slug: str) -> str:
    """Stable ids: rebuilding never renames a demo call."""
    return "CAL" + hashlib.sha256(f"callpipe-demo/{slug}".encode()).hexdigest()[:32]


def build_demo_calls(out_dir: Path) -> list[BuiltCall]:
    check_tools()
    calls_dir = Path(out_dir) / "calls"
    calls_dir.mkdir(parents=True, exist_ok=True)
    return [_build_one(spec, calls_dir) for spec in DEMO_CALLS]


def _build_one(spec: DemoCall, calls_dir: Path) -> BuiltCall:
    call_id = call_id_for(spec.slug)
    rendered: Rendered | None = None
    audio_name: str | None = None
    audio_bytes = 0
    if spec.layout is not None:
        stereo = spec.layout == "stereo"
        rendered = render_conversation(spec.turns, spec.voices, stereo, seed=spec.slug)
        audio_name = f"{call_id}.{spec.codec}"
        target = calls_dir / audio_name
        if spec.codec == "wav":
            write_wav(target, rendered.channels)
        else:
            with tempfile.TemporaryDirectory(prefix="callpipe-demo-") as tmp:
                wav = Path(tmp) / "call.wav"
                write_wav(wav, rendered.channels)
                encode_mp3(wav, target, stereo)
        audio_bytes = target.stat().st_size
    document = _call_document(spec, call_id, rendered)
    document[SIMULATOR_KEY] = _simulator_block(spec, audio_name, rendered)
    (calls_dir / f"{call_id}.json").write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return BuiltCall(
        call_id, spec.title, audio_name, audio_bytes, rendered.seconds if rendered else 0.0
    )


def _call_document(spec: DemoCall, call_id: str, rendered: Rendered | None) -> dict[str, Any]:
    start = datetime.fromisoformat(spec.start_time)
    recording_seconds = round(rendered.seconds) if rendered else None
    # The call lasts a little longer than its recording (ringing, the whisper message).
    duration = (recording_seconds + 3) if recording_seconds else spec.missed_duration
    api = f"https://api.callrail.com/v3/a/{DEMO_ACCOUNT_ID}/calls/{call_id}"
    access_key = hashlib.sha256(f"player/{call_id}".encode()).hexdigest()[:20]
    person = "PER" + hashlib.sha256(f"person/{spec.customer_phone}".encode()).hexdigest()[:32]
    location = f"{spec.customer_city}, CA" if spec.customer_city else ""
    document: dict[str, Any] = {
        # Default fields, in CallRail's order.
        "answered": spec.answered,
        "business_phone_number": BUSINESS_PHONE,
        "customer_city": spec.customer_city,
        "customer_country": "US",
        "customer_name": spec.customer_name,
        "customer_phone_number": spec.customer_phone,
        "customer_state": "CA",
        "direction": "inbound",
        "duration": duration,
        "id": call_id,
        "recording": f"{api}/recording.json" if rendered else None,
        "recording_duration": recording_seconds,
        "recording_player": (
            f"https://app.callrail.com/calls/{call_id}/recording?access_key={access_key}"
            if rendered
            else None
        ),
        "start_time": spec.start_time,
        "tracking_phone_number": TRACKING_PHONE,
        "voicemail": spec.voicemail,
        # Optional fields (returned only when asked for with fields=).
        "account_id": DEMO_ACCOUNT_ID,
        "agent_email": spec.agent_email,
        "call_type": spec.call_type,
        "company_id": DEMO_COMPANY_ID,
        "company_name": DEMO_TENANT_NAME,
        "company_time_zone": TIME_ZONE,
        # CallRail creates the record a few seconds after the call starts.
        "created_at": (start + timedelta(seconds=5)).isoformat(timespec="milliseconds"),
        "device_type": "",
        "first_call": spec.first_call,
        "formatted_call_type": spec.call_type.replace("_", " ").title(),
        "formatted_customer_location": location,
        "formatted_customer_name": spec.customer_name,
        "formatted_customer_phone_number": _formatted(spec.customer_phone),
        "formatted_business_phone_number": _formatted(BUSINESS_PHONE),
        "formatted_duration": _formatted_duration(duration),
        "formatted_tracking_phone_number": _formatted(TRACKING_PHONE),
        "formatted_tracking_source": spec.source,
        "formatted_value": "--",
        "lead_status": None,
        "note": None,
        "value": None,
        "tags": [],
        "keywords": None,
        "source": spec.source,
        "source_name": "Website Pool",
        "medium": spec.medium,
        "campaign": None,
        "landing_page_url": "https://demo-kitchens.example/",
        "referring_url": "https://www.google.com/" if spec.source.startswith("Google") else None,
        "gclid": None,
        "utm_source": "google" if spec.source.startswith("Google") else None,
        "utm_medium": spec.medium if spec.source.startswith("Google") else None,
        "utm_campaign": "remodel-fall-2026" if spec.medium == "cpc" else None,
        "milestones": {
            "first_touch": {
                "event_date": (start - timedelta(minutes=7)).isoformat(timespec="milliseconds"),
                "source": spec.source,
                "medium": spec.medium,
            }
        },
        "person_id": person,
        "tracker_id": "TRK9d2f4c1e8b7a4d3c9e0f1a2b3c4d5e6f",
        "timeline_url": f"https://app.callrail.com/a/{DEMO_ACCOUNT_ID}/calls/{call_id}/timeline",
        "prior_calls": 0 if spec.first_call else 1,
        "total_calls": 1 if spec.first_call else 2,
        "spam": spec.spam,
        "call_summary": spec.summary or None,
        "sentiment": spec.sentiment if rendered else None,
        "transcription": _transcription(rendered),
        "conversational_transcript": _conversational(rendered),
        "speaker_percent": _speaker_percent(rendered),
    }
    document.update(spec.extra)
    return document


def _simulator_block(
    spec: DemoCall, audio_name: str | None, rendered: Rendered | None
) -> dict[str, Any]:
    return {
        "title": spec.title,
        "audio": audio_name,
        "audio_format": (
            {
                "codec": spec.codec,
                "sample_rate": RATE,
                "channels": len(rendered.channels),
                # Stereo: agent left (channel 0), caller right (channel 1).
                "channel_speakers": ["agent", "caller"] if len(rendered.channels) == 2 else None,
                "seconds": round(rendered.seconds, 3),
                "voices": {speaker: voice.espeak for speaker, voice in spec.voices.items()},
            }
            if rendered
            else None
        ),
        "faults": {},
        "script": [
            {"speaker": turn.speaker, "text": turn.text, "start": turn.start, "end": turn.end}
            for turn in (rendered.turns if rendered else ())
        ],
        "labels": spec.labels,
    }


def _transcription(rendered: Rendered | None) -> str | None:
    if rendered is None:
        return None
    return "\n\n".join(f"{SPEAKER_LABELS[t.speaker]}: {t.text}" for t in rendered.turns)


def _conversational(rendered: Rendered | None) -> list[dict[str, Any]] | None:
    if rendered is None:
        return None
    return [
        {"speaker": SPEAKER_LABELS[t.speaker], "phrase": t.text, "start": t.start, "end": t.end}
        for t in rendered.turns
    ]


def _speaker_percent(rendered: Rendered | None) -> dict[str, int] | None:
    if rendered is None:
        return None
    spoken = {"agent": 0.0, "caller": 0.0}
    for turn in rendered.turns:
        spoken[turn.speaker] += turn.end - turn.start
    total = sum(spoken.values()) or 1.0
    return {
        "agent": round(100 * spoken["agent"] / total),
        "customer": round(100 * spoken["caller"] / total),
    }


def _formatted(e164: str) -> str:
    digits = e164.removeprefix("+1")
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"


def _formatted_duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m {rest}s" if minutes else f"{rest}s"
