"""fetch-call and download-recording domain logic with in-memory doubles of the project's
own ports (the end-to-end behaviour on the emulators is in tests/integration)."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from typing import Any, BinaryIO

import pytest

from callpipe.apikeys import MissingApiKey
from callpipe.callrail.client import CallRailAuthError, CallRailNotFound, CallRailUnavailable
from callpipe.callrail.webhook import EventType
from callpipe.downloading import (
    DownloadRecording,
    FoundRecording,
    RecordingNotReady,
    StoredObject,
    recording_prefix,
)
from callpipe.fetching import ApiKeyRotated, FetchCall
from callpipe.messages import CallDetails, CallFetched, CallRegistered, CallWithoutRecording
from callpipe.progress import Stage, StageStatus
from callpipe.publishing import PublishFailed
from callpipe.recordings.fetcher import AudioRejected, DownloadedAudio, FetchFailed
from callpipe.recordings.guard import UnsafeUrl
from callpipe.recordings.policy import FetchPolicy
from callpipe.steps import PermanentError
from tests.unit.conftest import FailingPublisher
from tests.unit.doubles import Progress, Publisher

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 64


class Keys:
    """The tenant's key as a cache would give it: ``stored`` is what the secret store holds
    now, ``key`` what is cached until ``forget``."""

    def __init__(self, key: str | None = "key-1") -> None:
        self.key = key
        self.stored = key

    def key_for(self, tenant_id: str) -> str:
        if self.key is None:
            raise MissingApiKey(f"tenant {tenant_id} has no CallRail API key")
        return self.key

    def forget(self, tenant_id: str) -> None:
        self.key = self.stored


class Client:
    def __init__(
        self,
        call: dict[str, Any] | None = None,
        error: Exception | None = None,
        recording_url: str | None = "https://app.callrail.com/rec/x.mp3",
    ) -> None:
        self.call = call or {}
        self.error = error
        self.recording_url = recording_url

    def get_call(self, account_id: str, call_id: str) -> dict[str, Any]:
        if self.error:
            raise self.error
        return {"id": call_id, **self.call}

    def get_recording_url(self, account_id: str, call_id: str) -> str | None:
        if self.error:
            raise self.error
        return self.recording_url


class Store:
    def __init__(self, existing: FoundRecording | None = None) -> None:
        self.existing = existing
        self.objects: dict[str, tuple[bytes, str, dict[str, str]]] = {}

    def find(self, prefix: str) -> FoundRecording | None:
        return self.existing

    def put(
        self, name: str, data: BinaryIO, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        data.seek(0)
        self.objects[name] = (data.read(), content_type, metadata)
        return StoredObject(f"gs://recordings/{name}", name, True)


def registered(**changes: Any) -> CallRegistered:
    fields: dict[str, Any] = {
        "tenant_id": "acme",
        "office_id": "main",
        "company_id": "COM1",
        "callrail_account_id": "728790660",
        "call_id": "CAL1",
        "event_type": EventType.POST_CALL,
        "event_key": "post_call:CAL1",
        "correlation_id": "c0ffee",
        "received_at": NOW,
        "registered_at": NOW,
        "webhook_archive_uri": "gs://w/x.json",
        "webhook": {
            "resource_id": "CAL1",
            "answered": "true",
            "customer_city": "Austin",
            "duration": "12",
        },
    }
    return CallRegistered(**{**fields, **changes})


def fetched(recording: bool = True) -> CallFetched:
    details = CallDetails.from_callrail(
        {"id": "CAL1", "recording": "https://x" if recording else None, "recording_duration": 61}
    )
    return CallFetched(
        tenant_id="acme",
        office_id="main",
        company_id="COM1",
        callrail_account_id="728790660",
        call_id="CAL1",
        event_type=EventType.POST_CALL,
        event_key="post_call:CAL1",
        correlation_id="c0ffee",
        received_at=NOW,
        fetched_at=NOW,
        details=details,
        callrail_call={"id": "CAL1"},
    )


def test_fetch_merges_api_over_webhook_records_and_publishes() -> None:
    publisher, progress = Publisher(), Progress()
    step = FetchCall(
        Keys(),
        lambda key: Client(
            {
                "duration": 184,
                "answered": True,
                "tags": [{"name": "Kitchen"}],
                "recording": "https://r",
            }
        ),  # type: ignore[arg-type,return-value]
        progress,
        publisher,
        "calls.fetched",
        clock=lambda: NOW,
    )
    outcome = step(registered())
    assert outcome["outcome"] == "fetched" and outcome["recording_available"] is True
    topic, data, attributes = publisher.sent[0]
    message = CallFetched.from_data(data)
    assert topic == "calls.fetched"
    assert attributes["call_id"] == "CAL1" and attributes["tenant_id"] == "acme"
    assert message.details.duration_seconds == 184  # the API wins over the webhook's "12"
    assert message.callrail_call["customer_city"] == "Austin"  # webhook-only fields are kept
    assert message.details.tags == ["Kitchen"]
    stage, status, columns = progress.records[0]
    assert (stage, status) == (Stage.FETCH, StageStatus.OK)
    assert columns["DurationSeconds"] == 184


def test_fetch_keeps_the_webhooks_word_that_a_recording_exists() -> None:
    publisher = Publisher()
    step = FetchCall(
        Keys(),
        lambda key: Client({"recording": None}),  # type: ignore[arg-type,return-value]
        Progress(),
        publisher,
        "calls.fetched",
        clock=lambda: NOW,
    )
    webhook = {"resource_id": "CAL1", "recording": "https://app.callrail.com/calls/CAL1/rec"}
    step(registered(webhook=webhook))
    details = CallFetched.from_data(publisher.sent[0][1]).details
    assert (details.recording_available, details.recording_announced) == (False, True)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CallRailNotFound("gone", 404), "callrail_not_found"),
        (CallRailAuthError("refused", 401), "callrail_auth_failed"),
    ],
)
def test_fetch_permanent_callrail_errors_become_dead_letter_reasons(
    error: Exception, reason: str
) -> None:
    step = FetchCall(Keys(), lambda key: Client(error=error), Progress(), Publisher(), "t")  # type: ignore[arg-type,return-value]
    with pytest.raises(PermanentError) as caught:
        step(registered())
    assert caught.value.reason == reason


def test_a_key_refused_after_its_rotation_is_retried_with_the_new_one() -> None:
    keys = Keys("old-key")
    keys.stored = "new-key"  # rotated with `tenants set-api-key`; the old one still cached
    step = FetchCall(
        keys,
        lambda key: Client(error=CallRailAuthError("bad key", 401)),  # type: ignore[arg-type,return-value]
        Progress(),
        Publisher(),
        "t",
    )
    with pytest.raises(ApiKeyRotated):
        step(registered())
    assert keys.key == "new-key"  # the redelivery uses it
    with pytest.raises(PermanentError, match="callrail_auth_failed"):  # refused too: for good
        step(registered())


def test_a_key_rotated_while_requests_were_in_flight_is_retried_by_each_of_them() -> None:
    """Two requests sent the old key; the first refusal refreshes the cache. The second
    must still see that its key was rotated, not compare the new key with itself."""
    keys = Keys("old-key")
    keys.stored = "new-key"

    class Revoked:
        def __init__(self, key: str) -> None:
            self.key = key

        def get_call(self, account_id: str, call_id: str) -> dict[str, Any]:
            if self.key != "old-key":
                return {"id": call_id}
            if call_id == "CAL2":  # while this request waits, another one is refused
                with pytest.raises(ApiKeyRotated):
                    step(registered())
            raise CallRailAuthError("bad key", 401)

    step = FetchCall(keys, Revoked, Progress(), Publisher(), "t")  # type: ignore[arg-type]
    with pytest.raises(ApiKeyRotated):
        step(registered(call_id="CAL2", event_key="post_call:CAL2"))
    assert step(registered(call_id="CAL2", event_key="post_call:CAL2"))["outcome"] == "fetched"


def test_a_call_of_another_company_of_the_account_is_not_fetched_into_the_tenant() -> None:
    """Tenants can share a CallRail account: a webhook signed with one company's token but
    naming another company's call must not copy that call into this tenant."""
    publisher = Publisher()
    theirs = Client(call={"id": "CAL1", "company_id": "COMtheirs"})
    step = FetchCall(Keys(), lambda key: theirs, Progress(), publisher, "t")  # type: ignore[arg-type,return-value]
    with pytest.raises(PermanentError) as refused:
        step(registered())
    assert refused.value.reason == "company_mismatch" and "COMtheirs" in refused.value.detail
    assert publisher.sent == []
    ours = Client(call={"id": "CAL1", "company_id": "COM1"})
    step = FetchCall(Keys(), lambda key: ours, Progress(), publisher, "t")  # type: ignore[arg-type,return-value]
    assert step(registered())["outcome"] == "fetched"


