"""A stand-in GPU worker: a plain aiokafka consumer in the gpu-workers group on the ready topic, one record
at a time, a fixed delay, commit after processing (as the GPU runtime does). Used by the scheduler tests and
bench/fairness_bench.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import topics
from schemas.events import GenerationRequested, parse_event


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
