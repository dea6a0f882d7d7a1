"""Follow the status stream (group `webhooks`) and make the first attempt of each delivery it calls for.

Deliveries of different tasks run concurrently (at most `CONCURRENCY` attempts at a time), those of one
task in stream order (start before progress before completed), so a slow or dead receiver holds up only
its own task's deliveries. A snapshot's offset is committed once its attempt is over and its retry or
report is acknowledged.
"""

from __future__ import annotations

import asyncio
import functools

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from acefarm.infra.kafka import dead_letter
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import TaskStatusRecord, utcnow
from webhooks.attempts import Attempts
from webhooks.consumer import WorkingConsumer
from webhooks.deliveries import delivery_for

log = get_logger(__name__)

CONCURRENCY = 32
MAX_OPEN = 5000
"""Snapshots read and not finished before the follower stops fetching."""
POLL_MS = 500
MIN_MAX_AGE_S = 24 * 3600.0
"""Snapshots older than this (or WEBHOOK_RETRY_FOR_S, if longer) are history, not news: never delivered."""


class StatusFollower:
    """The `webhooks` group member on `TASK_STATUS`."""

    def __init__(self, settings: Settings, attempts: Attempts, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        self.member = WorkingConsumer(settings, topics.TASK_STATUS, topics.WEBHOOKS_GROUP, stop)
        self._settings = settings
        self._attempts = attempts
        self._producer = producer
        self._stop = stop
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._chains: dict[bytes | None, asyncio.Task[None]] = {}
        self._max_age_s = max(MIN_MAX_AGE_S, settings.webhook_retry_for_s)

    async def run(self) -> None:
        """Read snapshots and start their deliveries until stop is requested."""
        consumer = self.member.consumer
        while not self._stop.is_set():
            self.member.hold(self.member.marks.open_count >= MAX_OPEN)
            batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    self._take(tp, record)
            await self.member.commit()

    def _take(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Start the record's work after the work on the same task's earlier snapshots."""
        before = self._chains.get(record.key)

        async def work() -> None:
            if before is not None:
                await asyncio.wait({before})
            await self._handle(record)

        task = self.member.spawn(tp, record.offset, work)
        self._chains[record.key] = task
        task.add_done_callback(functools.partial(self._unchain, record.key))

    def _unchain(self, key: bytes | None, done: asyncio.Task[None]) -> None:
        """Forget a task's chain once its last work is over."""
        if self._chains.get(key) is done:
            del self._chains[key]

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value is None:  # a tombstone: the task's status expired (STATUS_RETENTION_DAYS)
            return
        try:
            status = TaskStatusRecord.model_validate_json(record.value or b"").status
        except ValidationError as error:
            await dead_letter(self._producer, record, str(error), "webhooks")
            return
        delivery = delivery_for(
            status, base_url=self._settings.public_base_url, now=utcnow(), max_age_s=self._max_age_s
        )
        if delivery is not None:
            async with self._slots:
                await self._attempts.attempt(delivery)