def test_fetch_records_its_stage_only_once_the_call_is_handed_on() -> None:
    """ "ok" must mean published: a dead letter after it is taken for finished work."""
    progress = Progress()
    step = FetchCall(Keys(), lambda key: Client(), progress, FailingPublisher(), "t")  # type: ignore[arg-type,return-value]
    with pytest.raises(PublishFailed):
        step(registered())
    assert progress.records == []


def test_fetch_transient_errors_propagate_for_redelivery() -> None:
    step = FetchCall(
        Keys(), lambda key: Client(error=CallRailUnavailable("503")), Progress(), Publisher(), "t"
    )  # type: ignore[arg-type,return-value]
    with pytest.raises(CallRailUnavailable):
        step(registered())


def test_fetch_without_api_key_or_account_is_permanent() -> None:
    step = FetchCall(Keys(None), lambda key: Client(), Progress(), Publisher(), "t")  # type: ignore[arg-type,return-value]
    with pytest.raises(PermanentError, match="no_api_key"):
        step(registered())
    step = FetchCall(Keys(), lambda key: Client(), Progress(), Publisher(), "t")  # type: ignore[arg-type,return-value]
    with pytest.raises(PermanentError, match="no_account_id"):
        step(registered(callrail_account_id=None))


def download_step(
    store: Store,
    progress: Progress,
    publisher: Publisher,
    download: Any,
    client: Client | None = None,
) -> DownloadRecording:
    return DownloadRecording(
        Keys(),
        lambda key: client or Client(),
        store,
        FetchPolicy(allowed_hosts=("app.callrail.com",)),  # type: ignore[arg-type,return-value]
        progress,
        publisher,
        "recordings.stored",
        max_attempts=3,
        download=download,
        clock=lambda: NOW,
    )


