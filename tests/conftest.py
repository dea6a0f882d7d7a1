"""Shared fixtures: the embedded Kafka broker, a moto S3 server, and settings pointing at them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.infra.settings import Settings

FAST_GROUP_ENV = {
    # Tansu makes a group join wait about the rebalance timeout: keep it short in tests.
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    "KAFKA_PARTITIONS": "4",
}


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole test session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def kafka_env(broker: EmbeddedBroker) -> dict[str, str]:
    """Environment variables that point a service process at the test broker."""
    return {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, **FAST_GROUP_ENV}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint over HTTP (moto's server mode)."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def make_settings(kafka_env: dict[str, str], tmp_path: Path) -> Any:
    """Build `Settings` for the test broker and a temporary output dir, with overrides."""

    def build(**overrides: Any) -> Settings:
        base: dict[str, Any] = {k.lower(): v for k, v in kafka_env.items()}
        base["output_dir"] = tmp_path / "data"
        base.update(overrides)
        return Settings(**base)

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random base-style ACE-Step 1.5 checkpoint (all seven task types), built once per session."""
    from acefarm.model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny")
