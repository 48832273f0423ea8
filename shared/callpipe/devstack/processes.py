"""Child processes started in their own process group and stopped as a whole.

Stopping ``gcloud`` alone leaves its children (``java``, ``emulator_main``) running, so
every process is its own session leader and is stopped with a signal to the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def shielded_from_interrupts() -> Iterator[None]:
    """Run a cleanup that Ctrl-C must not cut short: a second Ctrl-C, or make passing the
    first one on to its child, would otherwise leave emulators running. Outside the main
    thread (where signals cannot be handled) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StartupError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started us dies, so a
    SIGKILLed `make run` does not leave its servers behind (Linux only; best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``ready``; on failure stop the process group before raising."""
        try:
            self._wait_until(ready, timeout, what)
        except StartupError:
            self.stop()
            raise

    def _wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StartupError(
                    f"{self.name} exited before it was ready ({what}); log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise StartupError(
            f"{self.name} was not ready after {timeout:.0f} s ({what}); log {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def stop(self, grace: float = 5.0) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.process.poll()  # reap the leader so a zombie does not keep the group
                if not _group_alive(pgid):
                    break
                time.sleep(0.05)
            if not _group_alive(pgid):
                break
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        self.process = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
            return bool(200 <= response.status < 500)
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessLedger:
    """Process groups a stack started, written to its state folder.

    Children of ``gcloud`` (java, emulator_main) do not die with their parent, so a stack
    that was killed outright would leave them running; the next stack started on the same
    state folder stops whatever the ledger still lists.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def add(self, process: ManagedProcess) -> None:
        if process.process is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write(f"{process.process.pid} {process.name}\n")

    def clear(self) -> None:
        self._path.unlink(missing_ok=True)

    def reap(self) -> list[str]:
        """Stop every group still alive from an earlier run; return their names."""
        if not self._path.exists():
            return []
        stopped = []
        for line in self._path.read_text(encoding="utf-8").splitlines():
            pgid_text, _, name = line.partition(" ")
            if not pgid_text.isdigit():
                continue
            pgid = int(pgid_text)
            if not _group_alive(pgid):
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline and _group_alive(pgid):
                    time.sleep(0.05)
                if not _group_alive(pgid):
                    break
            stopped.append(name)
        self.clear()
        return stopped
