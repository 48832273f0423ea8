"""``make run``: the whole local stack in the foreground, with a demo call sent through."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from callpipe.callrail.signature import compute_signature
from callpipe.config import Settings
from callpipe.demo import (
    DEMO_ACCOUNT_ID,
    DEMO_COMPANY_ID,
    DEMO_LEGACY_COMPANY_ID,
    DEMO_TENANT_ID,
    DEMO_TENANT_NAME,
    sample_post_call,
)
from callpipe.devstack.processes import StartupError
from callpipe.devstack.stack import LocalStack, config_from_env
from callpipe.secrets import LocalSecretStore
from callpipe.spanner_db import open_database
from callpipe.tenancy import OnboardingRequest, TenantRepository

BOLD = "\033[1m"
DIM = "\033[2m"
GREEN = "\033[32m"
RED = "\033[31m"
RESET = "\033[0m"


class _Stop(Exception):
    pass


def _say(step: str, text: str) -> None:
    print(f"{BOLD}{step}{RESET} {text}", flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def run_local_stack(demo: bool = True, exit_after_demo: bool = False) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    stack = LocalStack(config_from_env())
    follower: LogFollower | None = None
    try:
        started = time.monotonic()
        p = stack.config.ports
        _say(
            "[1/6]",
            f"starting the Pub/Sub emulator (:{p.pubsub}), the Spanner emulator "
            f"(:{p.spanner_grpc}) and fake-gcs-server (:{p.gcs}) ...",
        )
        stack.start_emulators()
        _say("     ", f"{GREEN}ready{RESET} in {time.monotonic() - started:.1f} s")

        _say("[2/6]", "provisioning from schemas/pipeline.yaml and schemas/spanner/schema.sql ...")
        stack.provision()
        topology = stack.topology
        _say("     ", f"topics: {', '.join(topology.all_topics())}")
        _say("     ", f"subscriptions: {', '.join(s.name for s in topology.subscriptions())}")
        _say(
            "     ",
            f"buckets: {stack.config.webhook_bucket}, {stack.config.audio_bucket}; "
            f"Spanner database {stack.config.spanner_instance}/{stack.config.spanner_database}",
        )
        env_file = stack.write_env_file()

        token = None
        if demo:
            _say(
                "[3/6]",
                f"onboarding the demo tenant '{DEMO_TENANT_ID}' (company {DEMO_COMPANY_ID}) ...",
            )
            token = _seed_demo(stack)
            _say("     ", f"signing token stored in {stack.secrets_dir}/ (local secret store)")
        else:
            _say("[3/6]", "no demo tenant (--no-demo)")

        _say("[4/6]", "starting the functions under functions-framework (gunicorn) ...")
        stack.start_functions()
        for name, step in topology.steps.items():
            trigger = "HTTP" if step.trigger.type == "http" else f"push from {step.trigger.topic}"
            _say("     ", f"{name:<14} {stack.function_url(name)}  ({trigger})")
        follower = LogFollower(stack.log_dir, list(topology.steps))
        follower.start()

        if demo and token:
            _say("[5/6]", "sending a signed demo Post-Call webhook to intake ...")
            call_id = _send_demo(stack, token)
            _say("[6/6]", "following the call through the pipeline ...")
            _follow(stack, call_id)
        else:
            _say("[5/6]", "skipped (no demo)")
            _say("[6/6]", "skipped (no demo)")

        _print_usage(stack, env_file)
        if exit_after_demo:
            return 0
        print(f"{BOLD}Serving. Ctrl-C stops everything.{RESET}", flush=True)
        while True:
            for process in stack.processes:
                if not process.running:
                    print(
                        f"{RED}{process.name} exited; log {process.log_path}:{RESET}\n{process.log_tail()}"
                    )
                    return 1
            time.sleep(1.0)
    except StartupError as error:
        print(f"{RED}the local stack could not start:{RESET} {error}", flush=True)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if follower:
            follower.stop()
        stack.stop()
        print("stopped: emulators and functions are down", flush=True)


def _seed_demo(stack: LocalStack) -> str:
    import secrets

    token = secrets.token_urlsafe(24)
    settings = Settings()
    repo = TenantRepository(open_database(settings))
    repo.onboard(
        OnboardingRequest(
            tenant_id=DEMO_TENANT_ID,
            name=DEMO_TENANT_NAME,
            callrail_account_id=DEMO_ACCOUNT_ID,
            callrail_company_id=DEMO_COMPANY_ID,
            legacy_company_id=DEMO_LEGACY_COMPANY_ID,
            office_id="pasadena",
            office_name="Pasadena showroom",
            time_zone="America/Los_Angeles",
            signing_tokens=[token],
        ),
        LocalSecretStore(stack.secrets_dir),
    )
    return token


def _send_demo(stack: LocalStack, token: str) -> str:
    payload = sample_post_call()
    body = json.dumps(payload).encode("utf-8")
    url = f"{stack.function_url('intake')}/api/v1/callrail/webhook"
    response = httpx.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", "Signature": compute_signature(token, body)},
        timeout=15,
    )
    colour = GREEN if response.status_code == 202 else RED
    _say(
        "     ", f"POST {url} → {colour}HTTP {response.status_code}{RESET} {response.text.strip()}"
    )
    # A duplicate delivery of the same webhook, to show that it yields one call downstream.
    again = httpx.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", "Signature": compute_signature(token, body)},
        timeout=15,
    )
    _say("     ", f"same webhook again (a duplicate delivery) → HTTP {again.status_code}")
    return str(payload["resource_id"])


def _follow(stack: LocalStack, call_id: str, timeout: float = 60.0) -> None:
    from google.cloud import spanner

    settings = Settings()
    database = open_database(settings)
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        with database.snapshot() as snapshot:
            rows = list(
                snapshot.execute_sql(
                    "SELECT e.Status, e.ArchiveUri, c.Stage, c.StageStatus, e.EventKey "
                    "FROM WebhookEvents e JOIN Calls c ON c.TenantId = e.TenantId AND c.CallId = e.CallId "
                    "WHERE e.TenantId = @t AND e.CallId = @c",
                    params={"t": DEMO_TENANT_ID, "c": call_id},
                    param_types={"t": spanner.param_types.STRING, "c": spanner.param_types.STRING},
                )
            )
        if rows and rows[0][0] == "forwarded":
            row = rows[0]
            break
        time.sleep(0.5)
    if row is None:
        _say(
            "     ",
            f"{RED}the call did not get registered within {timeout:.0f} s; see .local/logs/{RESET}",
        )
        return
    status, archive_uri, stage, stage_status, key = row
    _say(
        "     ",
        f"{GREEN}registered{RESET} in Spanner: Calls({DEMO_TENANT_ID}, {call_id}) stage={stage}/{stage_status}; "
        f"WebhookEvents key {key} status={status} (one event for two deliveries)",
    )
    _say("     ", f"raw webhook archived at {archive_uri}")
    from callpipe.replay import PullSubscription, peek

    queued = [
        p
        for p in peek(
            PullSubscription(settings.google_cloud_project, "calls.registered.backlog"), 50
        )
        if p.attributes.get("call_id") == call_id
    ]
    _say(
        "     ",
        f"{GREEN}queued{RESET} on calls.registered: {len(queued)} message(s) for {call_id} "
        "(waiting in calls.registered.backlog for the fetch-call step)",
    )


def _print_usage(stack: LocalStack, env_file: Path) -> None:
    intake = stack.function_url("intake")
    print(
        f"""
{BOLD}Try it{RESET} (in another shell, from this directory):
  .venv/bin/callpipe webhooks sample > /tmp/call.json
  SIG=$(.venv/bin/callpipe webhooks sign /tmp/call.json)
  curl -i -H 'Content-Type: application/json' -H "Signature: $SIG" \\
       --data-binary @/tmp/call.json {intake}/api/v1/callrail/webhook
  curl -s {intake}/health
  .venv/bin/callpipe tenants list
{DIM}The CLI finds this stack through {env_file}; function logs are in {stack.log_dir}/.{RESET}
""",
        flush=True,
    )


class LogFollower:
    """Echo the functions' structured log lines to the console, one compact line each."""

    def __init__(self, log_dir: Path, steps: list[str]) -> None:
        self._paths = {step: log_dir / f"function-{step}.log" for step in steps}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        offsets = {
            step: (path.stat().st_size if path.exists() else 0)
            for step, path in self._paths.items()
        }
        while not self._stop.wait(0.3):
            for step, path in self._paths.items():
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[step])
                    chunk = handle.read()
                    offsets[step] = handle.tell()
                for line in chunk.decode("utf-8", errors="replace").splitlines():
                    print(f"{DIM}  [{step}] {_compact(line)}{RESET}", flush=True)


def _compact(line: str) -> str:
    try:
        entry: dict[str, Any] = json.loads(line)
    except ValueError:
        return line
    keys = ("tenant_id", "call_id", "status", "outcome", "latency_ms", "reason", "error")
    extra = " ".join(f"{k}={entry[k]}" for k in keys if k in entry)
    return f"{entry.get('severity', '')} {entry.get('message', '')} {extra}"
