"""The CallRail API v3 simulator over real HTTP (httpx against SimulatorServer on 127.0.0.1).

Each test gets its own server on a free port and its own data directory. Time-dependent
behaviour (rate windows, recording URL expiry) runs on an injected clock, so nothing
sleeps except the delay and slow-download faults, which are measured in tenths of seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from callpipe.demo import DEMO_ACCOUNT_ID, DEMO_COMPANY_ID
from callpipe.devstack.processes import free_port
from callpipe.simulator import DEMO_CALLS_DIR
from callpipe.simulator.fields import DEFAULT_FIELDS
from callpipe.simulator.server import SimulatorServer
from callpipe.simulator.store import CallStore

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "111222333"
KEY = "key-account-one"
OTHER = "444555666"
OTHER_KEY = "key-account-two"
AUTH = {"Authorization": f'Token token="{KEY}"'}
OTHER_AUTH = {"Authorization": f'Token token="{OTHER_KEY}"'}
BASE_TIME = datetime.fromisoformat("2026-11-10T09:00:00-08:00")
AUDIO = b"\xff\xe3\x28\xc4" + bytes(range(256)) * 255  # 65,284 bytes starting with MPEG sync


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def call_id(n: int) -> str:
    return f"CAL{n:032x}"


def write_call(
    data_dir: Path,
    n: int,
    account: str = ACCOUNT,
    start: datetime | None = None,
    audio: bytes | None = None,
    ext: str = "mp3",
    faults: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    cid = call_id(n)
    folder = data_dir / "calls"
    folder.mkdir(parents=True, exist_ok=True)
    audio_name = None
    if audio is not None:
        audio_name = f"{cid}-recording.{ext}"
        (folder / audio_name).write_bytes(audio)
    started = start or BASE_TIME + timedelta(hours=n)
    document = {
        "answered": True,
        "business_phone_number": "+15555550100",
        "customer_city": "Pasadena",
        "customer_country": "US",
        "customer_name": f"Customer {n}",
        "customer_phone_number": f"+1626555{n % 10000:04d}",
        "customer_state": "CA",
        "direction": "inbound",
        "duration": 60 + n,
        "id": cid,
        "recording": f"https://api.callrail.com/v3/a/{account}/calls/{cid}/recording.json",
        "recording_duration": 55 + n,
        "recording_player": f"https://app.callrail.com/calls/{cid}/recording?access_key=x",
        "start_time": started.isoformat(timespec="milliseconds"),
        "tracking_phone_number": "+15555550123",
        "voicemail": False,
        "account_id": account,
        "company_id": "COM1",
        "transcription": f"Agent: hello {n}",
        "tags": ["Kitchen"],
        **extra,
        "_simulator": {
            "audio": audio_name,
            "faults": faults or {},
            "script": [{"speaker": "agent", "text": "hello", "start": 0.5, "end": 1.0}],
            "labels": {"intent": "quote_request"},
        },
    }
    (folder / f"{cid}.json").write_text(json.dumps(document), encoding="utf-8")
    return cid


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for n in range(1, 8):
        write_call(tmp_path, n, audio=AUDIO if n == 1 else None)
    write_call(tmp_path, 20, account=OTHER, audio=AUDIO)
    write_call(tmp_path, 30, audio=b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(4000), ext="wav")
    write_call(tmp_path, 40, audio=AUDIO[:4096])  # small: for the slow download
    write_call(tmp_path, 50, audio=AUDIO, faults={"api_status_sequence": [502]})
    return tmp_path


def start_sim(data_dir: Path, clock: FakeClock, **options: Any) -> SimulatorServer:
    options.setdefault("rate_limit_per_minute", 1000)
    return SimulatorServer(data_dir, {ACCOUNT: KEY, OTHER: OTHER_KEY}, clock=clock, **options)


@pytest.fixture
def sim(data_dir: Path, clock: FakeClock) -> Iterator[SimulatorServer]:
    with start_sim(data_dir, clock) as server:
        yield server


@pytest.fixture
def http(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


def calls_path(account: str = ACCOUNT) -> str:
    return f"/v3/a/{account}/calls.json"


def call_path(cid: str, account: str = ACCOUNT) -> str:
    return f"/v3/a/{account}/calls/{cid}.json"


def recording_path(cid: str, account: str = ACCOUNT) -> str:
    return f"/v3/a/{account}/calls/{cid}/recording.json"


def recording_url(http: httpx.Client, cid: str) -> str:
    response = http.get(recording_path(cid), headers=AUTH)
    assert response.status_code == 200, response.text
    return str(response.json()["url"])


def set_faults(http: httpx.Client, cid: str, **faults: Any) -> None:
    response = http.post(f"/_sim/faults/{cid}", json=faults)
    assert response.status_code == 200, response.text


# --- authentication --------------------------------------------------------------------


def test_missing_or_malformed_auth_is_401_json(http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Token"}):
        response = http.get(calls_path(), headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"error": "HTTP Token: Access denied."}
        assert response.headers["WWW-Authenticate"] == 'Token realm="Application"'


def test_wrong_key_is_401_and_right_key_is_200(http: httpx.Client) -> None:
    wrong = http.get(call_path(call_id(1)), headers={"Authorization": 'Token token="nope"'})
    assert wrong.status_code == 401
    assert http.get(call_path(call_id(1)), headers=AUTH).status_code == 200
    # Rails also accepts the token unquoted.
    bare = http.get(call_path(call_id(1)), headers={"Authorization": f"Token token={KEY}"})
    assert bare.status_code == 200


def test_a_valid_key_cannot_see_another_or_unknown_account(http: httpx.Client) -> None:
    other = http.get(call_path(call_id(20), OTHER), headers=AUTH)
    assert other.status_code == 404
    assert other.json() == {"error": "Not found"}
    assert http.get(calls_path("999999999"), headers=AUTH).status_code == 404
    assert http.get(call_path(call_id(20), OTHER), headers=OTHER_AUTH).status_code == 200


# --- one call --------------------------------------------------------------------------


def test_call_has_default_fields_only_unless_asked(
    http: httpx.Client, sim: SimulatorServer
) -> None:
    body = http.get(call_path(call_id(1)), headers=AUTH).json()
    assert list(body) == list(DEFAULT_FIELDS)
    assert body["id"] == call_id(1)
    assert body["duration"] == 61
    # The recording link points at the simulator, not at api.callrail.com.
    assert body["recording"] == f"{sim.url}{recording_path(call_id(1))}"
    assert "_simulator" not in body and "transcription" not in body

    asked = http.get(
        call_path(call_id(1)),
        params={"fields": "transcription,company_id,account_id,sentiment,bogus"},
        headers=AUTH,
    ).json()
    assert asked["transcription"] == "Agent: hello 1"
    assert asked["company_id"] == "COM1"
    assert asked["account_id"] == ACCOUNT
    assert asked["sentiment"] is None  # a known field the file lacks comes back null
    assert "bogus" not in asked and "_simulator" not in asked


def test_unknown_call_is_404_json(http: httpx.Client) -> None:
    response = http.get(call_path("CALdoesnotexist"), headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}
    # A call of another account is not found through this account's path either.
    assert http.get(call_path(call_id(20)), headers=AUTH).status_code == 404


def test_call_without_audio_has_no_recording(http: httpx.Client) -> None:
    body = http.get(call_path(call_id(2)), headers=AUTH).json()
    assert body["recording"] is None
    assert body["recording_duration"] is None and body["recording_player"] is None
    response = http.get(recording_path(call_id(2)), headers=AUTH)
    assert response.status_code == 404
    assert "error" in response.json()


# --- listing ---------------------------------------------------------------------------


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [call["id"] for call in response.json()["calls"]]


def mine() -> list[str]:
    return [call_id(n) for n in (1, 2, 3, 4, 5, 6, 7, 30, 40, 50)]


def test_offset_pagination_envelope_and_pages(http: httpx.Client) -> None:
    first = http.get(calls_path(), params={"per_page": 4}, headers=AUTH).json()
    assert {k: first[k] for k in ("page", "per_page", "total_pages", "total_records")} == {
        "page": 1,
        "per_page": 4,
        "total_pages": 3,
        "total_records": 10,
    }
    seen: list[str] = []
    for page in (1, 2, 3):
        seen += ids(http.get(calls_path(), params={"per_page": 4, "page": page}, headers=AUTH))
    # Newest first by default, every call once.
    assert seen == sorted(mine(), key=lambda c: int(c[3:], 16), reverse=True)
    assert ids(http.get(calls_path(), params={"per_page": 4, "page": 4}, headers=AUTH)) == []
    default = http.get(calls_path(), headers=AUTH).json()
    assert default["per_page"] == 100 and default["total_pages"] == 1
    assert "_simulator" not in default["calls"][0]


def test_per_page_is_capped_at_250_and_bad_values_are_400(tmp_path: Path, clock: FakeClock) -> None:
    for n in range(260):
        write_call(tmp_path, n)
    with start_sim(tmp_path, clock) as sim, httpx.Client(base_url=sim.url) as http:
        page = http.get(calls_path(), params={"per_page": 250}, headers=AUTH).json()
        assert (page["total_pages"], page["total_records"], len(page["calls"])) == (2, 260, 250)
        last = http.get(calls_path(), params={"per_page": 250, "page": 2}, headers=AUTH)
        assert len(ids(last)) == 10
        for params in ({"per_page": 251}, {"per_page": 0}, {"page": 0}, {"page": "x"}):
            response = http.get(calls_path(), params=params, headers=AUTH)
            assert response.status_code == 400, params
            assert "error" in response.json()


def test_relative_pagination_walks_every_call_once(
    http: httpx.Client, sim: SimulatorServer
) -> None:
    url: str | None = f"{sim.url}{calls_path()}"
    params: dict[str, Any] | None = {
        "relative_pagination": "true",
        "per_page": 3,
        "sort": "start_time",
        "order": "asc",
        "fields": "company_id",
    }
    seen: list[str] = []
    pages = 0
    while url is not None and pages < 10:
        body = http.get(url, params=params, headers=AUTH).json()
        params = None  # next_page carries the whole query
        pages += 1
        assert "total_pages" not in body and body["per_page"] == 3
        seen += [call["id"] for call in body["calls"]]
        assert all(call["company_id"] == "COM1" for call in body["calls"])
        url = body["next_page"]
        assert body["has_next_page"] is (url is not None)
        if url is not None:
            assert url.startswith(f"{sim.url}{calls_path()}?")
            assert "offset=" in url and "relative_pagination=true" in url
    assert pages == 4
    assert seen == sorted(mine(), key=lambda c: int(c[3:], 16))


def test_date_filters_and_sort_order(http: httpx.Client) -> None:
    # Calls n start at BASE_TIME + n hours: 10:00 (n=1) ... 16:00 (n=7) on 2026-11-10 local.
    def listed(**params: Any) -> list[str]:
        query = {"sort": "start_time", "order": "asc", **params}
        return ids(http.get(calls_path(), params=query, headers=AUTH))

    assert listed(start_date="2026-11-10", end_date="2026-11-10") == [
        call_id(n) for n in range(1, 8)
    ]
    assert listed(start_date="2026-11-11", end_date="2026-11-11") == [call_id(n) for n in (30,)]
    # Datetimes with an offset are instants: 12:00-08:00 to 14:00-08:00 inclusive.
    assert listed(start_date="2026-11-10T12:00:00-08:00", end_date="2026-11-10T22:00:00+00:00") == [
        call_id(n) for n in (3, 4, 5)
    ]
    # Without an offset, the call's own time zone.
    assert listed(start_date="2026-11-10T15:00:00", end_date="2026-11-10T16:00:00") == [
        call_id(6),
        call_id(7),
    ]
    desc = ids(http.get(calls_path(), params={"sort": "start_time", "order": "desc"}, headers=AUTH))
    assert desc == list(reversed(listed()))
    assert http.get(calls_path(), params={"start_date": "junk"}, headers=AUTH).status_code == 400
    assert http.get(calls_path(), params={"order": "up"}, headers=AUTH).status_code == 400


# --- rate limiting ---------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(data_dir: Path, clock: FakeClock) -> None:
    with (
        start_sim(data_dir, clock, rate_limit_per_minute=5) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        url = recording_url(http, call_id(1))  # 1 of 5
        for _ in range(4):
            assert http.get(call_path(call_id(1)), headers=AUTH).status_code == 200
        limited = http.get(calls_path(), headers=AUTH)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "60"
        assert "error" in limited.json()
        # Audio downloads do not count, and other accounts have their own budget.
        assert http.get(url).status_code == 200
        assert http.get(call_path(call_id(20), OTHER), headers=OTHER_AUTH).status_code == 200
        clock.advance(45)
        still = http.get(calls_path(), headers=AUTH)
        assert (still.status_code, still.headers["Retry-After"]) == (429, "15")
        clock.advance(15)  # the window slid past the first five requests
        assert http.get(calls_path(), headers=AUTH).status_code == 200
        stats = http.get("/_sim/stats").json()
        assert stats["rate_limited"] == 2
        assert stats["rate_limited_by_account"] == {ACCOUNT: 2}


# --- API faults ------------------------------------------------------------------------


def test_status_sequence_then_success(http: httpx.Client) -> None:
    cid = call_id(1)
    set_faults(http, cid, api_status_sequence=[500, 503])
    assert [http.get(call_path(cid), headers=AUTH).status_code for _ in range(3)] == [
        500,
        503,
        200,
    ]
    set_faults(http, cid, api_status_sequence=[429])
    limited = http.get(recording_path(cid), headers=AUTH)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert http.get(recording_path(cid), headers=AUTH).status_code == 200


def test_file_faults_rearm_on_reset_and_delete(http: httpx.Client) -> None:
    cid = call_id(50)  # its file says api_status_sequence [502]
    assert http.get(call_path(cid), headers=AUTH).status_code == 502
    assert http.get(call_path(cid), headers=AUTH).status_code == 200
    assert http.post("/_sim/reset").json() == {"reset": True}
    assert http.get(call_path(cid), headers=AUTH).status_code == 502
    set_faults(http, cid)  # runtime faults replace the file's: none
    assert http.get(call_path(cid), headers=AUTH).status_code == 200
    view = http.delete(f"/_sim/faults/{cid}").json()  # back to the file's, re-armed
    assert view["source"] == "file" and view["faults"]["api_status_sequence"] == [502]
    assert http.get(call_path(cid), headers=AUTH).status_code == 502


def test_invalid_faults_are_refused(http: httpx.Client) -> None:
    response = http.post(f"/_sim/faults/{call_id(1)}", json={"recordng": "missing"})
    assert response.status_code == 400
    response = http.post(f"/_sim/faults/{call_id(1)}", json={"recording": "lost"})
    assert response.status_code == 400


def test_api_delay(http: httpx.Client) -> None:
    set_faults(http, call_id(1), api_delay_ms=150)
    started = time.monotonic()
    assert http.get(call_path(call_id(1)), headers=AUTH).status_code == 200
    assert time.monotonic() - started >= 0.15


# --- recordings ------------------------------------------------------------------------


def test_recording_url_is_signed_and_serves_the_audio(
    http: httpx.Client, sim: SimulatorServer
) -> None:
    url = recording_url(http, call_id(1))
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == sim.url
    assert parts.path == f"/recordings/{call_id(1)}.mp3"
    query = parse_qs(parts.query)
    assert int(query["Expires"][0]) == 1_800_000_000 + 300
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["Signature"][0])
    audio = http.get(url)
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/mpeg"
    assert audio.headers["content-length"] == str(len(AUDIO))
    assert audio.content == AUDIO

    wav = http.get(recording_url(http, call_id(30)))
    assert wav.headers["content-type"] == "audio/wav"
    assert wav.content.startswith(b"RIFF")


def test_bad_or_expired_signature_is_403(
    http: httpx.Client, clock: FakeClock, sim: SimulatorServer
) -> None:
    url = recording_url(http, call_id(1))
    query = parse_qs(urlsplit(url).query)
    expires, signature = query["Expires"][0], query["Signature"][0]
    path = f"/recordings/{call_id(1)}.mp3"
    tampered = [
        {"Expires": expires, "Signature": "A" + signature[1:]},
        {"Expires": str(int(expires) + 3600), "Signature": signature},
        {"Expires": expires},
        {},
    ]
    for params in tampered:
        response = http.get(path, params=params)
        assert response.status_code == 403, params
    # The same signature does not open another call's recording.
    other = http.get(f"/recordings/{call_id(20)}.mp3", params=query)
    assert other.status_code == 403
    clock.advance(300)
    assert http.get(url).status_code == 200  # valid up to and including Expires
    clock.advance(1)
    expired = http.get(url)
    assert expired.status_code == 403
    assert "expired" in expired.json()["error"]


def test_missing_recording_fault(http: httpx.Client) -> None:
    cid = call_id(1)
    url = recording_url(http, cid)
    set_faults(http, cid, recording="missing")
    assert http.get(call_path(cid), headers=AUTH).json()["recording"] is None
    assert http.get(recording_path(cid), headers=AUTH).status_code == 404
    assert http.get(url).status_code == 404


def test_truncated_recording_closes_early(http: httpx.Client) -> None:
    cid = call_id(1)
    set_faults(http, cid, recording="truncated")
    received = bytearray()

    def download() -> None:
        with http.stream("GET", recording_url(http, cid)) as response:
            assert response.headers["content-length"] == str(len(AUDIO))
            for chunk in response.iter_bytes():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message"):
        download()
    assert bytes(received) == AUDIO[: len(AUDIO) // 2]


def test_corrupt_recording_has_the_same_size_and_type(http: httpx.Client) -> None:
    cid = call_id(1)
    set_faults(http, cid, recording="corrupt")
    response = http.get(recording_url(http, cid))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert len(response.content) == len(AUDIO) and response.content != AUDIO
    assert http.get(recording_url(http, cid)).content == response.content  # deterministic


def test_slow_recording_trickles(http: httpx.Client, sim: SimulatorServer) -> None:
    cid = call_id(40)  # 4 KB
    set_faults(http, cid, recording="slow", slow_chunk_bytes=1024, slow_interval_ms=60)
    started = time.monotonic()
    response = http.get(recording_url(http, cid))
    assert response.content == AUDIO[:4096]
    assert time.monotonic() - started >= 0.18  # three pauses between four chunks
    set_faults(http, cid, recording="slow", slow_chunk_bytes=1024, slow_interval_ms=400)
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=0.1)) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.get(recording_url(http, cid))


def test_recording_status_sequence_and_redirect(http: httpx.Client) -> None:
    cid = call_id(1)
    set_faults(http, cid, recording_status_sequence=[503, 500])
    url = recording_url(http, cid)
    assert [http.get(url).status_code for _ in range(3)] == [503, 500, 200]
    set_faults(http, cid, redirect_to="http://169.254.169.254/computeMetadata/v1/")
    redirected = http.get(url)
    assert redirected.status_code == 302
    assert redirected.headers["location"] == "http://169.254.169.254/computeMetadata/v1/"


# --- control endpoints -----------------------------------------------------------------


def test_stats_and_reset(http: httpx.Client) -> None:
    http.get(call_path(call_id(1)), headers=AUTH)
    http.get(call_path(call_id(1)), headers=AUTH)
    http.get(calls_path(), headers={})
    http.get(call_path(call_id(20), OTHER), headers=OTHER_AUTH)
    http.get(recording_url(http, call_id(1)))
    set_faults(http, call_id(2), api_delay_ms=1)
    stats = http.get("/_sim/stats").json()
    assert stats["requests_by_account"] == {ACCOUNT: 4, OTHER: 1}
    assert stats["requests_by_path"][call_path(call_id(1))] == 2
    assert stats["requests_by_path"][f"/recordings/{call_id(1)}.mp3"] == 1
    assert stats["responses_by_status"] == {"200": 5, "401": 1}
    assert stats["recording_downloads"] == 1
    assert stats["rate_limited"] == 0
    assert list(stats["runtime_faults"]) == [call_id(2)]
    http.post("/_sim/reset")
    cleared = http.get("/_sim/stats").json()
    assert cleared["requests_total"] == 0 and cleared["runtime_faults"] == {}


def test_files_dropped_in_are_served_and_bad_files_reported(
    http: httpx.Client, data_dir: Path
) -> None:
    assert http.get(call_path(call_id(99)), headers=AUTH).status_code == 404
    write_call(data_dir, 99)
    assert http.get(call_path(call_id(99)), headers=AUTH).status_code == 200
    (data_dir / "calls" / "broken.json").write_text("{not json", encoding="utf-8")
    (data_dir / "calls" / "escape.json").write_text(
        json.dumps({"id": "CALx", "account_id": ACCOUNT, "start_time": "2026-11-10T09:00:00Z",
                    "_simulator": {"audio": "../../etc/passwd"}}),
        encoding="utf-8",
    )  # fmt: skip
    listing = http.get("/_sim/calls").json()
    assert set(listing["problems"]) == {"broken.json", "escape.json"}
    assert call_id(99) in {call["id"] for call in listing["calls"]}


def test_binds_loopback_only(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatorServer(data_dir, {ACCOUNT: KEY}, host="0.0.0.0")  # noqa: S104


# --- the shipped demo calls ------------------------------------------------------------


def test_demo_calls_load_with_valid_audio() -> None:
    store = CallStore(DEMO_CALLS_DIR)
    calls = sorted(store.all(), key=lambda c: c.start_time)
    assert store.problems() == {}
    assert len(calls) == 6
    with_audio = [call for call in calls if call.audio_path is not None]
    assert len(with_audio) == 5
    total = 0
    for call in calls:
        assert call.account_id == DEMO_ACCOUNT_ID
        assert call.public["company_id"] == DEMO_COMPANY_ID
        assert isinstance(call.public["duration"], int)
        labels = call.meta.labels
        for key in ("intent", "project_type", "timeline", "budget_indicator", "sentiment"):
            assert key in labels
        assert isinstance(labels["appointment_requested"], bool)
        assert isinstance(labels["spam"], bool)
        if call.audio_path is None:
            assert call.public["recording"] is None and call.meta.script == ()
            continue
        head = call.audio_path.read_bytes()[:12]
        total += call.audio_path.stat().st_size
        if call.audio_path.suffix == ".mp3":
            assert head.startswith(b"ID3") or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
        else:
            assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"
        assert call.meta.script, call.call_id
        ends = [turn.end for turn in call.meta.script]
        starts = [turn.start for turn in call.meta.script]
        assert all(s < e for s, e in zip(starts, ends, strict=True))
        assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))  # no overlap
        assert ends[-1] <= call.public["recording_duration"] + 1
    assert sum(call.meta.labels["spam"] for call in calls) == 1
    assert total < 2_000_000


def test_demo_calls_are_served(clock: FakeClock) -> None:
    with (
        SimulatorServer(DEMO_CALLS_DIR, {DEMO_ACCOUNT_ID: KEY}, clock=clock) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        listing = http.get(calls_path(DEMO_ACCOUNT_ID), headers=AUTH).json()
        assert listing["total_records"] == 6
        served = 0
        for call in listing["calls"]:
            path = recording_path(call["id"], DEMO_ACCOUNT_ID)
            link = http.get(path, headers=AUTH)
            if call["recording"] is None:
                assert link.status_code == 404
                continue
            audio = http.get(link.json()["url"])
            assert audio.status_code == 200
            assert audio.headers["content-type"] in ("audio/mpeg", "audio/wav")
            served += 1
        assert served == 5


# --- command line ----------------------------------------------------------------------


def test_python_m_simulator_serves(data_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "callpipe.simulator", "--data-dir", str(data_dir),
         "--port", str(port), "--api-key", f"{ACCOUNT}={KEY}", "--rate-limit-per-minute", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        response = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}{call_path(call_id(1))}", headers=AUTH, timeout=2
                )
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert response is not None and response.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert b"CallRail simulator on http://127.0.0.1:" in stderr


def test_build_demo_names_missing_debian_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callpipe.cli import app
    from callpipe.simulator import synth

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["sim", "build-demo", "--out", str(tmp_path)])
    assert result.exit_code == 1
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "apt-get install -y espeak-ng sox lame" in output
    assert not (tmp_path / "calls").exists()
