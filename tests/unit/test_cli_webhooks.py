"""``callpipe webhooks sample``: a body for a new call, added to the simulator when one runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callpipe.callrail.webhook import CallRailWebhook, EventType
from callpipe.cli import webhooks
from callpipe.demo import DEMO_COMPANY_ID
from callpipe.simulator.faults import NO_FAULTS
from callpipe.simulator.store import CallStore

DEMO_CALLS = Path(webhooks.__file__).resolve().parents[1] / "simulator" / "demo_calls" / "calls"
TEMPLATE = "CAL3c513db4202bca90b5d19c704b30bf56"


@pytest.fixture
def simulator_data(tmp_path: Path) -> Path:
    """A simulator data folder holding one demo call and its recording."""
    calls = tmp_path / "calls"
    calls.mkdir()
    for suffix in (".json", ".mp3"):
        shutil.copy(DEMO_CALLS / f"{TEMPLATE}{suffix}", calls)
    return tmp_path


def test_with_a_simulator_the_new_call_is_added_there_with_its_recording(
    simulator_data: Path,
) -> None:
    result = CliRunner().invoke(webhooks.app, ["sample", "--simulator-data", str(simulator_data)])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    webhook = CallRailWebhook.model_validate(payload)
    call_id = webhook.call_id
    assert call_id and call_id != TEMPLATE
    assert webhook.classify() is EventType.POST_CALL
    assert webhook.company_resource_id == DEMO_COMPANY_ID
    assert TEMPLATE not in result.stdout  # the links name the new call
    assert f"added call {call_id}" in result.stderr

    served = CallStore(simulator_data).get(call_id)  # what the simulator's API will answer
    assert served is not None and served.audio_path is not None and served.audio_path.is_file()
    assert served.account_id == payload["timeline_url"].split("/a/")[1].split("/")[0]


def test_the_simulator_folder_comes_from_the_running_stack(
    simulator_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLRAIL_SIM_DATA_DIR", str(simulator_data))
    result = CliRunner().invoke(webhooks.app, ["sample", "--company-id", "COMother"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["company_resource_id"] == "COMother"
    assert CallStore(simulator_data).get(payload["resource_id"]) is not None


def test_without_a_simulator_or_with_a_given_call_id_nothing_is_added(
    simulator_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLRAIL_SIM_DATA_DIR", raising=False)
    alone = CliRunner().invoke(webhooks.app, ["sample"])
    given = CliRunner().invoke(
        webhooks.app,
        ["sample", "--simulator-data", str(simulator_data), "--call-id", "CALgiven"],
    )

    assert alone.exit_code == given.exit_code == 0
    assert json.loads(given.stdout)["resource_id"] == "CALgiven"
    assert [p.name for p in (simulator_data / "calls").glob("*.json")] == [f"{TEMPLATE}.json"]


def test_an_empty_simulator_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(webhooks.app, ["sample", "--simulator-data", str(tmp_path)])
    assert result.exit_code == 1
    assert "cannot add a call to the simulator's data" in result.stderr


def test_the_copy_is_served_without_the_templates_faults_and_unreadable_files_are_skipped(
    simulator_data: Path,
) -> None:
    template = simulator_data / "calls" / f"{TEMPLATE}.json"
    document = json.loads(template.read_text())
    document["_simulator"]["faults"] = {"api_status_sequence": [500, 500], "recording": "missing"}
    template.write_text(json.dumps(document))
    (simulator_data / "calls" / "broken.json").write_text("{ half a fi")

    result = CliRunner().invoke(webhooks.app, ["sample", "--simulator-data", str(simulator_data)])

    assert result.exit_code == 0, result.output
    copy = CallStore(simulator_data).get(json.loads(result.stdout)["resource_id"])
    original = CallStore(simulator_data).get(TEMPLATE)
    assert original is not None and original.meta.faults.recording == "missing"
    assert copy is not None and copy.meta.faults == NO_FAULTS
    assert not list((simulator_data / "calls").glob("*.partial"))


def test_a_folder_without_recordings_is_a_clear_error(simulator_data: Path) -> None:
    template = simulator_data / "calls" / f"{TEMPLATE}.json"
    document = json.loads(template.read_text())
    del document["_simulator"]["audio"]
    template.write_text(json.dumps(document))

    result = CliRunner().invoke(webhooks.app, ["sample", "--simulator-data", str(simulator_data)])

    assert result.exit_code == 1
    assert "no call with a recording" in result.stderr
