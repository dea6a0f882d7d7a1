"""Runtime test helpers: a producer that records what it is given, hand-made records, a scripted worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage, Storage
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.lifecycle import FinalEvent, JobContext, JobWorker, Verdict, WorkerClients
from schemas import topics
from schemas.events import Envelope, GenerationRequested, parse_event
from schemas.generation import GenerationParams


class RecordingProducer:
    """Stands in for the Kafka producer in unit tests: every record is acknowledged at once and kept."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[None]:
        self.sent.append((topic, parse_event(value)))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.sent.append((topic, parse_event(value)))

    def events(self, topic: str = topics.TASK_EVENTS) -> list[Any]:
        return [event for sent_to, event in self.sent if sent_to == topic]

    def types(self) -> list[str]:
        return [event.type for event in self.events()]


def record(
    value: bytes, *, topic: str = topics.GENERATION_REQUESTS, offset: int = 0, key: bytes | None = None
) -> ConsumerRecord[bytes, bytes]:
    """A consumed record as aiokafka hands it over, keyed by the value's task id unless `key` is given."""
    if key is None:
        try:
            key = str(json.loads(value).get("task_id", "")).encode()
        except (ValueError, AttributeError):
            key = b"key"
    return ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), [])


def request(task_id: str) -> GenerationRequested:
    return GenerationRequested(task_id=task_id, params=GenerationParams(prompt="a tone", duration=1.0))


Script = Callable[[GenerationRequested, JobContext], Awaitable[FinalEvent]]


class ScriptedWorker(JobWorker[GenerationRequested]):
    """A worker whose job is a test's coroutine; exceptions carrying a `verdict` are classified by it."""

    request_type = GenerationRequested

    def __init__(self, script: Script, *, stored: FinalEvent | None = None) -> None:
        self.script = script
        self.runs = 0
        self.stored = stored
        self.finals: list[tuple[FinalEvent, int]] = []
        """Each final event given to `on_final`, with how many records were published before it."""
        self.producer: RecordingProducer | None = None

    async def run(self, request: GenerationRequested, ctx: JobContext) -> FinalEvent:
        self.runs += 1
        return await self.script(request, ctx)

    def classify(self, error: Exception) -> Verdict | None:
        return getattr(error, "verdict", None)

    async def replay(self, request: GenerationRequested, storage: Storage) -> FinalEvent | None:
        return self.stored

    async def on_final(self, final: FinalEvent, storage: Storage) -> None:
        self.finals.append((final, len(self.producer.sent) if self.producer else -1))


class Classified(Exception):
    """An error the scripted worker maps to `verdict`."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(repr(verdict))
        self.verdict = verdict


def clients(settings: Settings, producer: RecordingProducer, tmp_path: Path, cancels: CancelWatcher) -> WorkerClients:
    return WorkerClients(
        settings=settings,
        worker="test-worker",
        storage=LocalStorage(tmp_path / "data"),
        producer=cast(AIOKafkaProducer, producer),
        cancels=cancels,
    )
