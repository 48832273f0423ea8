"""Stopping the local stack's processes: a second Ctrl-C must not leave any running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.unit.conftest import wait_until

# A child that starts a process group which ignores SIGTERM (so stopping it takes the
# grace period, then SIGKILL), and stops it the way LocalStack.stop does.
CHILD = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from callpipe.devstack.processes import ManagedProcess, shielded_from_interrupts

    signal.signal(signal.SIGINT, signal.default_int_handler)
    process = ManagedProcess(
        "stubborn", ["bash", "-c", "trap '' TERM; sleep 300"], Path(sys.argv[1])
    ).start()
    try:
        # announced inside the try: a Ctrl-C sent as soon as it is read must find the handler
        print(process.process.pid, flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        with shielded_from_interrupts():
            process.stop(grace=2.0)
        print("stopped", flush=True)
    """
)


def _ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(status.split("SigIgn:")[1].split()[0], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_ctrl_c_does_not_cut_the_stop_short(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "stubborn.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": "shared"},
    )
    try:
        assert child.stdout is not None
        group = int(child.stdout.readline())
        wait_until(lambda: _ignores_sigterm(group))  # stopping it will take the grace period
        child.send_signal(signal.SIGINT)  # Ctrl-C: the stop begins
        assert child.stdout.readline().strip() == "stopping"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)  # impatient, or make passing it on
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=20)
        assert code == 0
        assert child.stdout.read().strip() == "stopped"
        wait_until(lambda: not _alive(group))
    finally:
        child.kill()
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