def fake_download(url: str, policy: FetchPolicy, sink: BinaryIO) -> DownloadedAudio:
    sink.write(MP3)
    return DownloadedAudio(
        "audio/mpeg", "mp3", len(MP3), hashlib.sha256(MP3).hexdigest(), "app.callrail.com"
    )


def test_download_stores_under_the_tenant_prefix_with_metadata() -> None:
    store, progress, publisher = Store(), Progress(), Publisher()
    outcome = download_step(store, progress, publisher, fake_download)(fetched())
    name = "tenants/acme/calls/CAL1/recording.mp3"
    assert outcome == {
        "outcome": "stored",
        "object": f"gs://recordings/{name}",
        "bytes": len(MP3),
        "sha256": hashlib.sha256(MP3).hexdigest(),
    }
    data, content_type, metadata = store.objects[name]
    assert data == MP3 and content_type == "audio/mpeg"
    assert metadata["tenant_id"] == "acme" and metadata["correlation_id"] == "c0ffee"
    assert (
        metadata["sha256"] == hashlib.sha256(MP3).hexdigest()
        and metadata["duration_seconds"] == "61"
    )
    assert publisher.sent == []  # the bucket notification starts the next stage
    assert progress.records[-1][1] is StageStatus.OK


def test_an_already_stored_recording_is_recorded_again_not_downloaded_again() -> None:
    """The delivery that stored it may have died before its record: a redelivery writes it."""
    uri = "gs://recordings/tenants/acme/calls/CAL1/recording.mp3"
    store = Store(FoundRecording(uri, 1234, "audio/mpeg", "ab" * 32, NOW))
    progress = Progress()

    def never(url: str, policy: FetchPolicy, sink: BinaryIO) -> DownloadedAudio:
        raise AssertionError("downloaded again")

    outcome = download_step(store, progress, Publisher(), never)(fetched())

    assert outcome == {"outcome": "already_stored", "object": uri}
    assert store.objects == {}
    stage, status, columns = progress.records[-1]
    assert (stage, status) == (Stage.DOWNLOAD, StageStatus.OK)
    assert columns["RecordingUri"] == uri and columns["RecordingSha256"] == "ab" * 32
    assert (columns["RecordingBytes"], columns["RecordingStoredAt"]) == (1234, NOW)


