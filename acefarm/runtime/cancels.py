"""Which tasks were cancelled: a group-less reader of the whole `TASK_CONTROL` topic (generic)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from acefarm.infra.kafka import IDLE_POLL_MS, make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import CancelRequested, parse_event

log = get_logger(__name__)


class CancelWatcher:
    """Keeps the set of cancelled task ids from `TASK_CONTROL`, read from the beginning on every partition.

    No consumer group: every worker sees every cancel. `is_cancelled` is safe to call from a job's
    worker thread. The set is bounded (oldest ids are forgotten first).
    """

    def __init__(self, settings: Settings, *, capacity: int = 200_000) -> None:
        self._settings = settings
        self._capacity = capacity
        self._cancelled: dict[str, None] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self._next_check: asyncio.Future[bool] | None = None
        """The catch-up check not yet begun: callers until it begins share it."""

    async def start(self) -> None:
        """Connect and start following the control topic."""
        self._consumer = make_consumer(self._settings, topics.TASK_CONTROL, group_id=None)
        await self._consumer.start()
        # End offsets are asked on a second connection: on the follower's own connection the
        # request queues behind its long-poll fetch (up to KAFKA_FETCH_MAX_WAIT_MS).
        self._probe = make_consumer(self._settings, group_id=None)
        await self._probe.start()
        self._task = asyncio.create_task(self._follow(self._consumer), name="cancel-watcher")

    async def stop(self) -> None:
        """Stop following and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._consumer, self._probe):
            if client is not None:
                await client.stop()

    def is_cancelled(self, task_id: str) -> bool:
        """Whether a cancel for `task_id` has been seen; thread-safe."""
        return task_id in self._cancelled

    async def catch_up(self, timeout_s: float = 2.0) -> bool:
        """Wait until every cancel published before now has been read; False if `timeout_s` ran out.

        Called before a job starts, so a cancel sent just before the job is reached is not missed. Callers at
        the same moment (the members of a batch) share one check, begun after all of them asked.
        """
        check = self._next_check
        if check is None:
            check = self._next_check = asyncio.ensure_future(self._check(timeout_s))
        return await asyncio.shield(check)

    async def _check(self, timeout_s: float) -> bool:
        self._next_check = None  # begun: anyone asking from now on needs a check of their own
        consumer, probe = self._consumer, self._probe
        if consumer is None or probe is None:
            return False
        deadline = time.monotonic() + timeout_s
        try:
            while not (partitions := consumer.assignment()):  # right after start: metadata not in yet
                if not await self._wait_progress(deadline):
                    return False
            ends = await asyncio.wait_for(probe.end_offsets(list(partitions)), timeout_s)
            while True:
                behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                if not behind:
                    return True
                if not await self._wait_progress(deadline):
                    log.warning("cancellations.catch_up_timeout", behind=len(behind))
                    return False
        except Exception as error:  # a slow control topic must not block jobs
            log.warning("cancellations.catch_up_failed", error=str(error))
            return False

    async def _wait_progress(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), min(remaining, 0.2))
        return True

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS)
            except Exception as error:  # cancellation (a BaseException) still stops the loop
                log.warning("cancellations.poll_failed", error=str(error))
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    self._read(record.value)
            self._progress.set()

    def _read(self, raw: bytes | None) -> None:
        try:
            event = parse_event(raw or b"")
        except ValidationError as error:
            log.warning("cancellations.malformed_control_record", error=str(error)[:300])
            return
        if not isinstance(event, CancelRequested):
            return
        if event.task_id not in self._cancelled:
            log.info("cancellations.cancel_seen", task_id=event.task_id)
        self._cancelled[event.task_id] = None
        while len(self._cancelled) > self._capacity:
            del self._cancelled[next(iter(self._cancelled))]
