"""Fixtures for GPU consumer tests: a consumer subprocess, a raw producer, and an event recorder."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from pydantic import ValidationError

from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import CancelRequested, GenerationRequested, parse_event
from schemas.generation import GenerationParams
from tests.support.processes import Service, start_service

CONSUMER_ARGS = ["-m", "acefarm", "gpu-consumer"]
"""How the tests start the consumer process (python CONSUMER_ARGS...)."""
TONE_ENGINE = "tests.support.tone_engine:ToneEngine"
FINAL_TYPES = {"task.succeeded", "task.failed", "task.cancelled"}


class EventRecorder:
    """Follows task events and dead letters from the beginning, grouped by task id."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topics.TASK_EVENTS, topics.DEAD_LETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        # Any: tests read type-specific fields (files, reason, step...) off the parsed events.
        self.by_task: dict[str, list[Any]] = defaultdict(list)
        self.dead_letters: list[Any] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        event = parse_event(record.value)
                    except ValidationError:  # other suites share the broker and put malformed records on purpose
                        continue
                    if record.topic == topics.DEAD_LETTER:
                        self.dead_letters.append(event)
                    else:
                        self.by_task[event.task_id].append(event)
            self._changed.set()

    async def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def final(self, task_id: str, timeout_s: float = 60.0) -> Any:
        """The task's final event (waits for it)."""
        await self.wait_for(lambda: any(e.type in FINAL_TYPES for e in self.by_task[task_id]), timeout_s, task_id)
        return next(e for e in self.by_task[task_id] if e.type in FINAL_TYPES)

    def types(self, task_id: str) -> list[str]:
        return [e.type for e in self.by_task[task_id]]


class Client:
    """A raw aiokafka producer speaking the request contract."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def submit(self, task_id: str, **params: object) -> RecordMetadata:
        params.setdefault("prompt", "a calm sine")
        params.setdefault("duration", 1.5)
        event = GenerationRequested(task_id=task_id, params=GenerationParams.model_validate(params))
        return await self.producer.send_and_wait(topics.GENERATION_READY, event.to_bytes(), key=task_id.encode())

    async def submit_raw(self, key: bytes, value: bytes) -> RecordMetadata:
        return await self.producer.send_and_wait(topics.GENERATION_READY, value, key=key)

    async def cancel(self, task_id: str) -> None:
        event = CancelRequested(task_id=task_id)
        await self.producer.send_and_wait(topics.TASK_CONTROL, event.to_bytes(), key=task_id.encode())


def consumer_env(kafka_env: dict[str, str], output_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for `python -m acefarm gpu-consumer` with the tone engine and local storage."""
    return {
        **kafka_env,
        "ENGINE": TONE_ENGINE,
        "STORAGE_BACKEND": "local",
        "OUTPUT_DIR": str(output_dir),
        "PROGRESS_MAX_HZ": "10",
        **extra,
    }


def wait_for_log(service: Service, text: str, timeout_s: float = 60.0) -> float:
    """Block until `text` appears in the service's log; returns the seconds waited."""
    started = time.monotonic()
    while text not in service.log():
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited {service.process.returncode}:\n{service.log()[-4000:]}")
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{text!r} not in {service.name}'s log after {timeout_s}s:\n{service.log()[-4000:]}")
        time.sleep(0.05)
    return time.monotonic() - started


def start_consumer(name: str, env: dict[str, str], logs: Path) -> Service:
    """A GPU consumer process, returned once it joined its group."""
    service = start_service(name, CONSUMER_ARGS, env, logs)
    wait_for_log(service, "kafka.group_joined")
    return service


@pytest.fixture(scope="module")
def consumer_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("consumer-data")


@pytest.fixture(scope="module")
def topics_ready(kafka_env: dict[str, str]) -> None:
    overrides: dict[str, Any] = {k.lower(): v for k, v in kafka_env.items()}
    asyncio.run(ensure_topics(Settings(**overrides)))


@pytest.fixture(scope="module")
def consumer_service(
    topics_ready: None, kafka_env: dict[str, str], consumer_output: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One `python -m acefarm gpu-consumer` for the module, joined to the group before tests start."""
    service = start_service(
        "gpu-consumer",
        CONSUMER_ARGS,
        consumer_env(kafka_env, consumer_output),
        tmp_path_factory.mktemp("logs"),
    )
    try:
        wait_for_log(service, "kafka.group_joined")
        yield service
    finally:
        service.stop()


@pytest.fixture
async def recorder(topics_ready: None, broker: object, kafka_env: dict[str, str]) -> AsyncIterator[EventRecorder]:
    rec = EventRecorder(kafka_env["KAFKA_BOOTSTRAP_SERVERS"])
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


@pytest.fixture
async def client(topics_ready: None, kafka_env: dict[str, str]) -> AsyncIterator[Client]:
    c = Client(kafka_env["KAFKA_BOOTSTRAP_SERVERS"])
    await c.producer.start()
    try:
        yield c
    finally:
        await c.producer.stop()
