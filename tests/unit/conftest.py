"""Shared test doubles for the unit tests: in-memory implementations of callpipe's own ports.

Nothing here talks to the network or to Google client libraries. The doubles implement the
project's ports (``Publisher``, ``SecretStore``, the directory's lookup function,
``Archive``, ``EventLedger``) with plain Python so that the tests assert real behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callpipe.archive import archive_object_name
from callpipe.callrail.webhook import EventType
from callpipe.intake.ratelimit import QuarantineBudgets, TokenBucket
from callpipe.intake.service import IntakeConfig, IntakeRequest, WebhookIntake
from callpipe.logs import CloudLoggingFormatter
from callpipe.messages import CallReceived, RawWebhook
from callpipe.publishing import PublishFailed
from callpipe.registration import EventState
from callpipe.secrets import SecretNotFound, SecretStoreUnavailable, signing_token_secret_name
from callpipe.tenancy import CompanyDirectory, CompanyMapping, TokenRef

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"

# The tenant the canonical events in tests/events/ belong to.
TENANT_ID = "acme-dental"
OFFICE_ID = "downtown"
ACCOUNT_ID = "512345678"
COMPANY_ID = "COM4c9e2b7a1f3d48e6b0a5c7d9e2f1a3b4"
LEGACY_COMPANY_ID = "381234567"
POST_CALL_ID = "CALf3a91c2e7b5d4a08e6c1b9d7a2e4f530"
TOKEN_ID = "tok1a2b3c4d"
TOKEN = "3f2a9c7e5b1d48e6a0c4f7b2d9e1a6c3"
CALLS_TOPIC = "calls.received"
QUARANTINE_TOPIC = "webhooks.quarantine"
# A receipt time a few hours after every canonical event's timestamp (2025-03-14, -07:00).
NOW = datetime(2025, 3, 14, 23, 0, 0, tzinfo=UTC)
TOLERANCE = timedelta(hours=24)
MAX_BODY = 64 * 1024


# -- canonical events ------------------------------------------------------------------


def load_event(name: str) -> dict[str, Any]:
    """A canonical CallRail payload from tests/events/ (``post_call`` or ``post_call.json``)."""
    filename = name if name.endswith(".json") else f"{name}.json"
    data: dict[str, Any] = json.loads((EVENTS_DIR / filename).read_text(encoding="utf-8"))
    return data


def event_body(name: str, **changes: Any) -> bytes:
    """The event serialised as CallRail sends it; ``changes`` overwrite (None deletes) fields."""
    payload = load_event(name)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return json.dumps(payload).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """CallRail's signature, computed here independently of callpipe: base64(HMAC-SHA1)."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()).decode()


# -- Publisher doubles -------------------------------------------------------------------


@dataclass
class Published:
    topic: str
    data: bytes
    attributes: dict[str, str]
    message_id: str

    def json(self) -> Any:
        return json.loads(self.data)


class RecordingPublisher:
    """callpipe.publishing.Publisher that keeps every message in memory."""

    def __init__(self, journal: list[str] | None = None) -> None:
        self.messages: list[Published] = []
        self._journal = journal

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        assert isinstance(data, bytes), "Pub/Sub data must be bytes"
        assert all(isinstance(v, str) for v in attributes.values()), "attributes must be str"
        message_id = f"msg-{len(self.messages) + 1}"
        self.messages.append(Published(topic, data, dict(attributes), message_id))
        if self._journal is not None:
            self._journal.append(f"publish:{topic}")
        return message_id

    def on(self, topic: str) -> list[Published]:
        return [m for m in self.messages if m.topic == topic]


