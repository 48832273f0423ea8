"""``make run``: the whole local stack in the foreground, with a demo call sent through."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
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
    webhook_from_call,
)
from callpipe.devstack.processes import StartupError
from callpipe.devstack.stack import LocalStack, config_from_env
from callpipe.schedules import LocalScheduler
from callpipe.secrets import LocalSecretStore
from callpipe.spanner_db import open_database
from callpipe.tenancy import OnboardingRequest, TenantRepository

# Colours only on a terminal (and never with NO_COLOR set), so logs and pipes stay plain.
_COLOUR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
BOLD = "\033[1m" if _COLOUR else ""
DIM = "\033[2m" if _COLOUR else ""
GREEN = "\033[32m" if _COLOUR else ""
YELLOW = "\033[33m" if _COLOUR else ""
RED = "\033[31m" if _COLOUR else ""
RESET = "\033[0m" if _COLOUR else ""


class _Stop(Exception):
    pass


def _say(step: str, text: str) -> None:
    print(f"{BOLD}{step}{RESET} {text}", flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def run_local_stack(demo: bool = True, exit_after_demo: bool = False) -> int:
    import secrets

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C (SIGINT) stops everything even when a shell started us as a background job,
    # which makes the job ignore SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = config_from_env()
    api_key = secrets.token_urlsafe(24)
    config.simulator_accounts = {DEMO_ACCOUNT_ID: api_key}
    stack = LocalStack(config)
    follower: LogFollower | None = None
    try:
        started = time.monotonic()
        p = stack.config.ports
        _say(
            "[1/7]",
            f"starting the Pub/Sub emulator (:{p.pubsub}), the Spanner emulator "
            f"(:{p.spanner_grpc}) and fake-gcs-server (:{p.gcs}) ...",
        )
        stack.start_emulators()
        _say("     ", f"{GREEN}ready{RESET} in {time.monotonic() - started:.1f} s")

        _say("[2/7]", "provisioning from schemas/pipeline.yaml and schemas/spanner/schema.sql ...")
        stack.provision()
        topology = stack.topology
        _say("     ", f"topics: {', '.join(topology.all_topics())}")
        _say("     ", f"subscriptions: {', '.join(s.name for s in topology.subscriptions())}")
        _say(
            "     ",
            f"buckets: {stack.config.webhook_bucket}, {stack.config.audio_bucket} "
            f"(OBJECT_FINALIZE of tenants/ → {stack.recordings_topic}); "
            f"Spanner database {stack.config.spanner_instance}/{stack.config.spanner_database}",
        )
        env_file = stack.write_env_file()

        _say("[3/7]", f"starting the CallRail API simulator on {stack.simulator_url} ...")
        stack.start_simulator()
        calls = _demo_calls(stack.simulator_data_dir)
        _say(
            "     ",
            f"{len(calls)} calls from {stack.simulator_data_dir} (account {DEMO_ACCOUNT_ID}; "
            f"{stack.config.simulator_rate_limit_per_minute} requests/min)",
        )

        token = None
        if demo:
            _say(
                "[4/7]",
                f"onboarding the demo tenant '{DEMO_TENANT_ID}' (company {DEMO_COMPANY_ID}) ...",
            )
            token = _seed_demo(stack, api_key)
            _say(
                "     ",
                f"signing token and CallRail API key stored in {stack.secrets_dir}/ "
                "(local secret store)",
            )
        else:
            _say("[4/7]", "no demo tenant (--no-demo)")

        _say("[5/7]", "starting the functions under functions-framework (gunicorn) ...")
        stack.start_functions()
        for name, step in topology.steps.items():
            trigger = "HTTP" if step.trigger.type == "http" else f"push from {step.trigger.topic}"
            _say("     ", f"{name:<19} {stack.function_url(name)}  ({trigger})")
        follower = LogFollower(stack.log_dir, list(topology.steps))
        follower.start()

        if demo and token:
            _say(
                "[6/7]",
                f"sending a signed Post-Call webhook for each of the {len(calls)} demo calls ...",
            )
            call_ids = _send_demo(stack, token, calls)
            _say("[7/7]", "following the calls: fetch, download, transcribe, analyze, persist ...")
            _follow(call_ids)
            _read_through_api(stack, call_ids[0])
        else:
            _say("[6/7]", "skipped (no demo)")
            _say("[7/7]", "skipped (no demo)")

        _print_usage(stack, env_file)
        if exit_after_demo:
            return 0
        scheduler = _start_schedules(stack)
        print(f"{BOLD}Serving. Ctrl-C stops everything.{RESET}", flush=True)
        while True:
            _run_due(scheduler)
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
        print("stopped: emulators, simulator and functions are down", flush=True)


def _demo_calls(data_dir: Path) -> list[dict[str, Any]]:
    calls = []
    for path in sorted((data_dir / "calls").glob("*.json")):
        calls.append(json.loads(path.read_text(encoding="utf-8")))
    return calls


def onboard_demo_tenant(secrets_dir: Path, api_key: str | None = None) -> str:
    """Onboard the demo tenant with a fresh signing token (returned) in the local stack."""
    import secrets

    token = secrets.token_urlsafe(24)
    TenantRepository(open_database(Settings())).onboard(
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
            api_key=api_key,
        ),
        LocalSecretStore(secrets_dir),
    )
    return token


def _seed_demo(stack: LocalStack, api_key: str) -> str:
    token = onboard_demo_tenant(stack.secrets_dir, api_key)
    from callpipe.api.auth import load_signing_key

    load_signing_key(LocalSecretStore(stack.secrets_dir), create_if_missing=True)
    return token


def _send_demo(stack: LocalStack, token: str, calls: list[dict[str, Any]]) -> list[str]:
    url = f"{stack.function_url('intake')}/api/v1/callrail/webhook"
    call_ids = []
    for index, call in enumerate(calls):
        body = json.dumps(webhook_from_call(call)).encode("utf-8")
        headers = {"Content-Type": "application/json", "Signature": compute_signature(token, body)}
        response = httpx.post(url, content=body, headers=headers, timeout=15)
        colour = GREEN if response.status_code == 202 else RED
        label = call.get("_simulator", {}).get("title") or call.get("customer_city") or ""
        _say("     ", f"{call['id']} {label[:40]:<40} → {colour}HTTP {response.status_code}{RESET}")
        call_ids.append(str(call["id"]))
        if index == 0:
            # A duplicate delivery of the same webhook yields one call downstream.
            again = httpx.post(url, content=body, headers=headers, timeout=15)
            _say(
                "     ",
                f"{call['id']} the same webhook again (duplicate) → HTTP {again.status_code}",
            )
    return call_ids


_FOLLOW_SQL = (
    "SELECT c.CallId, c.Stage, c.StageStatus, c.RecordingStatus, c.RecordingUri, c.RecordingBytes, "
    "c.RecordingDetail, (SELECT COUNT(*) FROM WebhookEvents e WHERE e.TenantId = c.TenantId "
    "AND e.CallId = c.CallId), c.TranscriptStatus, c.TranscriptReason, c.TranscriptUri, "
    "c.TranscriptEngine, c.TranscriptModel, c.SpeakerCount, c.AudioSeconds, c.TranscriptSegments, "
    "c.AnalysisStatus, c.AnalysisReason, c.AnalysisEngine, c.Analysis "
    "FROM Calls c WHERE c.TenantId = @t AND c.CallId IN UNNEST(@ids)"
)


def _follow(call_ids: list[str], timeout: float = 300.0) -> None:
    """Wait until every demo call is stored complete (or stopped somewhere), then show it."""
    from google.cloud import spanner

    settings = Settings()
    database = open_database(settings)
    deadline = time.monotonic() + timeout
    rows: dict[str, Any] = {}
    shown_progress = 0.0
    while time.monotonic() < deadline:
        with database.snapshot() as snapshot:
            result = snapshot.execute_sql(
                _FOLLOW_SQL,
                params={"t": DEMO_TENANT_ID, "ids": call_ids},
                param_types={
                    "t": spanner.param_types.STRING,
                    "ids": spanner.param_types.Array(spanner.param_types.STRING),
                },
            )
            rows = {row[0]: row for row in result}
        done = [r for r in rows.values() if r[1] == "persist" or r[2] == "dead_lettered"]
        if len(done) == len(call_ids):
            break
        if time.monotonic() - shown_progress > 10:
            stages = ", ".join(sorted(f"{r[1]}/{r[2]}" for r in rows.values()))
            _say("     ", f"{DIM}{len(done)}/{len(call_ids)} calls complete ({stages}) ...{RESET}")
            shown_progress = time.monotonic()
        time.sleep(0.5)
    for call_id in call_ids:
        row = rows.get(call_id)
        if row is None:
            _say(
                "     ",
                f"{RED}{call_id} was not registered within {timeout:.0f} s; see .local/logs/{RESET}",
            )
            continue
        (
            _,
            stage,
            status,
            rec_status,
            uri,
            size,
            detail,
            events,
            t_status,
            t_reason,
            t_uri,
            engine,
            model,
            speakers,
            seconds,
            segments,
            a_status,
            a_reason,
            a_engine,
            analysis,
        ) = row
        _say("     ", f"{BOLD}{call_id}{RESET} ({events} webhook event(s)); stage {stage}/{status}")
        if rec_status == "stored":
            _say("     ", f"  {GREEN}recording stored{RESET} {uri} ({size:,} bytes)")
        elif rec_status:
            _say("     ", f"  {YELLOW}goes on without audio{RESET} ({rec_status}: {detail})")
        if t_status == "transcribed":
            _say(
                "     ",
                f"  transcript ({engine} {model}, {speakers} speakers, {seconds or 0:.0f} s) → {t_uri}",
            )
            items = list(segments or [])
            for segment in items[:4]:
                _say(
                    "     ",
                    f"    {DIM}[{segment['start']:5.1f}s] {segment['speaker']}: {segment['text'][:90]}{RESET}",
                )
            if len(items) > 4:
                _say("     ", f"    {DIM}… {len(items) - 4} more segments{RESET}")
        elif t_status:
            _say("     ", f"  no transcript ({t_reason})")
        if a_status == "analyzed" and analysis:
            a = dict(analysis)
            _say(
                "     ",
                f"  analysis ({a_engine}): {GREEN}lead score {a['lead_score']}{RESET}, "
                f"intent {a['intent']}, project {a['project_type']}, timeline {a['timeline']}, budget "
                f"{a['budget_indicator']}, sentiment {a['sentiment']}, urgency {a['urgency']}, spam "
                f"{a['spam_likelihood']:.2f}, appointment {a['appointment_requested']}, "
                f"follow-up {a['follow_up_required']}",
            )
            _say("     ", f"    {DIM}{a['summary']}{RESET}")
        elif a_status:
            _say("     ", f"  {YELLOW}analysis {a_status}{RESET}: {a_reason}")
    completed = _completed_events(settings.google_cloud_project, call_ids)
    _say(
        "     ",
        f"{GREEN}stored in Spanner{RESET} (Calls, CallStages); {completed} call.completed event(s) "
        f"on {DIM}calls.completed{RESET}",
    )


def _read_through_api(stack: LocalStack, call_id: str) -> None:
    """The demo tenant reads its calls back through the REST API with its own token."""
    from callpipe.api.auth import issue_token, load_signing_key

    key = load_signing_key(LocalSecretStore(stack.secrets_dir))
    token = issue_token(key, tenant_id=DEMO_TENANT_ID, ttl_seconds=3600)
    api = stack.function_url("api")
    headers = {"Authorization": f"Bearer {token}"}
    listing = httpx.get(
        f"{api}/api/v1/tenants/{DEMO_TENANT_ID}/requests", headers=headers, timeout=15
    )
    one = httpx.get(f"{api}/api/v1/requests/{call_id}", headers=headers, timeout=15)
    analytics = httpx.get(
        f"{api}/api/v1/tenants/{DEMO_TENANT_ID}/analytics", headers=headers, timeout=15
    )
    other = httpx.get(
        f"{api}/api/v1/tenants/not-{DEMO_TENANT_ID}/requests", headers=headers, timeout=15
    )
    count = len(listing.json().get("items", [])) if listing.is_success else 0
    colour = GREEN if one.status_code == 200 else RED
    _say(
        "     ",
        f"API {api}: GET /api/v1/tenants/{DEMO_TENANT_ID}/requests → HTTP {listing.status_code} "
        f"({count} calls); GET /api/v1/requests/{call_id} → {colour}HTTP {one.status_code}{RESET}; "
        f"analytics → HTTP {analytics.status_code}; another tenant's path → HTTP {other.status_code}",
    )


def _completed_events(project: str, call_ids: list[str]) -> int:
    from callpipe.replay import PullSubscription, peek

    pulled = peek(PullSubscription(project, "calls.completed.backlog"), 200)
    return sum(1 for p in pulled if p.attributes.get("call_id") in call_ids)


def _start_schedules(stack: LocalStack) -> LocalScheduler:
    """The topology's schedules, run here as Cloud Scheduler runs them in production."""
    from callpipe.publishing import PubSubPublisher

    scheduler = LocalScheduler(stack.topology, PubSubPublisher(stack.config.project))
    now = datetime.now(UTC)
    for name, when in scheduler.next_runs(now).items():
        spec = stack.topology.schedules[name]
        _say(
            "     ",
            f"schedule {name}: {spec.cron} ({spec.time_zone}) → {spec.topic}, next at "
            f"{when:%H:%M %Z}; now: .venv/bin/callpipe schedules run {name}",
        )
    return scheduler


