"""A GPU consumer killed mid-job: the job is redone by the next consumer and exactly one success is reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from acefarm.devtools.broker import EmbeddedBroker, free_port
from schemas import topics
from schemas.events import TaskStarted, TaskStatusRecord, parse_event
from tests.conftest import FAST_GROUP_ENV
from tests.support.processes import Service, start_service, wait_until_ready

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, so no other consumer shares the `gpu-workers` group."""
    with EmbeddedBroker() as running:
        yield running


async def _events_for(bootstrap: str, topic: str, task_id: str) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[object] = []
        for _ in range(4):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(e for r in records if (e := parse_event(r.value)).task_id == task_id)
        return found
    finally:
        await consumer.stop()


def test_killed_consumer_job_is_redone_and_reported_once(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        **FAST_GROUP_ENV,
        "ENGINE": "tests.support.tone_engine:ToneEngine",
        "TONE_ENGINE_STEP_S": "0.5",
        "OUTPUT_DIR": str(tmp_path / "data"),
        "AUTH_MODE": "off",
    }
    logs = tmp_path / "logs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    services: list[Service] = [
        start_service("streams", ["-m", "acefarm", "streams"], env, logs),
        start_service("scheduler", ["-m", "acefarm", "scheduler"], env, logs),
        start_service("gateway", ["-m", "acefarm", "gateway", "--port", str(port)], env, logs),
    ]
    first = start_service("consumer-1", ["-m", "acefarm", "gpu-consumer"], env, logs)
    services.append(first)
    try:
        wait_until_ready(f"{url}/readyz", services[2])
        task_id = httpx.post(f"{url}/generate", json={"prompt": "long one", "duration": 2.0}).json()["task_id"]

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/status/{task_id}").json()
            if status["status"] == "running" and status["progress"] > 0:
                break
            time.sleep(0.2)
        assert status["status"] == "running", status
        first.kill()

        services.append(start_service("consumer-2", ["-m", "acefarm", "gpu-consumer"], env, logs))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/status/{task_id}").json()
            if status["status"] in ("success", "failed", "cancelled"):
                break
            time.sleep(0.3)
        assert status["status"] == "success", status

        events = asyncio.run(_events_for(own_broker.bootstrap_servers, topics.TASK_EVENTS, task_id))
        attempts = {e.attempt for e in events if isinstance(e, TaskStarted)}
        assert len(attempts) == 2, "the job should have been started twice: once per consumer"

        snapshots = asyncio.run(_events_for(own_broker.bootstrap_servers, topics.TASK_STATUS, task_id))
        successes = [s for s in snapshots if isinstance(s, TaskStatusRecord) and s.status.status == "success"]
        assert len(successes) == 1, "exactly one success must be reported"
    finally:
        for service in reversed(services):
            service.stop()
