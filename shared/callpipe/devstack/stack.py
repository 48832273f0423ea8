"""The local stack as one object: start, provision, serve the functions, stop everything."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from callpipe.devstack.emulators import EmulatorPorts, start_gcs, start_pubsub, start_spanner
from callpipe.devstack.processes import (
    ManagedProcess,
    ProcessLedger,
    StartupError,
    http_ok,
    port_open,
    shielded_from_interrupts,
)
from callpipe.devstack.provision import provision_buckets, provision_pubsub, provision_spanner
from callpipe.topology import REPO_ROOT, Topology, load_topology


@dataclass
class StackConfig:
    project: str = "callpipe-local"
    spanner_instance: str = "callpipe"
    spanner_database: str = "callpipe"
    webhook_bucket: str = "callpipe-webhooks"
    audio_bucket: str = "callpipe-recordings"
    ports: EmulatorPorts = field(default_factory=EmulatorPorts)
    state_dir: Path = REPO_ROOT / ".local"
    function_ports: dict[str, int] = field(default_factory=dict)
    push: bool = True
    function_workers: int = 1
    function_threads: int = 8
    simulator_port: int = 8095
    simulator_data_dir: Path | None = None  # default: the demo calls shipped in the package
    simulator_rate_limit_per_minute: int = 120
    # The CallRail account the simulator serves, and the API key it expects (random per run).
    simulator_accounts: dict[str, str] = field(default_factory=dict)
    # Extra environment for every function (e.g. a smaller local speech model in tests).
    function_env: dict[str, str] = field(default_factory=dict)


def config_from_env(environ: dict[str, str] | None = None) -> StackConfig:
    """The default stack, with ports and the state folder overridable by environment:
    CALLPIPE_PUBSUB_PORT, CALLPIPE_SPANNER_PORT, CALLPIPE_SPANNER_REST_PORT,
    CALLPIPE_GCS_PORT, CALLPIPE_<STEP>_PORT (e.g. CALLPIPE_INTAKE_PORT) and
    CALLPIPE_STATE_DIR."""
    env = dict(os.environ if environ is None else environ)
    defaults = EmulatorPorts()

    def port(name: str, default: int) -> int:
        value = env.get(name)
        return int(value) if value else default

    ports = EmulatorPorts(
        pubsub=port("CALLPIPE_PUBSUB_PORT", defaults.pubsub),
        spanner_grpc=port("CALLPIPE_SPANNER_PORT", defaults.spanner_grpc),
        spanner_rest=port("CALLPIPE_SPANNER_REST_PORT", defaults.spanner_rest),
        gcs=port("CALLPIPE_GCS_PORT", defaults.gcs),
    )
    function_ports = {}
    reserved = {
        "CALLPIPE_PUBSUB_PORT",
        "CALLPIPE_SPANNER_PORT",
        "CALLPIPE_SPANNER_REST_PORT",
        "CALLPIPE_GCS_PORT",
        "CALLPIPE_SIMULATOR_PORT",
    }
    for key, value in env.items():
        if key.startswith("CALLPIPE_") and key.endswith("_PORT") and value and key not in reserved:
            step = key[len("CALLPIPE_") : -len("_PORT")].lower().replace("_", "-")
            function_ports[step] = int(value)
    state = env.get("CALLPIPE_STATE_DIR")
    data_dir = env.get("CALLRAIL_SIM_DATA_DIR")
    return StackConfig(
        ports=ports,
        function_ports=function_ports,
        state_dir=Path(state) if state else REPO_ROOT / ".local",
        simulator_port=port("CALLPIPE_SIMULATOR_PORT", 8095),
        simulator_data_dir=Path(data_dir) if data_dir else None,
    )


class LocalStack:
    def __init__(self, config: StackConfig, topology: Topology | None = None) -> None:
        self.config = config
        self.topology = topology or load_topology()
        self.processes: list[ManagedProcess] = []
        self.ledger = ProcessLedger(config.state_dir / "processes")
        self.log_dir = config.state_dir / "logs"
        self.secrets_dir = config.state_dir / "secrets"

    # -- environment ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What a client, a function or the CLI needs to talk to this stack."""
        c = self.config
        return {
            "ENVIRONMENT": "local",
            "GOOGLE_CLOUD_PROJECT": c.project,
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{c.ports.pubsub}",
            "SPANNER_EMULATOR_HOST": f"127.0.0.1:{c.ports.spanner_grpc}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{c.ports.gcs}",
            # The emulator runs one read-write transaction at a time (see README).
            "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS": "false",
            "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "false",
            "SPANNER_INSTANCE": c.spanner_instance,
            "SPANNER_DATABASE": c.spanner_database,
            "WEBHOOK_ARCHIVE_BUCKET": c.webhook_bucket,
            "AUDIO_STORAGE_BUCKET": c.audio_bucket,
            "SECRET_BACKEND": "local",
            "LOCAL_SECRETS_DIR": str(self.secrets_dir),
            "CALLRAIL_API_BASE_URL": f"{self.simulator_url}/v3",
            # The simulator is plain http on loopback: allowed here, refused in production.
            "RECORDING_INSECURE_HOSTS": f"127.0.0.1:{c.simulator_port}",
        }

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.config.simulator_port}"

    @property
    def simulator_data_dir(self) -> Path:
        """CALLRAIL_SIM_DATA_DIR when given; otherwise a fresh copy of the demo calls in
        the state folder, so `callpipe webhooks sample` can add calls to it."""
        return self.config.simulator_data_dir or self.config.state_dir / "callrail-data"

    def apply_env(self) -> None:
        os.environ.update(self.env())

    def function_port(self, step: str) -> int:
        return self.config.function_ports.get(step, self.topology.steps[step].local_port)

    def function_url(self, step: str) -> str:
        return f"http://127.0.0.1:{self.function_port(step)}"

    # -- lifecycle ------------------------------------------------------------------------

    def _keep(self, process: ManagedProcess) -> None:
        self.processes.append(process)
        self.ledger.add(process)

    def reap_stale(self) -> list[str]:
        """Stop what an earlier stack on this state folder left running (it was killed)."""
        return self.ledger.reap()

    def start_emulators(self) -> None:
        c = self.config
        stale = self.reap_stale()
        if stale:
            print(f"stopped what an earlier, killed stack left running: {', '.join(stale)}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._keep(start_pubsub(c.project, c.ports.pubsub, self.log_dir))
        self._keep(start_spanner(c.ports.spanner_grpc, c.ports.spanner_rest, self.log_dir))
        self._keep(
            start_gcs(
                c.ports.gcs,
                self.log_dir,
                notification=(c.project, self.recordings_topic, c.ports.pubsub),
                bucket=c.audio_bucket,
                object_prefix="tenants/",
            )
        )

    @property
    def recordings_topic(self) -> str:
        return "recordings.stored"

    def start_simulator(self) -> None:
        """The CallRail API simulator, serving the demo calls (or CALLRAIL_SIM_DATA_DIR)."""
        c = self.config
        if c.simulator_data_dir is None:
            from callpipe.simulator import DEMO_CALLS_DIR

            target = self.simulator_data_dir
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(DEMO_CALLS_DIR, target)
        if port_open("127.0.0.1", c.simulator_port):
            raise StartupError(
                f"port {c.simulator_port} for the CallRail simulator is already in use"
            )
        argv = [
            str(Path(sys.executable).parent / "callpipe"),
            "sim",
            "serve",
            "--data-dir",
            str(self.simulator_data_dir),
            "--port",
            str(c.simulator_port),
            "--rate-limit-per-minute",
            str(c.simulator_rate_limit_per_minute),
        ]
        for account, key in c.simulator_accounts.items():
            argv += ["--api-key", f"{account}={key}"]
        process = ManagedProcess(
            "callrail-simulator",
            argv,
            self.log_dir / "callrail-simulator.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
        ).start()
        self._keep(process)
        process.wait_until(
            partial(port_open, "127.0.0.1", c.simulator_port), 30, f"HTTP on {c.simulator_port}"
        )

    def provision(self) -> None:
        c = self.config
        self.apply_env()
        if self.secrets_dir.exists():
            shutil.rmtree(self.secrets_dir)  # the emulators start empty, so do the secrets
        self.secrets_dir.mkdir(parents=True, mode=0o700)
        provision_spanner(c.project, c.spanner_instance, c.spanner_database)
        provision_pubsub(
            c.project,
            self.topology,
            push=c.push,
            ports={name: self.function_port(name) for name in self.topology.steps},
        )
        provision_buckets(c.project, [c.webhook_bucket, c.audio_bucket])

    def _dead_letter_env(self, step: str) -> dict[str, str]:
        """The attempts after which the step's subscription dead-letters a message."""
        for sub in self.topology.subscriptions():
            if sub.step == step and sub.max_delivery_attempts is not None:
                return {"MAX_DELIVERY_ATTEMPTS": str(sub.max_delivery_attempts)}
        return {}

    def function_env(self, name: str, port: int) -> dict[str, str]:
        """The environment the step's function is served with, on ``port``."""
        step = self.topology.steps[name]
        return {
            **os.environ,
            **self.env(),
            **step.env,
            **self.config.function_env,
            **({"FUNCTION_USE_ASGI": "true"} if step.asgi else {}),
            **self._dead_letter_env(name),
            "WORKERS": str(self.config.function_workers),
            "THREADS": str(self.config.function_threads),
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            # No gRPC channel exists before gunicorn forks; its fork handlers only add risk.
            "GRPC_ENABLE_FORK_SUPPORT": "false",
        }

    def start_functions(self, steps: list[str] | None = None) -> None:
        bin_dir = Path(sys.executable).parent
        framework = bin_dir / "functions-framework"
        for name in steps or list(self.topology.steps):
            step = self.topology.steps[name]
            port = self.function_port(name)
            if port_open("127.0.0.1", port):
                raise StartupError(f"port {port} for the {name} function is already in use")
            env = self.function_env(name, port)
            argv = [
                str(framework),
                "--source",
                str(REPO_ROOT / step.source / "main.py"),
                "--target",
                step.entry_point,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            probe_url = f"http://127.0.0.1:{port}" + (
                "/health" if step.trigger.type == "http" else "/"
            )
            log = self.log_dir / f"function-{name}.log"
            # A gunicorn worker very rarely dies while booting on a loaded 2-core machine;
            # one more try keeps `make run` and the tests from failing on that alone.
            for attempt in (1, 2):
                process = ManagedProcess(
                    f"function {name}", argv, log, env=env, cwd=REPO_ROOT
                ).start()
                try:
                    process.wait_until(partial(http_ok, probe_url), 60, f"HTTP on {port}")
                except StartupError:
                    if attempt == 2:
                        raise
                    continue
                self._keep(process)
                break

    def write_env_file(self) -> Path:
        path = self.config.state_dir / "stack.env"
        values = {
            **self.env(),
            "CALLPIPE_INTAKE_URL": self.function_url("intake"),
            "CALLRAIL_SIM_DATA_DIR": str(self.simulator_data_dir),
            "CALLRAIL_SIM_URL": self.simulator_url,
        }
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        return path

    def stop(self) -> None:
        with shielded_from_interrupts():
            for process in reversed(self.processes):
                process.stop()
            self.processes.clear()
            self.ledger.clear()
            env_file = self.config.state_dir / "stack.env"
            env_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
