"""The simulator's commands, shared by ``callpipe sim`` and ``python -m callpipe.simulator``.

They live here rather than in ``callpipe.cli`` so that ``python -m callpipe.simulator``
does not import the operator CLI (a dev-only package that function bundles leave out).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer


def parse_api_keys(pairs: list[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in pairs:
        account, sep, key = pair.partition("=")
        if not sep or not account.strip() or not key.strip():
            # Never echo the key itself.
            raise ValueError(f"--api-key takes ACCOUNT=KEY, got {account!r}=…")
        keys[account.strip()] = key.strip()
    return keys


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _info(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.BRIGHT_BLACK)


def serve(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="CALLRAIL_SIM_DATA_DIR",
            help="Folder holding calls/<CALL_ID>.json and the audio; default: the demo calls.",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8095,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            help="ACCOUNT=KEY, repeatable. Without any, the demo account gets a random key."
        ),
    ] = None,
    rate_limit_per_minute: Annotated[
        int, typer.Option(help="API requests per account per sliding minute (0: no limit).")
    ] = 120,
    recording_url_ttl_seconds: Annotated[
        int, typer.Option(help="Lifetime of the signed recording links.")
    ] = 300,
    verbose: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the CallRail API v3 simulator until Ctrl-C (or SIGTERM)."""
    from callpipe.demo import DEMO_ACCOUNT_ID
    from callpipe.simulator import DEMO_CALLS_DIR
    from callpipe.simulator.server import SimulatorServer

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        keys = parse_api_keys(api_key or [])
    except ValueError as error:
        _fail(str(error))
    if not keys:
        keys = {DEMO_ACCOUNT_ID: secrets.token_urlsafe(24)}
        _info(f"no --api-key: account {DEMO_ACCOUNT_ID} accepts the key {keys[DEMO_ACCOUNT_ID]}")
    folder = data_dir or DEMO_CALLS_DIR
    if not (folder / "calls").is_dir():
        _fail(f"{folder} has no calls/ folder (see callpipe.simulator's docstring)")
    try:
        server = SimulatorServer(
            folder,
            keys,
            port=port,
            rate_limit_per_minute=rate_limit_per_minute,
            recording_url_ttl_seconds=recording_url_ttl_seconds,
        )
        server.start()
    except (OSError, ValueError) as error:
        _fail(f"cannot start the simulator: {error}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    typer.echo(
        f"CallRail simulator on {server.url} (API base {server.api_base_url}): "
        f"{len(server.store.all())} calls from {folder}, accounts {', '.join(sorted(keys))}, "
        f"{rate_limit_per_minute} requests/min",
        err=True,
    )
    for name, problem in server.store.problems().items():
        _info(f"  {name}: {problem}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        typer.echo("CallRail simulator stopped", err=True)


def build_demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Data directory to write (calls/ inside); default: the shipped demo."),
    ] = None,
) -> None:
    """Synthesize the demo calls (espeak-ng two-voice speech, 8 kHz phone band, MP3/WAV)."""
    from callpipe.simulator import DEMO_CALLS_DIR
    from callpipe.simulator.demo_builder import MissingTools, build_demo_calls

    target = out or DEMO_CALLS_DIR
    try:
        built = build_demo_calls(target)
    except (MissingTools, RuntimeError) as error:
        _fail(str(error))
    total = 0
    for call in built:
        total += call.audio_bytes
        audio = (
            f"{call.audio_name} {call.audio_bytes / 1024:.0f} KB, {call.seconds:.1f} s"
            if call.audio_name
            else "no recording"
        )
        typer.echo(f"{call.call_id}  {call.title:<44} {audio}")
    typer.echo(f"{len(built)} calls, {total / 1024:.0f} KB of audio in {target / 'calls'}")
    if os.environ.get("CALLRAIL_SIM_DATA_DIR"):
        _info("note: CALLRAIL_SIM_DATA_DIR is set; `callpipe sim serve` serves that folder")
