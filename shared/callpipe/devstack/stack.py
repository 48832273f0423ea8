"""The local stack as one object: start, provision, serve the functions, stop everything."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from callpipe.devstack.emulators import EmulatorPorts, start_gcs, start_pubsub, start_spanner
from callpipe.devstack.processes import ManagedProcess, StartupError, http_ok, port_open
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


class LocalStack:
    def __init__(self, config: StackConfig, topology: Topology | None = None) -> None:
        self.config = config
        self.topology = topology or load_topology()
        self.processes: list[ManagedProcess] = []
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
        }

    def apply_env(self) -> None:
        os.environ.update(self.env())

    def function_port(self, step: str) -> int:
        return self.config.function_ports.get(step, self.topology.steps[step].local_port)

    def function_url(self, step: str) -> str:
        return f"http://127.0.0.1:{self.function_port(step)}"

    # -- lifecycle ------------------------------------------------------------------------

    def start_emulators(self) -> None:
        c = self.config
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes.append(start_pubsub(c.project, c.ports.pubsub, self.log_dir))
        self.processes.append(start_spanner(c.ports.spanner_grpc, c.ports.spanner_rest, self.log_dir))
        self.processes.append(start_gcs(c.ports.gcs, self.log_dir))

    def provision(self) -> None:
        c = self.config
        self.apply_env()
        if self.secrets_dir.exists():
            shutil.rmtree(self.secrets_dir)  # the emulators start empty, so do the secrets
        self.secrets_dir.mkdir(parents=True, mode=0o700)
        provision_spanner(c.project, c.spanner_instance, c.spanner_database)
        provision_pubsub(c.project, self.topology, push=c.push)
        provision_buckets(c.project, [c.webhook_bucket, c.audio_bucket])

    def start_functions(self, steps: list[str] | None = None) -> None:
        bin_dir = Path(sys.executable).parent
        framework = bin_dir / "functions-framework"
        for name in steps or list(self.topology.steps):
            step = self.topology.steps[name]
            port = self.function_port(name)
            if port_open("127.0.0.1", port):
                raise StartupError(f"port {port} for the {name} function is already in use")
            env = {
                **os.environ,
                **self.env(),
                **step.env,
                "WORKERS": str(self.config.function_workers),
                "THREADS": str(self.config.function_threads),
                "PORT": str(port),
                "PYTHONUNBUFFERED": "1",
            }
            process = ManagedProcess(
                f"function {name}",
                [str(framework), "--source", str(REPO_ROOT / step.source / "main.py"),
                 "--target", step.entry_point, "--host", "127.0.0.1", "--port", str(port)],
                self.log_dir / f"function-{name}.log",
                env=env,
                cwd=REPO_ROOT,
            ).start()
            self.processes.append(process)
            probe = "/health" if step.trigger.type == "http" else "/"
            process.wait_until(lambda p=port, q=probe: http_ok(f"http://127.0.0.1:{p}{q}"), 60, f"HTTP on {port}")

    def write_env_file(self) -> Path:
        path = self.config.state_dir / "stack.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()), encoding="utf-8")
        return path

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        env_file = self.config.state_dir / "stack.env"
        env_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
