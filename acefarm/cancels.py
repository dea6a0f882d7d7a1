"""Which tasks were cancelled: a group-less reader of the whole `TASK_CONTROL` topic (generic)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from acefarm.kafka import make_consumer
from acefarm.logging import get_logger
from acefarm.settings import Settings
from schemas import topics
from schemas.events import CancelRequested, parse_event

log = get_logger(__name__)


class CancelWatcher:
    """Every cancelled task id seen on `TASK_CONTROL`, read from the start; `is_cancelled` is thread-safe."""

    def __init__(self, settings: Settings, *, capacity: int = 200_000) -> None:
        self._settings = settings
        self._capacity = capacity
        self._cancelled: dict[str, None] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._polled = asyncio.Event()

    async def start(self) -> None:
        """Connect and follow the control topic."""
        self._consumer = make_consumer(self._settings, topics.TASK_CONTROL, group_id=None)
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow(self._consumer), name="cancel-watcher")

    async def stop(self) -> None:
        """Stop following and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def is_cancelled(self, task_id: str) -> bool:
        """Whether a cancel for `task_id` has been seen."""
        return task_id in self._cancelled

    async def catch_up(self, timeout_s: float = 2.0) -> bool:
        """Wait until every cancel published before now has been read; False when `timeout_s` ran out."""
        consumer = self._consumer
        if consumer is None:
            return False
        deadline = time.monotonic() + timeout_s
        try:
            while not (partitions := consumer.assignment()):
                if not await self._wait_poll(deadline):
                    return False
            ends = await asyncio.wait_for(consumer.end_offsets(list(partitions)), timeout_s)
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                if not await self._wait_poll(deadline):
                    return False
            return True
        except Exception as error:  # a slow control topic must not block jobs
            log.warning("cancellations.catch_up_failed", error=str(error))
            return False

    async def _wait_poll(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._polled.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._polled.wait(), min(remaining, 0.2))
        return True

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except Exception as error:
                log.warning("cancellations.poll_failed", error=str(error))
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    self._read(record.value)
            self._polled.set()

    def _read(self, raw: bytes | None) -> None:
        try:
            event = parse_event(raw or b"")
        except ValidationError as error:
            log.warning("cancellations.malformed_control_record", error=str(error)[:300])
            return
        if isinstance(event, CancelRequested):
            self._cancelled[event.task_id] = None
            while len(self._cancelled) > self._capacity:
                del self._cancelled[next(iter(self._cancelled))]
