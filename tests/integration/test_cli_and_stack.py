"""The operator CLI against the emulators, and `callpipe dev up` (what `make run` runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from callpipe.devstack.processes import free_port
from callpipe.devstack.stack import LocalStack
from tests.conftest import REPO

CLI = str(Path(sys.executable).parent / "callpipe")


def run_cli(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
        input=input,
        cwd=REPO,
    )


def test_help_explains_every_command() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for group in ("tenants", "webhooks", "quarantine", "dlq", "schemas", "dev"):
        assert group in top.stdout
    tenants = run_cli("tenants", "--help")
    for command in ("add", "list", "show", "add-token", "revoke-token", "set-api-key"):
        assert command in tenants.stdout


def test_tenant_onboarding_list_show_and_sign(
    stack: LocalStack, database: Any, tmp_path: Path
) -> None:
    tenant_id = f"acme-{uuid.uuid4().hex[:6]}"
    company = f"COM{uuid.uuid4().hex}"
    token = "acme-signing-token-" + uuid.uuid4().hex
    added = run_cli(
        "tenants",
        "add",
        "--tenant-id",
        tenant_id,
        "--name",
        "Acme Remodeling",
        "--callrail-account-id",
        "728790660",
        "--callrail-company-id",
        company,
        "--signing-token",
        token,
        "--json",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["tenant_id"] == tenant_id
    assert token not in added.stdout + added.stderr

    again = run_cli(
        "tenants",
        "add",
        "--tenant-id",
        tenant_id,
        "--name",
        "Acme",
        "--callrail-account-id",
        "1",
        "--callrail-company-id",
        f"COM{uuid.uuid4().hex}",
        "--signing-token",
        "another-token-1",
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr

    listed = run_cli("tenants", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    record = next(t for t in json.loads(listed.stdout) if t["tenant_id"] == tenant_id)
    assert record["companies"][0]["company_id"] == company
    assert token not in listed.stdout

    env = {**os.environ, "NEW_CALLRAIL_KEY": "rotated-api-key-42"}
    rotated = run_cli(
        "tenants",
        "set-api-key",
        "--tenant-id",
        tenant_id,
        "--api-key-env",
        "NEW_CALLRAIL_KEY",
        env=env,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "rotated-api-key-42" not in rotated.stdout
    from callpipe.apikeys import TenantApiKeys
    from callpipe.secrets import LocalSecretStore

    assert (
        TenantApiKeys(database, LocalSecretStore(stack.secrets_dir)).key_for(tenant_id)
        == "rotated-api-key-42"
    )

    (token_id,) = json.loads(added.stdout)["token_ids"]
    shown = run_cli("tenants", "show", tenant_id)
    assert shown.returncode == 0, shown.stderr
    assert f"company  {company} → office main" in shown.stdout
    # the token's own line (the tenant's status line says "active" too)
    secret = f"callrail-webhook-token-{company.lower()}-{token_id}"
    assert f"  token  {token_id} active, secret {secret}" in shown.stdout.splitlines()
    assert run_cli("tenants", "show", "no-such-tenant").returncode == 1

    body = tmp_path / "call.json"
    sample = run_cli("webhooks", "sample", "--company-id", company)
    body.write_text(sample.stdout)
    signature = run_cli("webhooks", "sign", str(body))
    assert signature.returncode == 0, signature.stderr
    from callpipe.callrail.signature import compute_signature

    assert signature.stdout.strip() == compute_signature(token, body.read_bytes())


def test_bad_identifiers_are_refused_with_a_message(stack: LocalStack) -> None:
    result = run_cli(
        "tenants",
        "add",
        "--tenant-id",
        "../etc",
        "--name",
        "x",
        "--callrail-account-id",
        "1",
        "--callrail-company-id",
        "COMabc",
        "--signing-token",
        "token-12345",
    )
    assert result.returncode == 1
    assert "invalid tenant id" in result.stderr


def test_cli_reports_a_stack_that_is_not_running(tmp_path: Path) -> None:
    env = {**os.environ, "SPANNER_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    result = run_cli("tenants", "list", env=env)
    assert result.returncode == 1
    assert "make run" in result.stderr


@pytest.mark.timeout(480)
def test_dev_up_runs_the_demo_and_leaves_no_process_behind(tmp_path: Path) -> None:
    import signal

    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    ports = {
        name: str(free_port())
        for name in (
            "CALLPIPE_PUBSUB_PORT",
            "CALLPIPE_SPANNER_PORT",
            "CALLPIPE_SPANNER_REST_PORT",
            "CALLPIPE_GCS_PORT",
            "CALLPIPE_SIMULATOR_PORT",
            "CALLPIPE_INTAKE_PORT",
            "CALLPIPE_REGISTER_CALL_PORT",
            "CALLPIPE_FETCH_CALL_PORT",
            "CALLPIPE_DOWNLOAD_RECORDING_PORT",
            "CALLPIPE_TRANSCRIBE_PORT",
            "CALLPIPE_ANALYZE_PORT",
            "CALLPIPE_PERSIST_PORT",
            "CALLPIPE_API_PORT",
        )
    }
    env.update(ports, CALLPIPE_STATE_DIR=str(tmp_path / "state"))
    process = subprocess.Popen(
        [CLI, "dev", "up", "--exit-after-demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # let it stop what it started
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"dev up did not finish:\n{output}")
    assert process.returncode == 0, output
    assert "HTTP 202" in output
    assert "the same webhook again (duplicate) → HTTP 202" in output
    assert output.count("recording stored") == 5, output
    assert "goes on without audio (no_recording" in output
    assert "1 webhook event(s)" in output and "2 webhook event(s)" not in output
    assert output.count("transcript (faster-whisper") == 5, output
    assert output.count("analysis (rules)") == 6, output
    assert "no transcript (no_recording)" in output
    assert "6 call.completed event(s)" in output, output
    assert "/requests → HTTP 200 (6 calls)" in output, output
    assert "another tenant's path → HTTP 404" in output
    assert "stopped" in output
    assert _processes_mentioning(*ports.values()) == []


def _processes_mentioning(*needles: str) -> list[Any]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(
            f":{n}" in cmdline
            or f"port {n}" in cmdline
            or f"--port={n}" in cmdline
            or f"-port {n}" in cmdline
            or f"--port {n}" in cmdline
            for n in needles
        ):
            found.append((entry.name, cmdline[:200]))
    return found


def dead_lettered_call(database: Any, tenant: Any) -> Any:
    """A registered call whose fetch was dead-lettered; its CallReceived message."""
    from callpipe.progress import SpannerProgress, Stage, StageStatus
    from tests.conftest import post_call_body, register_in_spanner
    from tests.functional.test_register_call_function import received

    body = post_call_body(tenant)
    message = received(tenant, body)
    register_in_spanner(database, message, json.loads(body))
    SpannerProgress(database).record(
        tenant.tenant_id,
        message.call_id,
        Stage.FETCH,
        StageStatus.DEAD_LETTERED,
        detail="callrail_not_found: CallRail has no call",
        correlation_id=message.correlation_id,
    )
    return message


def test_calls_show_and_status_find_a_dead_lettered_call(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    tenant = make_tenant()
    message = dead_lettered_call(database, tenant)

    shown = run_cli("calls", "show", message.call_id, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)[0]
    assert view["tenant_id"] == tenant.tenant_id
    assert [(s["stage"], s["status"]) for s in view["stages"]] == [
        ("register", "ok"),
        ("fetch", "dead_lettered"),
    ]
    assert run_cli("calls", "show", "CALnope").returncode == 1

    status = run_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["by_stage"][tenant.tenant_id] == {"fetch/dead_lettered": 1}
    assert message.call_id in [v["call_id"] for v in report["stuck"]]
    text = run_cli("status")
    assert "stuck or failing" in text.stdout and message.call_id in text.stdout


def test_status_shows_the_newest_failures_first_and_counts_them_all(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    """Dead letters stay until replayed: the oldest must not hide a new failure."""
    from callpipe.operations import status_report

    tenant = make_tenant()
    failed = [dead_lettered_call(database, tenant).call_id for _ in range(2)]

    report = status_report(database, timedelta(minutes=30), shown=1)
    assert [view.call_id for view in report.stuck] == [failed[-1]]  # the newest
    assert report.stuck_total >= 2


def test_a_dead_letter_of_a_stage_done_for_the_same_event_is_not_recorded(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    """A redelivery whose work was done (its acknowledgement lost) may still fail on every
    attempt; the call has moved on, and its record must not move back."""
    from callpipe.progress import SpannerProgress, Stage, StageStatus
    from tests.conftest import post_call_body, register_in_spanner
    from tests.functional.test_register_call_function import received

    tenant = make_tenant()
    body = post_call_body(tenant)
    message = received(tenant, body)
    register_in_spanner(database, message, json.loads(body))
    progress = SpannerProgress(database)
    progress.record(
        tenant.tenant_id,
        message.call_id,
        Stage.FETCH,
        StageStatus.OK,
        correlation_id=message.correlation_id,
    )
    progress.record(
        tenant.tenant_id,
        message.call_id,
        Stage.DOWNLOAD,
        StageStatus.OK,
        correlation_id=message.correlation_id,
    )

    def dead_letter(correlation_id: str) -> None:
        progress.record(
            tenant.tenant_id,
            message.call_id,
            Stage.FETCH,
            StageStatus.DEAD_LETTERED,
            detail="retries_exhausted: attempt 5 of 5: ConnectionError",
            correlation_id=correlation_id,
        )

    def stages() -> list[tuple[str, str]]:
        shown = run_cli("calls", "show", message.call_id, "--json")
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)[0]
        return [(s["stage"], s["status"]) for s in view["stages"]]

    assert (
        progress.done_detail(tenant.tenant_id, message.call_id, Stage.FETCH, message.correlation_id)
        is not None
    )
    assert progress.done_detail(tenant.tenant_id, message.call_id, Stage.FETCH, "f" * 32) is None
    assert (
        progress.done_detail(
            tenant.tenant_id, message.call_id, Stage.ANALYZE, message.correlation_id
        )
        is None
    )
    dead_letter(message.correlation_id)  # the same event: done already
    assert ("fetch", "ok") in stages()
    dead_letter("f" * 32)  # another event of the call (a modification) did fail
    assert ("fetch", "dead_lettered") in stages()
    assert progress.done_detail(tenant.tenant_id, message.call_id, Stage.FETCH, "f" * 32) is None
    progress.count_attempt(tenant.tenant_id, message.call_id, Stage.DOWNLOAD, "503")
    assert (
        progress.done_detail(
            tenant.tenant_id, message.call_id, Stage.DOWNLOAD, message.correlation_id
        )
        is None
    )


def test_a_step_run_again_after_the_call_moved_on_does_not_move_its_summary_back(
    stack: LocalStack, make_tenant: Any, database: Any
) -> None:
    """A Call Modified after the call completed runs fetch again (and download finds the
    recording stored): the stage rows are written, the call stays complete; a failure of
    such a run still shows."""
    from callpipe.progress import SpannerProgress, Stage, StageStatus
    from tests.conftest import post_call_body, register_in_spanner
    from tests.functional.test_register_call_function import received

    tenant = make_tenant()
    body = post_call_body(tenant)
    message = received(tenant, body)
    register_in_spanner(database, message, json.loads(body))
    progress = SpannerProgress(database)

    def record(stage: Stage, status: StageStatus, event: str = "c0ffee", **columns: Any) -> None:
        progress.record(
            tenant.tenant_id, message.call_id, stage, status, "x", event, columns or None
        )

    def summary() -> tuple[str, str, Any]:
        with database.snapshot() as snapshot:
            rows = list(
                snapshot.execute_sql(
                    "SELECT Stage, StageStatus, DurationSeconds FROM Calls "
                    "WHERE TenantId = @t AND CallId = @c",
                    params={"t": tenant.tenant_id, "c": message.call_id},
                    param_types={
                        "t": spanner_param_types().STRING,
                        "c": spanner_param_types().STRING,
                    },
                )
            )
        return rows[0][0], rows[0][1], rows[0][2]

    record(Stage.FETCH, StageStatus.OK)
    record(Stage.PERSIST, StageStatus.OK)
    record(Stage.FETCH, StageStatus.OK, DurationSeconds=321)  # the modification's fetch
    record(Stage.DOWNLOAD, StageStatus.OK)
    assert summary() == ("persist", "ok", 321)  # its columns written, the call still done
    record(Stage.FETCH, StageStatus.DEAD_LETTERED, event="beef")  # another event failed
    assert summary()[:2] == ("fetch", "dead_lettered")


def spanner_param_types() -> Any:
    from google.cloud.spanner_v1 import param_types

    return param_types
