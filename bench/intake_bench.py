"""Intake benchmark: CallRail webhook intake against a no-op function, on this machine.

``make bench-intake`` runs this script. It starts its own Pub/Sub emulator, Spanner
emulator and fake-gcs-server on free ports, provisions them from schemas/pipeline.yaml,
onboards one tenant, and serves two functions the way production serves intake
(functions-framework in the mode schemas/pipeline.yaml gives intake: ASGI on gunicorn's
uvicorn worker, or WSGI on gunicorn gthread; the same WORKERS and THREADS):

- ``intake``: functions/intake/main.py, publishing to the Pub/Sub emulator;
- ``noop``: bench/noop/main.py, which answers 202 without doing anything;
- ``floor`` (ASGI only): bench/floor/main.py, which reads the body, publishes it with
  intake's publisher and answers 202 once Pub/Sub accepted it: what any intake must do,
  without intake's checks. It publishes to a topic of its own. Its peak bounds what
  intake can reach here.

Every function gets intake's environment (``--intake-env`` included), and every run of
intake or the floor starts without the messages earlier runs left in Pub/Sub (their
subscriptions are deleted and created again).

Only intake is started, not register-call: the pipeline's subscriptions are pull
subscriptions (push=False), so published calls wait in Pub/Sub as they would for a
downstream step running on other machines, and the 2 cores are not shared with a consumer
that production runs elsewhere.

The load comes from ``wrk`` (Debian package, installed on first use) with
bench/wrk/signed_posts.lua, which cycles through N distinct pre-signed Post-Call bodies
(distinct call ids, fresh timestamps, base64 HMAC-SHA1 ``Signature`` header):

1. closed loop at a few concurrency levels (default 8, 32, 64 connections, 20 s each), both
   targets, accepted (HTTP 202) requests/s, p50 and p99;
2. a fixed-rate (open-loop) run at half of intake's peak rate, latency measured from each
   request's intended send time (no coordinated omission), intake and then no-op at the
   same rate.

Targets: intake's peak throughput at least 50% of the no-op's, and intake's p99 under 50 ms
at half of its peak rate. Results are printed as a table and written as JSON to
bench/results/intake-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from callpipe.callrail.signature import compute_signature
from callpipe.demo import sample_post_call
from callpipe.devstack.emulators import EmulatorPorts
from callpipe.devstack.processes import ManagedProcess, StartupError, http_ok
from callpipe.devstack.run import onboard_demo_tenant
from callpipe.devstack.stack import LocalStack, StackConfig
from callpipe.intake.service import WEBHOOK_PATH

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "wrk" / "signed_posts.lua"
NOOP_SOURCE = BENCH_DIR / "noop" / "main.py"
FLOOR_SOURCE = BENCH_DIR / "floor" / "main.py"
RESULTS_DIR = BENCH_DIR / "results"

THROUGHPUT_TARGET = 0.5  # intake's peak accepted req/s over the no-op's
P99_TARGET_MS = 50.0  # intake's p99 at half of its peak rate
RATE_FRACTION = 0.5
BUSY_CORES = 0.25  # CPU used by others during a run above which its figures are flagged


class BenchError(RuntimeError):
    pass


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def say(text: str) -> None:
    print(text, flush=True)


# -- the load generator ----------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk on PATH, installed from Debian's packages on first use (idempotent)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            "the load generator wrk is missing and cannot be installed from here "
            "(needs root and apt-get): run `sudo apt-get install -y wrk`, then again"
        )
    say("wrk (the HTTP load generator) is missing: installing the Debian package once ...")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    if _apt(install) != 0:
        say("  apt-get install failed: refreshing the package lists (apt-get update), retrying")
        _apt(["apt-get", "update", "-q"])
        if _apt(install, show_failure=True) != 0:
            raise BenchError("could not install wrk with apt-get (see above)")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    say(f"  installed {found}")
    return found


def _apt(argv: list[str], show_failure: bool = False) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 and show_failure:
        say((result.stdout + result.stderr)[-2000:])
    return result.returncode


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0] if first else "wrk"


# -- machine and process accounting ----------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every live process in a process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is field 3 of proc(5): state; pgrp is field 5, utime 14, stime 15
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


def idle_load(seconds: float) -> float:
    """Cores in use on the machine while nothing is measured (others' work, idle emulators)."""
    busy_before, total_before = machine_busy_seconds()
    time.sleep(seconds)
    busy_after, total_after = machine_busy_seconds()
    wall = (total_after - total_before) / (os.cpu_count() or 1)
    return (busy_after - busy_before) / wall if wall > 0 else 0.0


def process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by each process group, by wrk, and by the whole machine."""

    at: float
    groups: dict[str, float]
    wrk: float
    machine_busy: float

    @classmethod
    def take(cls, groups: dict[str, int], wrk_pid: int) -> CpuSample:
        return cls(
            at=time.monotonic(),
            groups={name: group_cpu_seconds(pgid) for name, pgid in groups.items()},
            wrk=process_cpu_seconds(wrk_pid),
            machine_busy=machine_busy_seconds()[0],
        )

    def cores_since(self, before: CpuSample) -> dict[str, float]:
        """Average cores used between two samples: per group, wrk, other work, machine."""
        wall = self.at - before.at
        if wall <= 0:
            return {}
        cores = {name: (self.groups[name] - before.groups[name]) / wall for name in self.groups}
        cores["wrk"] = (self.wrk - before.wrk) / wall
        machine = (self.machine_busy - before.machine_busy) / wall
        # what the machine spent beyond this stack and wrk: other users' work, if any
        cores["other"] = max(0.0, machine - sum(cores.values()))
        cores["machine"] = machine
        return {name: round(value, 2) for name, value in cores.items()}


def describe_machine() -> dict[str, Any]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    from importlib.metadata import version

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "functions_framework": version("functions-framework"),
        "gunicorn": version("gunicorn"),
        "google_cloud_pubsub": version("google-cloud-pubsub"),
    }


# -- request bodies ---------------------------------------------------------------------------


def write_bodies(directory: Path, token: str, count: int, files: int) -> None:
    """``count`` distinct signed Post-Call bodies spread over ``files`` files (one per wrk
    thread at most), each line ``<signature>\\t<body>``."""
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        handles = [
            stack.enter_context((directory / f"body-{k}.txt").open("w", encoding="ascii"))
            for k in range(files)
        ]
        for i in range(count):
            body = json.dumps(sample_post_call()).encode("ascii")
            signature = compute_signature(token, body)
            handles[i % files].write(f"{signature}\t{body.decode('ascii')}\n")


# -- one load run -----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    pgid: int


@dataclass
class RunResult:
    target: str
    mode: str  # "closed" or "rate"
    connections: int
    rate: float | None
    duration_s: float
    accepted: int
    accepted_per_s: float
    other_statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    service_ms: dict[str, float]
    cpu_cores: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.other_statuses.values()) + sum(self.socket_errors.values())


def percentiles(samples_us: list[float]) -> dict[str, float]:
    if not samples_us:
        return {}
    ordered = sorted(samples_us)

    def rank(p: float) -> float:
        index = max(0, math.ceil(p / 100.0 * len(ordered)) - 1)
        return round(ordered[index] / 1000.0, 2)

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "p99.9": rank(99.9),
        "max": round(ordered[-1] / 1000.0, 2),
        "mean": round(sum(ordered) / len(ordered) / 1000.0, 2),
    }


class LoadGenerator:
    def __init__(
        self, wrk: str, bodies_dir: Path, body_files: int, path: str, work_dir: Path
    ) -> None:
        self.wrk = wrk
        self.bodies_dir = bodies_dir
        self.body_files = body_files
        self.path = path
        self.work_dir = work_dir
        self.current: subprocess.Popen[bytes] | None = None
        self._counter = 0

    def run(
        self,
        target: Target,
        connections: int,
        duration: float,
        rate: float | None,
        cpu_groups: dict[str, int],
    ) -> RunResult:
        self._counter += 1
        tag = f"{self._counter:02d}-{target.name}-{'rate' if rate else 'closed'}-{connections}"
        out_path = self.work_dir / f"{tag}.out"
        log_path = self.work_dir / f"{tag}.log"
        env = {
            **os.environ,
            "BENCH_BODIES_DIR": str(self.bodies_dir),
            "BENCH_FILES": str(self.body_files),
            "BENCH_THREADS": str(connections),
            "BENCH_PATH": self.path,
            "BENCH_RATE": f"{rate:.3f}" if rate else "0",
            "BENCH_OUT": str(out_path),
        }
        seconds = max(1, round(duration))
        argv = [
            self.wrk,
            "-t",
            str(connections),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_SCRIPT),
            target.url,
        ]
        with log_path.open("wb") as log:
            self.current = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
            try:
                # CPU is sampled inside the load (past wrk's start, before its end), so that
                # every figure is the average over the same window of steady load
                started = time.monotonic()
                settle = min(1.0, seconds / 10)
                time.sleep(settle)
                before = CpuSample.take(cpu_groups, self.current.pid)
                time.sleep(max(0.0, started + seconds - settle - time.monotonic()))
                after = CpuSample.take(cpu_groups, self.current.pid)
                code = self.current.wait(timeout=seconds + 60)
            except subprocess.TimeoutExpired as error:
                raise BenchError(f"wrk did not finish in time; log {log_path}") from error
            finally:
                self.stop()
        if code != 0 or not out_path.exists():
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"wrk failed (exit {code}); log {log_path}:\n{tail}")

        result = parse_wrk_output(out_path, target.name, connections, rate)
        result.cpu_cores = after.cores_since(before)
        return result

    def stop(self) -> None:
        process, self.current = self.current, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)


class Backlogs:
    """Each run starts without the messages earlier runs left in Pub/Sub: the subscriptions
    of intake's topic and of the floor's (nothing consumes them here) are deleted and
    created again, with the same settings. Made once the stack is provisioned (its
    environment, the emulator's address included, is this process's then)."""

    FLOOR_TOPIC = "bench.floor"
    FLOOR_SUBSCRIPTION = "bench.floor.sub"

    def __init__(self, stack: LocalStack) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        self._stack = stack
        self._subscriber = pubsub_v1.SubscriberClient()
        project = stack.config.project
        self._floor_topic = f"projects/{project}/topics/{self.FLOOR_TOPIC}"
        self._floor_subscription = f"projects/{project}/subscriptions/{self.FLOOR_SUBSCRIPTION}"
        # the floor's topic, with one subscription as intake's topic has
        pubsub_v1.PublisherClient().create_topic(request={"name": self._floor_topic})
        self._subscriber.create_subscription(
            request={"name": self._floor_subscription, "topic": self._floor_topic}
        )

    def clear(self, target: str) -> None:
        if target == "floor":
            self._subscriber.delete_subscription(request={"subscription": self._floor_subscription})
            self._subscriber.create_subscription(
                request={"name": self._floor_subscription, "topic": self._floor_topic}
            )
        elif target == "intake":
            from callpipe.config import Settings
            from callpipe.devstack.provision import provision_pubsub

            project, topology = self._stack.config.project, self._stack.topology
            for sub in topology.subscriptions():
                if sub.topic == Settings().calls_received_topic:
                    path = self._subscriber.subscription_path(project, sub.name)
                    self._subscriber.delete_subscription(request={"subscription": path})
            provision_pubsub(project, topology, push=False)


def parse_wrk_output(path: Path, target: str, connections: int, rate: float | None) -> RunResult:
    duration_us = 0
    statuses: dict[int, int] = {}
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    latencies: list[float] = []
    service: list[float] = []
    for line in path.read_text(encoding="ascii").splitlines():
        parts = line.split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "lat":
            latencies.append(float(parts[1]))
            service.append(float(parts[2]))
        elif kind == "code":
            statuses[int(parts[1])] = statuses.get(int(parts[1]), 0) + int(parts[2])
        elif kind == "duration_us":
            duration_us = int(parts[1])
        elif kind == "socket_errors":
            values = [int(v) for v in parts[1:5]]
            socket_errors = dict(zip(("connect", "read", "write", "timeout"), values, strict=True))
    duration_s = duration_us / 1e6 if duration_us else 1.0
    accepted = statuses.pop(202, 0)
    return RunResult(
        target=target,
        mode="rate" if rate else "closed",
        connections=connections,
        rate=round(rate, 1) if rate else None,
        duration_s=round(duration_s, 2),
        accepted=accepted,
        accepted_per_s=round(accepted / duration_s, 1),
        other_statuses={str(k): v for k, v in sorted(statuses.items())},
        socket_errors=socket_errors,
        latency_ms=percentiles(latencies),
        service_ms=percentiles(service),
    )


# -- the stack --------------------------------------------------------------------------------


def pick_free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all bound at once so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_accepts(url: str, token: str) -> None:
    """One signed webhook must be answered 202 before any load is sent."""
    body = json.dumps(sample_post_call()).encode("ascii")
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Signature": compute_signature(token, body)},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, text = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    if status != 202:
        raise BenchError(f"{url} answered {status} to a signed webhook, not 202: {text[:300]}")


@contextmanager
def extra_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# -- report -----------------------------------------------------------------------------------


def fmt_ms(values: dict[str, float], key: str) -> str:
    return f"{values[key]:.1f}" if key in values else "-"


def print_table(results: Sequence[RunResult]) -> None:
    header = (
        f"{'target':<9} {'mode':<6} {'conns':>5} {'rate/s':>7} {'accepted/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | cores: {'fn':>4} {'pubsub':>6} "
        f"{'wrk':>4} {'other':>5} {'total':>5}"
    )
    say(header)
    say("-" * len(header))
    flagged = False
    for r in results:
        rate = f"{r.rate:.0f}" if r.rate else "-"
        c = r.cpu_cores
        busy = c.get("other", 0.0) > BUSY_CORES
        flagged = flagged or busy
        say(
            f"{r.target:<9} {r.mode:<6} {r.connections:>5} {rate:>7} {r.accepted_per_s:>10.1f} "
            f"{fmt_ms(r.latency_ms, 'p50'):>7} {fmt_ms(r.latency_ms, 'p99'):>7} {r.errors:>6} |"
            f"        {c.get('function', 0):>4.2f} {c.get('pubsub', 0):>6.2f} "
            f"{c.get('wrk', 0):>4.2f} {c.get('other', 0):>5.2f} {c.get('machine', 0):>5.2f}"
            + (" *" if busy else "")
        )
    if flagged:
        say(
            f"* other work used more than {BUSY_CORES} cores during this run: its figures are "
            "pessimistic; run again on a quiet machine"
        )


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure intake's throughput and latency against a no-op function."
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (20)")
    parser.add_argument(
        "--concurrency", default="8,32,64", help="closed-loop connection counts (8,32,64)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 s runs at 8 and 32 connections"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="fixed rate in req/s (default: half of peak)"
    )
    parser.add_argument(
        "--rate-connections", type=int, default=32, help="connections of the fixed-rate run (32)"
    )
    parser.add_argument("--bodies", type=int, default=20_000, help="distinct signed bodies")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS", "1")),
        help="gunicorn WORKERS for both functions (env WORKERS, else 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("THREADS", (os.cpu_count() or 1) * 4)),
        help="gunicorn THREADS for both functions (env THREADS, else 4 per core as "
        "functions-framework does)",
    )
    parser.add_argument(
        "--intake-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for intake, e.g. PUBLISH_BATCH_MAX_LATENCY_MS=5 (the "
        "baselines are served with intake's environment, this included)",
    )
    parser.add_argument(
        "--targets",
        default="noop,noop-wsgi,floor,intake",
        help="which targets to measure (noop,noop-wsgi,floor,intake; noop-wsgi and floor only "
        "when intake is served as ASGI)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the work folder")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.concurrency = "8,32"
        args.warmup = min(args.warmup, 1.0)
        args.bodies = min(args.bodies, 2_000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    targets = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    if not levels or any(c < 1 or c > 256 for c in levels):
        raise SystemExit("--concurrency takes connection counts between 1 and 256")
    if not 1 <= args.rate_connections <= 256:
        raise SystemExit("--rate-connections takes a count between 1 and 256")
    if not targets or set(targets) - {"noop", "intake", "noop-wsgi", "floor"}:
        raise SystemExit("--targets takes noop, noop-wsgi, floor and intake")
    intake_env: dict[str, str] = {}
    for item in args.intake_env:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise SystemExit(f"--intake-env takes KEY=VALUE, not {item!r}")
        intake_env[key] = value

    wrk = ensure_wrk()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops the run and everything it started, even when started from a shell that
    # made background jobs ignore SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work_dir = Path(tempfile.mkdtemp(prefix="callpipe-bench-"))
    ports = pick_free_ports(8)
    config = StackConfig(
        ports=EmulatorPorts(
            pubsub=ports[0], spanner_grpc=ports[1], spanner_rest=ports[2], gcs=ports[3]
        ),
        state_dir=work_dir / "stack",
        function_ports={"intake": ports[4]},
        push=False,
        function_workers=args.workers,
        function_threads=args.threads,
    )
    stack = LocalStack(config)
    loadgen: LoadGenerator | None = None
    failed = True
    try:
        started = time.monotonic()
        say(
            f"starting the emulators on free ports (Pub/Sub :{ports[0]}, Spanner :{ports[1]}, "
            f"GCS :{ports[3]}) in {work_dir} ..."
        )
        stack.start_emulators()
        stack.provision()
        token = onboard_demo_tenant(stack.secrets_dir)
        files = max([*levels, args.rate_connections])
        write_bodies(work_dir / "bodies", token, args.bodies, files)
        say(
            f"  ready in {time.monotonic() - started:.1f} s; {args.bodies} signed Post-Call "
            f"bodies written"
        )

        asgi = stack.topology.steps["intake"].asgi
        # uvicorn parses HTTP with httptools when it is installed, else with h11
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
        serving = f"ASGI, gunicorn + uvicorn/{parser}" if asgi else "WSGI, gunicorn gthread"
        args.serving = serving
        say(
            f"starting intake and the no-op under functions-framework ({serving}, "
            f"WORKERS={args.workers}, THREADS={args.threads}) ..."
        )
        with extra_environ(intake_env):
            stack.start_functions(["intake"])

        def start_baseline(
            name: str, port: int, asgi: bool, source: Path, function: str, extra: dict[str, str]
        ) -> None:
            # intake's environment, with --intake-env as intake gets it (under what the
            # stack sets): only the code differs
            with extra_environ(intake_env):
                env = {**stack.function_env("intake", port), **extra}
            env.pop("FUNCTION_USE_ASGI", None)
            if asgi:
                env["FUNCTION_USE_ASGI"] = "true"
            process = ManagedProcess(
                f"function {name}",
                [
                    str(Path(sys.executable).parent / "functions-framework"),
                    "--source",
                    str(source),
                    "--target",
                    function,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stack.log_dir / f"function-{name}.log",
                env=env,
                cwd=REPO_ROOT,
            ).start()
            stack.processes.append(process)
            process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 60, "HTTP")

        # the baseline is served exactly as intake is
        noop_port = ports[5]
        start_baseline("noop", noop_port, asgi, NOOP_SOURCE, "noop_async" if asgi else "noop", {})
        # and, for reference, the framework's default (WSGI) when intake is ASGI
        wsgi_port = ports[6]
        floor_port = ports[7]
        if not asgi:
            targets = [t for t in targets if t not in ("noop-wsgi", "floor")]
        if "noop-wsgi" in targets:
            start_baseline("noop-wsgi", wsgi_port, False, NOOP_SOURCE, "noop", {})
        backlogs = Backlogs(stack)
        if "floor" in targets:
            start_baseline(
                "floor",
                floor_port,
                asgi,
                FLOOR_SOURCE,
                "publish_only",
                {"BENCH_FLOOR_TOPIC": Backlogs.FLOOR_TOPIC},
            )

        def group(name: str) -> int:
            for process in stack.processes:
                if process.name == name and process.process is not None:
                    return process.process.pid
            raise BenchError(f"no process {name}")

        all_targets = {
            "intake": Target(
                "intake", f"{stack.function_url('intake')}{WEBHOOK_PATH}", group("function intake")
            ),
            "noop": Target(
                "noop", f"http://127.0.0.1:{noop_port}{WEBHOOK_PATH}", group("function noop")
            ),
        }
        if "noop-wsgi" in targets:
            all_targets["noop-wsgi"] = Target(
                "noop-wsgi",
                f"http://127.0.0.1:{wsgi_port}{WEBHOOK_PATH}",
                group("function noop-wsgi"),
            )
        if "floor" in targets:
            all_targets["floor"] = Target(
                "floor", f"http://127.0.0.1:{floor_port}{WEBHOOK_PATH}", group("function floor")
            )
        # intake last: the fixed-rate run starts with it
        order = ["noop", "noop-wsgi", "floor", "intake"]
        chosen = [all_targets[name] for name in order if name in targets]
        for target in chosen:
            check_accepts(target.url, token)
        emulator_groups = {
            "pubsub": group("pubsub-emulator"),
            "spanner": group("spanner-emulator"),
            "gcs": group("fake-gcs-server"),
        }
        loadgen = LoadGenerator(wrk, work_dir / "bodies", files, WEBHOOK_PATH, work_dir / "wrk")
        (work_dir / "wrk").mkdir()

        def run(target: Target, connections: int, duration: float, rate: float | None) -> RunResult:
            assert loadgen is not None
            backlogs.clear(target.name)
            groups = {"function": target.pgid, **emulator_groups}
            return loadgen.run(target, connections, duration, rate, groups)

        idle = idle_load(2.0)
        if idle > BUSY_CORES:
            say(
                f"warning: the machine is busy with other work ({idle:.2f} cores in use before "
                "the runs): figures will be lower and noisier than on a quiet machine"
            )
        say(f"warming up ({args.warmup:.0f} s per target) ...")
        for target in chosen:
            run(target, 8, args.warmup, None)

        results: list[RunResult] = []
        say(f"closed loop: {', '.join(map(str, levels))} connections, {args.duration:.0f} s each")
        for connections in levels:
            for target in chosen:
                result = run(target, connections, args.duration, None)
                results.append(result)
                say(
                    f"  {target.name:<9} c={connections:<3} {result.accepted_per_s:8.1f} "
                    f"accepted/s  p50 {fmt_ms(result.latency_ms, 'p50')} ms  "
                    f"p99 {fmt_ms(result.latency_ms, 'p99')} ms  errors {result.errors}"
                )
                time.sleep(1.0)

        def peak(name: str) -> RunResult | None:
            runs = [r for r in results if r.target == name and r.mode == "closed"]
            return max(runs, key=lambda r: r.accepted_per_s) if runs else None

        reference = peak("intake") or peak("noop")
        assert reference is not None
        rate = args.rate or RATE_FRACTION * reference.accepted_per_s
        if rate < 1:
            raise BenchError(f"no request was accepted by {reference.target}: see {work_dir}")
        say(
            f"fixed rate: {rate:.0f} req/s (half of {reference.target}'s peak), "
            f"{args.rate_connections} connections, {args.duration:.0f} s"
        )
        for target in [t for t in chosen[::-1] if t.name != "noop-wsgi"]:
            result = run(target, args.rate_connections, args.duration, rate)
            results.append(result)
            say(
                f"  {target.name:<9} {result.accepted_per_s:8.1f} accepted/s  "
                f"p50 {fmt_ms(result.latency_ms, 'p50')} ms  "
                f"p99 {fmt_ms(result.latency_ms, 'p99')} ms  errors {result.errors}"
            )
            time.sleep(1.0)

        report = build_report(args, results, rate, wrk_version(wrk), intake_env)
        print_report(results, report)
        if not args.no_json:
            RESULTS_DIR.mkdir(exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            path = RESULTS_DIR / f"intake-{stamp}.json"
            path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            say(f"results written to {path.relative_to(REPO_ROOT)}")
        failed = False
        return 0 if report["verdict"].get("pass", True) else 1
    except (BenchError, StartupError) as error:
        say(f"benchmark failed: {error}")
        return 2
    except (KeyboardInterrupt, _Terminated):
        say("\ninterrupted")
        return 130
    finally:
        if loadgen is not None:
            loadgen.stop()
        stack.stop()
        if failed or args.keep_logs:
            say(f"logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
        say("stopped: emulators and functions are down")


def build_report(
    args: argparse.Namespace,
    results: Sequence[RunResult],
    rate: float,
    wrk: str,
    intake_env: dict[str, str],
) -> dict[str, Any]:
    closed = [r for r in results if r.mode == "closed"]
    ratios: dict[str, float] = {}
    for r in closed:
        if r.target != "intake":
            continue
        base = next(
            (b for b in closed if b.target == "noop" and b.connections == r.connections), None
        )
        if base and base.accepted_per_s > 0:
            ratios[str(r.connections)] = round(r.accepted_per_s / base.accepted_per_s, 3)

    def peak(name: str) -> RunResult | None:
        runs = [r for r in closed if r.target == name]
        return max(runs, key=lambda r: r.accepted_per_s) if runs else None

    intake_peak, noop_peak = peak("intake"), peak("noop")
    wsgi_peak = peak("noop-wsgi")
    reference: dict[str, Any] = {}
    if intake_peak and wsgi_peak and wsgi_peak.accepted_per_s > 0:
        # not the target's baseline (that is the no-op served like intake): for comparison
        # with the framework's default way of serving an HTTP function
        reference["intake_over_wsgi_noop_peak"] = round(
            intake_peak.accepted_per_s / wsgi_peak.accepted_per_s, 3
        )
        reference["wsgi_noop_peak_per_s"] = wsgi_peak.accepted_per_s
    floor_peak = peak("floor")
    if floor_peak and noop_peak and intake_peak and noop_peak.accepted_per_s > 0:
        # the bound the round trip itself puts on the throughput target, whatever the checks
        reference["floor_peak_per_s"] = floor_peak.accepted_per_s
        reference["floor_over_noop_peak"] = round(
            floor_peak.accepted_per_s / noop_peak.accepted_per_s, 3
        )
        if floor_peak.accepted_per_s > 0:
            reference["intake_over_floor_peak"] = round(
                intake_peak.accepted_per_s / floor_peak.accepted_per_s, 3
            )
    verdict: dict[str, Any] = {}
    if intake_peak and noop_peak and noop_peak.accepted_per_s > 0:
        peak_ratio = round(intake_peak.accepted_per_s / noop_peak.accepted_per_s, 3)
        ratios["peak"] = peak_ratio
        verdict["throughput"] = {
            "target": f"intake peak >= {THROUGHPUT_TARGET:.0%} of no-op peak",
            "intake_peak_per_s": intake_peak.accepted_per_s,
            "noop_peak_per_s": noop_peak.accepted_per_s,
            "ratio": peak_ratio,
            "pass": peak_ratio >= THROUGHPUT_TARGET,
        }
    intake_rate = next((r for r in results if r.mode == "rate" and r.target == "intake"), None)
    if intake_rate and intake_rate.latency_ms:
        p99 = intake_rate.latency_ms["p99"]
        verdict["latency"] = {
            "target": f"intake p99 < {P99_TARGET_MS:.0f} ms at half of its peak rate",
            "rate_per_s": round(rate, 1),
            "p99_ms": p99,
            "errors": intake_rate.errors,
            "pass": p99 < P99_TARGET_MS and intake_rate.errors == 0,
        }
    if verdict:
        verdict["pass"] = all(v["pass"] for v in verdict.values() if isinstance(v, dict))
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "config": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "rate_connections": args.rate_connections,
            "bodies": args.bodies,
            "serving": getattr(args, "serving", None),
            "workers": args.workers,
            "threads": args.threads,
            "intake_env": intake_env,
            "load_generator": f"{wrk} + bench/wrk/signed_posts.lua (one connection per thread)",
            "publish_batch_max_latency_ms": intake_env.get(
                "PUBLISH_BATCH_MAX_LATENCY_MS",
                os.environ.get("PUBLISH_BATCH_MAX_LATENCY_MS", "0 (default)"),
            ),
        },
        "runs": [asdict(r) for r in results],
        "ratio_intake_over_noop": ratios,
        "reference": reference,
        "verdict": verdict,
    }


def print_report(results: Sequence[RunResult], report: dict[str, Any]) -> None:
    machine = report["machine"]
    say("")
    say(
        f"machine: {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB; Python {machine['python']}, functions-framework "
        f"{machine['functions_framework']}, gunicorn {machine['gunicorn']}; "
        f"{report['config']['serving']}, "
        f"WORKERS={report['config']['workers']} THREADS={report['config']['threads']}"
    )
    say(
        "latency: closed loop from send; fixed rate from the intended send time. "
        "cores: CPU used during the run (fn = the function's processes, "
        "other = anything else on the machine)."
    )
    say("")
    print_table(results)
    ratios = report["ratio_intake_over_noop"]
    if ratios:
        say("")
        say(
            "intake / no-op accepted req/s: "
            + ", ".join(f"{'c=' + k if k != 'peak' else 'peak'} {v:.2f}" for k, v in ratios.items())
        )
    reference = report.get("reference") or {}
    if "floor_peak_per_s" in reference:
        say(
            f"the floor (body read, published, answered; nothing checked) peaks at "
            f"{reference['floor_peak_per_s']:.0f}/s: {reference['floor_over_noop_peak']:.2f} "
            f"of the no-op's peak; intake's peak is "
            f"{reference.get('intake_over_floor_peak', 0.0):.2f} of the floor's"
        )
    if "wsgi_noop_peak_per_s" in reference:
        say(
            f"for reference, intake's peak / the WSGI no-op's peak "
            f"({reference['wsgi_noop_peak_per_s']:.0f}/s): "
            f"{reference['intake_over_wsgi_noop_peak']:.2f}"
        )
    verdict = report["verdict"]
    for key in ("throughput", "latency"):
        if key in verdict:
            v = verdict[key]
            mark = "PASS" if v["pass"] else "FAIL"
            if key == "throughput":
                detail = (
                    f"intake {v['intake_peak_per_s']:.0f}/s vs no-op "
                    f"{v['noop_peak_per_s']:.0f}/s = {v['ratio']:.1%}"
                )
            else:
                detail = (
                    f"p99 {v['p99_ms']:.1f} ms at {v['rate_per_s']:.0f} req/s, {v['errors']} errors"
                )
            say(f"{mark}  {v['target']}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
