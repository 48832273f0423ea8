"""Serving the simulator: ``create_app`` (the WSGI app) and ``SimulatorServer`` (a thread).

``SimulatorServer`` runs werkzeug's threaded server in a background thread on 127.0.0.1,
so tests and the local stack get a real HTTP endpoint (real sockets, real headers, real
connection drops) without a subprocess::

    with SimulatorServer(data_dir, {"728790660": "key"}, rate_limit_per_minute=5) as sim:
        httpx.get(f"{sim.url}/v3/a/728790660/calls.json",
                  headers={"Authorization": 'Token token="key"'})
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from callpipe.simulator.app import SimulatorApp
from callpipe.simulator.config import SimulatorConfig
from callpipe.simulator.store import CallStore

log = logging.getLogger("callpipe.simulator")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def create_app(store: CallStore, config: SimulatorConfig) -> SimulatorApp:
    """The WSGI app (a callable ``(environ, start_response)``) serving ``store``."""
    return SimulatorApp(store, config)


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to our logger at DEBUG instead of werkzeug's stderr handler."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, self.path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            log.warning(message.rstrip(), *args)
        else:
            log.debug(message.rstrip(), *args)


class SimulatorServer:
    def __init__(
        self,
        data_dir: Path,
        api_keys: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_minute: int = 120,
        recording_url_ttl_seconds: int = 300,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the simulator only binds to loopback, not {host!r}")
        self.host = host
        self.port = port
        self.store = CallStore(Path(data_dir))
        self.config = SimulatorConfig(
            api_keys=dict(api_keys),
            rate_limit_per_minute=rate_limit_per_minute,
            recording_url_ttl_seconds=recording_url_ttl_seconds,
            clock=clock,
            sleep=sleep,
        )
        self.app = create_app(self.store, self.config)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._server.server_port}"

    @property
    def api_base_url(self) -> str:
        """What a CallRail client takes as its base URL (the real one is .../v3)."""
        return f"{self.url}/v3"

    def start(self) -> SimulatorServer:
        if self._server is not None:
            return self
        self.store.refresh()
        server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        # A short poll interval makes stop() (shutdown) return promptly.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="callrail-simulator",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("CallRail simulator serving %s from %s", self.url, self.store.data_dir)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def reset(self) -> None:
        """Same as ``POST /_sim/reset``: runtime faults, counters and rate windows."""
        self.app.reset()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
