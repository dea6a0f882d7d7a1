"""Read the retry topic (group `webhooks-retries`) and make each attempt once it is due.

Retries of one partition fall due in any order (a record written later may have a shorter backoff), so
the reader holds records in memory, soonest first, instead of pausing at the first one not yet due; a
record's offset is committed once its attempt is over and the next retry (if any) is acknowledged, so a
pending retry survives a restart: the reader reads it again. While `MAX_HELD` records wait, it fetches
no more. A record older in its chain than one already read (left uncommitted by a crash right after its
successor was written) is dropped rather than sent again.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import time
from collections import OrderedDict

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from acefarm.infra.kafka import dead_letter
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import WebhookRetry
from webhooks.attempts import Attempts
from webhooks.consumer import WorkingConsumer
from webhooks.deliveries import Delivery

log = get_logger(__name__)

CONCURRENCY = 32
MAX_HELD = 20_000
MAX_REMEMBERED = 100_000
"""Deliveries whose latest attempt number is remembered (to drop superseded records)."""
POLL_MS = 500

Held = tuple[float, int, TopicPartition, int, WebhookRetry]


class RetryReader:
    """The `webhooks-retries` group member on `WEBHOOK_RETRIES`."""

    def __init__(self, settings: Settings, attempts: Attempts, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        self.member = WorkingConsumer(settings, topics.WEBHOOK_RETRIES, topics.WEBHOOK_RETRIES_GROUP, stop)
        self.member.on_revoke = self._drop
        self._attempts = attempts
        self._producer = producer
        self._stop = stop
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._held: list[Held] = []
        self._order = itertools.count()
        self._latest: OrderedDict[str, int] = OrderedDict()

    async def run(self) -> None:
        """Read retries and start each when due until stop is requested."""
        consumer = self.member.consumer
        while not self._stop.is_set():
            self.member.hold(len(self._held) >= MAX_HELD)
            wait_ms = POLL_MS if not self._held else max(0, min(POLL_MS, int((self._held[0][0] - time.time()) * 1000)))
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    await self._take(tp, record)
            self._start_due()
            await self.member.commit()

    async def _take(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self.member.marks.track(tp, record.offset)
        try:
            retry = WebhookRetry.model_validate_json(record.value or b"")
        except ValidationError as error:
            await dead_letter(self._producer, record, str(error), "webhooks-retries")
            self.member.marks.done(tp, record.offset)
            return
        self._remember(retry)
        heapq.heappush(self._held, (retry.due_at.timestamp(), next(self._order), tp, record.offset, retry))

    def _remember(self, retry: WebhookRetry) -> None:
        latest = max(self._latest.pop(retry.delivery_id, 0), retry.attempt)
        self._latest[retry.delivery_id] = latest
        while len(self._latest) > MAX_REMEMBERED:
            self._latest.popitem(last=False)

    def _start_due(self) -> None:
        now = time.time()
        while self._held and self._held[0][0] <= now:
            _, _, tp, offset, retry = heapq.heappop(self._held)
            if retry.attempt < self._latest.get(retry.delivery_id, 0):
                log.info("webhooks.retry_superseded", task_id=retry.task_id, delivery_id=retry.delivery_id)
                self.member.marks.done(tp, offset)
                continue
            self.member.spawn(tp, offset, functools.partial(self._attempt, retry))

    async def _attempt(self, retry: WebhookRetry) -> None:
        async with self._slots:
            await self._attempts.attempt(Delivery.of_retry(retry))

    def _drop(self, revoked: set[TopicPartition]) -> None:
        """Forget the held records of partitions that went to another member (it reads them again)."""
        self._held = [held for held in self._held if held[2] not in revoked]
        heapq.heapify(self._held)