def _run_due(scheduler: LocalScheduler) -> None:
    try:
        for name in scheduler.tick(datetime.now(UTC)):
            _say("     ", f"schedule {name}: published")
    except Exception as error:  # noqa: BLE001 - the next second's tick tries again
        print(f"{YELLOW}a schedule could not publish:{RESET} {error}", flush=True)


def _print_usage(stack: LocalStack, env_file: Path) -> None:
    intake = stack.function_url("intake")
    api = stack.function_url("api")
    print(
        f"""
{BOLD}Try it{RESET} (in another shell, from this directory):
  .venv/bin/callpipe webhooks sample > /tmp/call.json
  SIG=$(.venv/bin/callpipe webhooks sign /tmp/call.json)
  curl -i -H 'Content-Type: application/json' -H "Signature: $SIG" \\
       --data-binary @/tmp/call.json {intake}/api/v1/callrail/webhook
  curl -s {intake}/health
  .venv/bin/callpipe tenants list
  .venv/bin/callpipe status
  TOKEN=$(.venv/bin/callpipe tokens issue --tenant demo)
  curl -s -H "Authorization: Bearer $TOKEN" {api}/api/v1/tenants/demo/requests
  curl -s -H "Authorization: Bearer $TOKEN" {api}/api/v1/tenants/demo/analytics
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
    keys = (
        "tenant_id",
        "call_id",
        "status",
        "outcome",
        "object",
        "tenants",
        "known",
        "queued",
        "missing",
        "latency_ms",
        "reason",
        "error",
    )
    extra = " ".join(f"{k}={entry[k]}" for k in keys if k in entry)
    return f"{entry.get('severity', '')} {entry.get('message', '')} {extra}"
