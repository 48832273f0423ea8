"""GcsOperationStore, the record of a running BatchRecognize, against fake-gcs-server.

The record sits next to the recording it is for; it is read back only for that recording,
survives a corrupt write as "no record", and removing it twice is fine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpipe.devstack.emulators import start_gcs
from callpipe.devstack.processes import free_port
from callpipe.speech.google_operations import (
    GcsOperationStore,
    PendingOperation,
    record_location,
)

pytestmark = pytest.mark.timeout(60)

BUCKET = "recordings"
RECORDING = f"gs://{BUCKET}/tenants/t1/calls/CAL1/recording.mp3"


@pytest.fixture(scope="module")
def storage_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    port = free_port()
    server = start_gcs(port, tmp_path_factory.mktemp("gcs"))
    try:
        client = storage.Client(
            project="p",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
        )
        client.create_bucket(BUCKET)
        yield client
    finally:
        server.stop()


def pending(recording_uri: str = RECORDING, name: str = "op-1") -> PendingOperation:
    return PendingOperation(
        name=f"projects/P/locations/us/operations/{name}",
        recording_uri=recording_uri,
        request_key="k" * 64,
        started_at=1_700_000_000.5,
    )


def test_the_record_sits_next_to_the_recording_and_reads_back(storage_client: Any) -> None:
    store = GcsOperationStore(storage_client)
    assert store.load(RECORDING) is None

    store.save(pending())

    blob = storage_client.bucket(BUCKET).get_blob("tenants/t1/calls/CAL1/transcribe-operation.json")
    assert blob is not None and blob.content_type == "application/json"
    assert json.loads(blob.download_as_bytes())["name"].endswith("/operations/op-1")
    assert store.load(RECORDING) == pending()

    store.save(pending(name="op-2"))  # a newer operation replaces it
    assert store.load(RECORDING) == pending(name="op-2")

    store.forget(RECORDING)
    assert store.load(RECORDING) is None
    store.forget(RECORDING)  # already gone: fine


def test_a_record_of_another_recording_or_unreadable_is_no_record(storage_client: Any) -> None:
    store = GcsOperationStore(storage_client)
    other = f"gs://{BUCKET}/tenants/t1/calls/CAL2/recording.wav"
    bucket, name = record_location(other)
    storage_client.bucket(bucket).blob(name).upload_from_string(b"{not json")
    assert store.load(other) is None

    # Same folder, other file name: the record says which recording it is for.
    store.save(pending(recording_uri=other))
    assert store.load(f"gs://{BUCKET}/tenants/t1/calls/CAL2/recording.mp3") is None
    assert store.load(other) == pending(recording_uri=other)


def test_saving_and_forgetting_are_best_effort(tmp_path: Path) -> None:
    """Nothing listens there: the attempt goes on (a retry would start another operation)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    unreachable = storage.Client(
        project="p",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"},
    )
    store = GcsOperationStore(unreachable, timeout_seconds=0.5)
    store.save(pending())
    store.forget(RECORDING)


def test_record_location() -> None:
    assert record_location(RECORDING) == (BUCKET, "tenants/t1/calls/CAL1/transcribe-operation.json")
    assert record_location("gs://b/call.mp3") == ("b", "transcribe-operation.json")


def test_one_attempt_at_a_time_may_start_the_operation(storage_client: Any) -> None:
    first, second = GcsOperationStore(storage_client), GcsOperationStore(storage_client)
    recording = f"gs://{BUCKET}/tenants/t1/calls/CALclaim/recording.mp3"
    assert first.claim(recording, "k" * 64) is True
    assert second.claim(recording, "k" * 64) is False  # a fresh claim: it resumes later
    claimed = first.load(recording)
    assert claimed is not None and claimed.claimed

    # the operation started: its record replaces the claim, and is no claim to respect
    first.save(pending(recording))
    loaded = second.load(recording)
    assert loaded is not None and not loaded.claimed
    assert second.claim(recording, "j" * 64) is True  # e.g. the operation was gone


def test_a_claim_its_attempt_left_behind_is_taken_over(storage_client: Any) -> None:
    store = GcsOperationStore(storage_client)
    recording = f"gs://{BUCKET}/tenants/t1/calls/CALstale/recording.mp3"
    bucket, name = record_location(recording)
    stale = PendingOperation(
        name="", recording_uri=recording, request_key="k" * 64, started_at=1_700_000_000.0
    )
    storage_client.bucket(bucket).blob(name).upload_from_string(stale.to_json())
    assert store.claim(recording, "k" * 64) is True


def test_two_attempts_claiming_at_once_get_one_claim(storage_client: Any) -> None:
    """Both found no record; the generation precondition lets one write win."""
    recording = f"gs://{BUCKET}/tenants/t1/calls/CALrace/recording.mp3"
    bucket, name = record_location(recording)
    blob = storage_client.bucket(bucket).blob(name)
    claim = PendingOperation(
        name="", recording_uri=recording, request_key="k" * 64, started_at=1_900_000_000.0
    )
    blob.upload_from_string(claim.to_json(), if_generation_match=0)

    class LateReader(GcsOperationStore):
        """Saw no record, as if it read just before the other attempt wrote its claim."""

        def _blob(self, recording_uri: str) -> Any:
            found = super()._blob(recording_uri)

            def missing(**kwargs: Any) -> None:
                from google.api_core.exceptions import NotFound

                raise NotFound("no record yet")

            found.reload = missing
            return found

    assert LateReader(storage_client).claim(recording, "k" * 64) is False


def test_a_record_that_changes_while_it_is_read_is_left_to_the_other_attempt(
    storage_client: Any,
) -> None:
    recording = f"gs://{BUCKET}/tenants/t1/calls/CALchanging/recording.mp3"
    bucket, name = record_location(recording)
    storage_client.bucket(bucket).blob(name).upload_from_string(pending(recording).to_json())

    class Overtaken(GcsOperationStore):
        """Another attempt rewrites the record between this one's two reads."""

        def _blob(self, recording_uri: str) -> Any:
            found = super()._blob(recording_uri)
            read = found.reload

            def reload_then_overtaken(**kwargs: Any) -> None:
                read(**kwargs)
                other = storage_client.bucket(bucket).blob(name)
                other.upload_from_string(pending(recording, name="op-2").to_json())

            found.reload = reload_then_overtaken
            return found

    assert Overtaken(storage_client).claim(recording, "k" * 64) is False
    record = GcsOperationStore(storage_client).load(recording)
    assert record is not None and record.name.endswith("op-2")  # the other's, untouched