def test_a_call_without_recording_goes_on_with_a_reason() -> None:
    publisher, progress = Publisher(), Progress()
    outcome = download_step(Store(), progress, publisher, fake_download)(fetched(recording=False))
    assert outcome["reason"] == "no_recording"
    notice = CallWithoutRecording.from_data(publisher.sent[0][1])
    assert publisher.sent[0][0] == "recordings.stored"
    assert notice.reason == "no_recording" and notice.call_id == "CAL1"
    assert progress.records[-1][1] is StageStatus.SKIPPED


def test_a_call_without_recording_not_handed_on_is_not_recorded_as_skipped() -> None:
    progress = Progress()
    step = download_step(Store(), progress, FailingPublisher(), fake_download)  # type: ignore[arg-type]
    with pytest.raises(PublishFailed):
        step(fetched(recording=False))
    assert progress.records == []


def test_failing_downloads_are_retried_then_go_on_without_audio() -> None:
    publisher, progress = Publisher(), Progress()

    def broken(url: str, policy: FetchPolicy, sink: BinaryIO) -> DownloadedAudio:
        raise AudioRejected("not audio: magic bytes", reason="magic_bytes")

    step = download_step(Store(), progress, publisher, broken)
    for _ in range(2):
        with pytest.raises(AudioRejected):
            step(fetched())
    outcome = step(fetched())
    assert outcome["reason"] == "download_failed" and "after 3 attempts" in outcome["detail"]
    assert CallWithoutRecording.from_data(publisher.sent[0][1]).reason == "download_failed"
    assert progress.records[-1][1] is StageStatus.FAILED


def test_transient_download_errors_raise_for_redelivery() -> None:
    def flaky(url: str, policy: FetchPolicy, sink: BinaryIO) -> DownloadedAudio:
        raise FetchFailed("503 from the recording host")

    with pytest.raises(FetchFailed):
        download_step(Store(), Progress(), Publisher(), flaky)(fetched())


def test_an_unsafe_url_is_dead_lettered() -> None:
    def unsafe(url: str, policy: FetchPolicy, sink: BinaryIO) -> DownloadedAudio:
        raise UnsafeUrl("host 10.0.0.1 is an IP literal")

    with pytest.raises(PermanentError) as caught:
        download_step(Store(), Progress(), Publisher(), unsafe)(fetched())
    assert caught.value.reason == "unsafe_recording_url"


def test_a_recording_callrail_does_not_serve_yet_is_asked_again_then_given_up() -> None:
    publisher, progress = Publisher(), Progress()
    step = download_step(Store(), progress, publisher, fake_download, Client(recording_url=None))
    for _ in range(2):
        with pytest.raises(RecordingNotReady):
            step(fetched())
    assert publisher.sent == []  # not given up on while attempts remain
    outcome = step(fetched())
    assert outcome["reason"] == "no_recording" and "after 3 attempts" in outcome["detail"]
    assert CallWithoutRecording.from_data(publisher.sent[0][1]).reason == "no_recording"


def test_a_recording_the_webhook_announced_is_fetched_though_the_api_lists_none_yet() -> None:
    store = Store()
    message = fetched(recording=False)
    announced = message.model_copy(
        update={"details": message.details.model_copy(update={"recording_announced": True})}
    )
    outcome = download_step(store, Progress(), Publisher(), fake_download)(announced)
    assert outcome["outcome"] == "stored"
    with pytest.raises(RecordingNotReady):  # and not given up on at once when not served
        download_step(Store(), Progress(), Publisher(), fake_download, Client(recording_url=None))(
            announced
        )


def test_recording_prefix_refuses_ids_that_escape() -> None:
    assert recording_prefix("acme", "CAL1") == "tenants/acme/calls/CAL1/recording"
    with pytest.raises(ValueError, match="invalid"):
        recording_prefix("acme", "../../etc")


def test_messages_round_trip_through_json() -> None:
    message = fetched()
    assert CallFetched.from_data(message.to_data()) == message
    assert io.BytesIO(message.to_data()).read()  # bytes, as Pub/Sub wants