class FailingPublisher:
    """A Publisher whose Pub/Sub never accepts anything."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.attempts.append(topic)
        raise PublishFailed(f"Pub/Sub did not accept the message on {topic}: DeadlineExceeded")


# -- secrets and the company directory ---------------------------------------------------


class DictSecretStore:
    """callpipe.secrets.SecretStore backed by a dict; remembers which names were read."""

    def __init__(self, values: dict[str, str] | None = None, unavailable: bool = False) -> None:
        self.values = dict(values or {})
        self.reads: list[str] = []
        self.unavailable = unavailable

    def get(self, name: str) -> str:
        self.reads.append(name)
        if self.unavailable:
            raise SecretStoreUnavailable(f"Secret Manager did not answer for {name}")
        try:
            return self.values[name]
        except KeyError:
            raise SecretNotFound(f"secret {name} does not exist") from None

    def put(self, name: str, value: str) -> None:
        self.values[name] = value


class InMemoryCompanies:
    """The directory's lookup function: resource id or legacy id → CompanyMapping."""

    def __init__(self, *mappings: CompanyMapping) -> None:
        self.mappings = list(mappings)
        self.calls: list[str] = []
        self.threads: list[int] = []  # which thread made each call
        self.error: Exception | None = None

    def __call__(self, key: str) -> CompanyMapping | None:
        self.calls.append(key)
        self.threads.append(threading.get_ident())
        if self.error is not None:
            raise self.error
        for mapping in self.mappings:
            if key in (mapping.company_id, mapping.legacy_company_id):
                return mapping
        return None


def token_ref(token_id: str, company_id: str = COMPANY_ID, active: bool = True) -> TokenRef:
    return TokenRef(token_id, signing_token_secret_name(company_id, token_id), active)


def company_mapping(
    tokens: tuple[TokenRef, ...] | None = None,
    company_id: str = COMPANY_ID,
    legacy_company_id: str | None = LEGACY_COMPANY_ID,
    tenant_id: str = TENANT_ID,
    office_id: str = OFFICE_ID,
    account_id: str = ACCOUNT_ID,
) -> CompanyMapping:
    return CompanyMapping(
        company_id=company_id,
        legacy_company_id=legacy_company_id,
        tenant_id=tenant_id,
        office_id=office_id,
        callrail_account_id=account_id,
        tokens=tokens if tokens is not None else (token_ref(TOKEN_ID, company_id),),
    )


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll until ``condition`` holds (for threads a test started); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.005)


class FakeMonotonic:
    """A monotonic clock (seconds) that only moves when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WallClock:
    """The intake's wall clock (aware datetimes), fixed until the test moves it."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def secret_store() -> DictSecretStore:
    return DictSecretStore({signing_token_secret_name(COMPANY_ID, TOKEN_ID): TOKEN})


@pytest.fixture
def companies() -> InMemoryCompanies:
    return InMemoryCompanies(company_mapping())


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


# -- intake ------------------------------------------------------------------------------


@dataclass
class IntakeHarness:
    """WebhookIntake wired to in-memory ports, with helpers to build signed requests."""

    intake: WebhookIntake
    publisher: Any
    companies: InMemoryCompanies
    secrets: DictSecretStore
    limiter_clock: FakeMonotonic
    wall: WallClock
    token: str = TOKEN

    def request(
        self,
        body: bytes,
        signature: str | None = "__sign__",
        content_type: str | None = "application/json",
        method: str = "POST",
        hint: str | None = None,
        extra_headers: dict[str, str] | None = None,
        oversized: bool = False,
    ) -> IntakeRequest:
        headers: dict[str, str] = {"User-Agent": "CallRail-Webhooks/1.0"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if signature == "__sign__":
            signature = sign(self.token, body)
        if signature is not None:
            headers["Signature"] = signature
        headers.update(extra_headers or {})
        path = "/api/v1/callrail/webhook" + (f"/{hint}" if hint else "")
        return IntakeRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
            event_hint=hint,
            oversized=oversized,
        )

    def post(self, body: bytes, **kwargs: Any) -> Any:
        return self.intake.handle(self.request(body, **kwargs))


@pytest.fixture
def make_intake(
    companies: InMemoryCompanies, secret_store: DictSecretStore
) -> Callable[..., IntakeHarness]:
    def make(
        publisher: Any | None = None,
        quarantine_per_minute: int = 60,
        now: datetime = NOW,
        stale_seconds: float = 0.0,
        unusable_per_minute: int = 60,
        outage_per_minute: int = 60,
        unknown_max_body: int = MAX_BODY,
    ) -> IntakeHarness:
        publisher = publisher if publisher is not None else RecordingPublisher()
        limiter_clock = FakeMonotonic()
        wall = WallClock(now)
        directory = CompanyDirectory(
            companies,
            secret_store,
            ttl_seconds=60,
            negative_ttl_seconds=10,
            clock=limiter_clock,
            stale_seconds=stale_seconds,
        )
        intake = WebhookIntake(
            IntakeConfig(
                calls_topic=CALLS_TOPIC,
                quarantine_topic=QUARANTINE_TOPIC,
                max_body_bytes=MAX_BODY,
                timestamp_tolerance=TOLERANCE,
                unknown_company_max_body_bytes=unknown_max_body,
            ),
            directory,
            publisher,
            QuarantineBudgets(
                unknown_company=TokenBucket(quarantine_per_minute, clock=limiter_clock),
                unusable=TokenBucket(unusable_per_minute, clock=limiter_clock),
                directory_unavailable=TokenBucket(outage_per_minute, clock=limiter_clock),
            ),
            clock=wall,
        )
        return IntakeHarness(intake, publisher, companies, secret_store, limiter_clock, wall)

    return make


