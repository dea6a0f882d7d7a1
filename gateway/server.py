"""Serving the app with uvicorn: in the foreground (`run_gateway`) or in a thread (`ServerThread`)."""

from __future__ import annotations

import threading
import time

import uvicorn

from acefarm.infra.logging import configure_logging
from acefarm.infra.settings import Settings
from acefarm.infra.tracing import configure_tracing
from gateway.admission import BacklogProbe
from gateway.app import create_app


def uvicorn_config(settings: Settings, host: str, port: int, backlog: BacklogProbe | None = None) -> uvicorn.Config:
    """uvicorn settings for the gateway app (logging left to structlog); `backlog` as in `create_app`."""
    return uvicorn.Config(
        create_app(settings, backlog),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )


def run_gateway(settings: Settings, host: str, port: int) -> None:
    """Serve the gateway on `host:port` until SIGINT/SIGTERM, then shut down cleanly (exporting traces if set)."""
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway", settings)
    uvicorn.Server(uvicorn_config(settings, host, port)).run()


class ServerThread:
    """The gateway served from a background thread (tests, embedding); `start()` waits until it listens."""

    def __init__(
        self, settings: Settings, host: str = "127.0.0.1", port: int = 0, backlog: BacklogProbe | None = None
    ) -> None:
        self.server = uvicorn.Server(uvicorn_config(settings, host, port, backlog))
        self.host, self.port = host, port
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        """Start serving; raises RuntimeError if start-up fails or takes longer than `timeout_s`."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start (see its log)")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask uvicorn to exit and wait for the lifespan shutdown."""
        self.server.should_exit = True
        self._thread.join(timeout_s)
