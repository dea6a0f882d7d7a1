"""Fixtures for scheduler tests: the scheduler process, an intake producer, and a stand-in GPU worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import GenerationRequested
from schemas.generation import GenerationParams
from tests.consumer.conftest import wait_for_log
from tests.support.processes import Service, start_service
from tests.support.stand_in_worker import StandInWorker

SCHEDULER_ARGS = ["-m", "acefarm", "scheduler"]
SCHEDULER_ID = "test-scheduler"


def scheduler_env(kafka_env: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment of a test scheduler: quick backlog refreshes, frequent snapshots."""
    return {
        **kafka_env,
        "SCHEDULER_ID": SCHEDULER_ID,
        "SCHEDULER_READY_DEPTH": "2",
        "SCHEDULER_REFRESH_MS": "50",
        "SCHEDULER_SNAPSHOT_INTERVAL_S": "0.5",
        **extra,
    }


@pytest.fixture(scope="module")
def topics_ready(kafka_env: dict[str, str]) -> None:
    asyncio.run(ensure_topics(Settings(**{k.lower(): v for k, v in kafka_env.items()})))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scheduler-logs")


@pytest.fixture
def start_scheduler(topics_ready: None, kafka_env: dict[str, str], log_dir: Path) -> Iterator[Callable[[], Service]]:
    """Starts `acefarm scheduler` processes (joined to their group before returning); stops them after the test."""
    started: list[Service] = []

    def start() -> Service:
        name = f"scheduler-{uuid.uuid4().hex[:6]}"  # a log file of its own: wait_for_log reads the whole file
        service = start_service(name, SCHEDULER_ARGS, scheduler_env(kafka_env), log_dir)
        started.append(service)
        wait_for_log(service, "kafka.group_joined")
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
async def worker(topics_ready: None, kafka_env: dict[str, str]) -> AsyncIterator[StandInWorker]:
    stand_in = StandInWorker(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], delay_s=0.02)
    await stand_in.start()
    try:
        await asyncio.wait_for(stand_in.joined.wait(), 30)
        yield stand_in
    finally:
        await stand_in.stop()


class Intake:
    """A raw producer of generation requests onto the intake topic (as the gateway or a direct producer)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    async def submit_many(self, task_ids: list[str], **fields: Any) -> None:
        params = GenerationParams(prompt="a calm sine", duration=1.0)
        futures = [
            await self.producer.send(
                topics.GENERATION_REQUESTS,
                GenerationRequested(task_id=task_id, params=params, **fields).to_bytes(),
                key=task_id.encode(),
            )
            for task_id in task_ids
        ]
        await asyncio.gather(*futures)

    async def submit_raw(self, key: bytes | None, value: bytes) -> None:
        await self.producer.send_and_wait(topics.GENERATION_REQUESTS, value, key=key)


@pytest.fixture
async def intake(topics_ready: None, kafka_env: dict[str, str]) -> AsyncIterator[Intake]:
    client = Intake(kafka_env["KAFKA_BOOTSTRAP_SERVERS"])
    await client.producer.start()
    try:
        yield client
    finally:
        await client.producer.stop()