@pytest.fixture
def harness(make_intake: Callable[..., IntakeHarness]) -> IntakeHarness:
    return make_intake()


# -- pipeline messages, archive and ledger -----------------------------------------------


def make_call_received(
    event: str = "post_call",
    event_type: EventType = EventType.POST_CALL,
    body: bytes | None = None,
    call_id: str = POST_CALL_ID,
    event_key: str | None = None,
    received_at: datetime = NOW,
) -> CallReceived:
    raw_body = body if body is not None else event_body(event)
    return CallReceived(
        tenant_id=TENANT_ID,
        office_id=OFFICE_ID,
        company_id=COMPANY_ID,
        callrail_account_id=ACCOUNT_ID,
        call_id=call_id,
        event_type=event_type,
        event_key=event_key or f"{event_type.value}:{call_id}",
        correlation_id="4bf92f3577b34da6a3ce929d0e0e4736",
        signing_token_id=TOKEN_ID,
        webhook=RawWebhook.capture(
            raw_body,
            {"signature": sign(TOKEN, raw_body), "content-type": "application/json"},
            "/api/v1/callrail/webhook",
            received_at,
        ),
    )


class InMemoryArchive:
    """callpipe.registration.Archive: keeps the raw webhooks under their real object names."""

    def __init__(self, journal: list[str] | None = None, bucket: str = "test-archive") -> None:
        self.objects: dict[str, bytes] = {}
        self.bucket = bucket
        self._journal = journal

    def store(self, message: CallReceived) -> str:
        name = archive_object_name(message)
        self.objects.setdefault(name, message.webhook.body)  # like if_generation_match=0
        if self._journal is not None:
            self._journal.append("archive")
        return f"gs://{self.bucket}/{name}"


@dataclass
class InMemoryEventLedger:
    """callpipe.registration.EventLedger over a dict keyed by (tenant, event key)."""

    journal: list[str] | None = None
    states: dict[tuple[str, str], EventState] = field(default_factory=dict)
    archive_uris: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def _note(self, entry: str) -> None:
        if self.journal is not None:
            self.journal.append(entry)

    def claim(self, message: CallReceived, archive_uri: str) -> EventState:
        key = (message.tenant_id, message.event_key)
        self._note("claim")
        if key in self.states and self.states[key] is not EventState.RELEASED:
            return self.states[key]
        taken_over = key in self.states
        self.states[key] = EventState.REGISTERED
        if taken_over:
            return EventState.REGISTERED
        self.archive_uris[key] = archive_uri
        return EventState.NEW

    def mark(self, message: CallReceived, state: EventState) -> None:
        self._note(f"mark:{state.value}")
        self.states[(message.tenant_id, message.event_key)] = state

    def release(self, message: CallReceived) -> None:
        self.mark(message, EventState.RELEASED)

    def start_call(self, message: CallReceived, payload: dict[str, Any]) -> None:
        self._note("start_call")
        self.calls[(message.tenant_id, message.call_id)] = payload

    def state_of(self, message: CallReceived) -> EventState | None:
        return self.states.get((message.tenant_id, message.event_key))


# -- logs ---------------------------------------------------------------------------------


class LogCapture:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture_logs() -> Iterator[Callable[[str], LogCapture]]:
    """Attach a CloudLoggingFormatter handler writing to a StringIO to a named logger."""
    installed: list[tuple[logging.Logger, logging.Handler, int]] = []

    def attach(name: str) -> LogCapture:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(CloudLoggingFormatter())
        target = logging.getLogger(name)
        installed.append((target, handler, target.level))
        target.addHandler(handler)
        target.setLevel(logging.DEBUG)
        return LogCapture(stream)

    yield attach
    for target, handler, level in installed:
        target.removeHandler(handler)
        target.setLevel(level)
