"""Fixtures for scheduler tests: the scheduler process, an intake producer, and a stand-in GPU worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import GenerationRequested, parse_event
from schemas.generation import GenerationParams
from tests.consumer.conftest import wait_for_log
from tests.support.processes import Service, start_service

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


@dataclass
class Received:
    """One ready record the stand-in worker took."""

    task_id: str
    owner: str | None
    priority: str
    at: float


@dataclass
class StandInWorker:
    """A plain aiokafka consumer in the gpu-workers group on the ready topic: one record at a time, a fixed
    delay, commit after processing (as the GPU runtime does)."""

    bootstrap: str
    delay_s: float
    received: list[Received] = field(default_factory=list)
    finished: dict[str, float] = field(default_factory=dict)
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=topics.GPU_WORKERS_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            rebalance_timeout_ms=3000,
            fetch_max_wait_ms=20,
        )
        consumer.subscribe([topics.GENERATION_READY])
        await consumer.start()
        self._task = asyncio.create_task(self._work(consumer))

    async def _work(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=1)
                if consumer.assignment():
                    self.joined.set()
                for tp, records in batch.items():
                    for record in records:
                        event = parse_event(record.value)
                        assert isinstance(event, GenerationRequested)
                        self.received.append(Received(event.task_id, event.owner, event.priority, time.monotonic()))
                        await asyncio.sleep(self.delay_s)
                        self.finished.setdefault(event.task_id, time.monotonic())
                        await consumer.commit({TopicPartition(tp.topic, tp.partition): record.offset + 1})
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def order(self, prefix: str) -> list[str]:
        return [r.task_id for r in self.received if r.task_id.startswith(prefix)]

    async def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
            await asyncio.sleep(0.05)


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
