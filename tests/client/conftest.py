"""One real farm for the client tests: its own broker, streams, scheduler, gateway (API keys on), a GPU
consumer with the tone engine and the webhook service, started once for the package."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.devtools.cli import app
from acefarm.devtools.keys_cli import publish_key
from acefarm.infra.settings import Settings
from schemas.keys import ApiKeyRecord, KeyLimits
from tests.conftest import FAST_GROUP_ENV
from tests.consumer.conftest import TONE_ENGINE, wait_for_log
from tests.support.processes import ROOT, Service, start_service, wait_until_ready

WEBHOOK_SECRET = "client-tests-webhook-secret-0123456789"


@dataclass(frozen=True)
class Farm:
    """Where the test farm answers and the key that may use it."""

    url: str
    port: int
    api_key: str
    bootstrap: str

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `python -m acefarm ARGS` against the farm (ACEFARM_URL and ACEFARM_API_KEY set) and wait."""
        return subprocess.run(
            [sys.executable, "-m", "acefarm", *args],
            cwd=ROOT,
            env=self.cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def invoke(self, *args: str, api_key: str | None = None) -> Result:
        """Run the `acefarm` command ARGS in this process (quicker than a process) against the farm."""
        env = {"ACEFARM_URL": self.url, "ACEFARM_API_KEY": api_key or self.api_key}
        return CliRunner().invoke(app, list(args), env=env)

    def cli_env(self) -> dict[str, str]:
        """The environment of a CLI process: the farm's URL and key."""
        return {**os.environ, "ACEFARM_URL": self.url, "ACEFARM_API_KEY": self.api_key, "COLUMNS": "120"}


@pytest.fixture(scope="package")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    with EmbeddedBroker() as broker:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            **FAST_GROUP_ENV,
            "ENGINE": TONE_ENGINE,
            "OUTPUT_DIR": str(tmp_path_factory.mktemp("farm-data")),
            "PROGRESS_MAX_HZ": "10",
            "AUTH_MODE": "keys",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEBHOOK_ALLOW_PRIVATE": "true",
        }
        record, secret = ApiKeyRecord.issue("client-tests", limits=KeyLimits(requests_per_s=1000, burst=1000))
        asyncio.run(publish_key(Settings(**{k.lower(): v for k, v in env.items()}), record))  # creates the topics
        logs = tmp_path_factory.mktemp("farm-logs")
        port = free_port()
        services: list[Service] = []
        try:
            for name in ("streams", "scheduler", "gpu-consumer", "webhooks"):
                services.append(start_service(name, ["-m", "acefarm", name], env, logs))
            gateway = start_service("gateway", ["-m", "acefarm", "gateway", "--port", str(port)], env, logs)
            services.append(gateway)
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/readyz", gateway)
            wait_for_log(services[2], "kafka.group_joined", timeout_s=120)
            yield Farm(url=url, port=port, api_key=secret, bootstrap=broker.bootstrap_servers)
        finally:
            for service in reversed(services):
                service.stop()


@pytest.fixture
def lyrics_file(tmp_path: Path) -> Path:
    path = tmp_path / "verse.txt"
    path.write_text("[verse]\nsine waves at dawn\n[chorus]\nla la la\n", encoding="utf-8")
    return path
