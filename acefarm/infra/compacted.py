"""Read a compacted topic whole into memory and follow it live (or any topic from a bounded lookback).

Every partition is assigned from the beginning (or from `since_s` seconds ago) with no consumer group:
start-up needs no group join, and every process (every gateway replica) sees every record.
`caught_up` is set once the reader has reached the end offsets the topic had when it started, i.e.
once the in-memory table is as complete as the topic was at start. What a record means is the
caller's business: `apply(key, value)` gets each record in partition order (`value` None is a
tombstone); a record it raises on is logged, counted in `failed` and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from acefarm.infra.kafka import IDLE_POLL_MS, make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings

log = get_logger(__name__)

APPLY_SLICE = 64
"""Records applied between two yields to the event loop."""
CATCH_UP_POLL_MS = 500
"""The fetch wait until caught up: the end may lie past the last record a fetch returns (then only a
re-check after an empty wait notices being caught up)."""

Apply = Callable[[bytes | None, bytes | None], None]


class CompactedReader:
    """Feeds every record of `topic` to `apply` in a background task, from the beginning, forever."""

    def __init__(
        self, settings: Settings, topic: str, apply: Apply, name: str | None = None, since_s: float | None = None
    ) -> None:
        self.settings = settings
        self.since_s = since_s
        """Start at the first record of the last `since_s` seconds instead of the beginning (None: beginning)."""
        self.topic = topic
        self.name = name or topic
        self._apply = apply
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._targets: dict[TopicPartition, int] = {}
        self.caught_up = asyncio.Event()
        self.records = 0
        self.failed = 0

    async def start(self) -> None:
        """Assign every partition from the beginning (or `since_s` ago), note the end offsets and start following.

        Raises RuntimeError when the topic does not exist (create it first: `ensure_topics`).
        """
        consumer = make_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()  # refresh metadata so partitions are known
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise RuntimeError(f"topic {self.topic} does not exist; create it first (ensure_topics)")
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await self._seek_start(consumer, tps, ends)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._targets = {tp: end for tp, end in ends.items() if end > starts[tp]}
        if not self._targets:
            self.caught_up.set()
        self._task = asyncio.create_task(self._run(), name=f"compacted-{self.name}")
        log.info("compacted.started", reader=self.name, partitions=len(tps), backlog=sum(self._targets.values()))

    async def _seek_start(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Seek each partition to where reading starts; returns those offsets (0: the beginning)."""
        if self.since_s is None:
            await consumer.seek_to_beginning(*tps)
            return dict.fromkeys(tps, 0)
        since_ms = int((time.time() - self.since_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            hit = found.get(tp)
            starts[tp] = hit.offset if hit is not None else ends[tp]  # nothing that recent: start at the end
            consumer.seek(tp, starts[tp])
        return starts

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        """Whether the background consumer is alive."""
        return self._task is not None and not self._task.done()

    async def wait_caught_up(self, timeout_s: float) -> None:
        """Wait until `caught_up`; raises TimeoutError after `timeout_s`."""
        await asyncio.wait_for(self.caught_up.wait(), timeout_s)

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                wait_ms = IDLE_POLL_MS if self.caught_up.is_set() else CATCH_UP_POLL_MS
                batches = await consumer.getmany(timeout_ms=wait_ms, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep serving what we have; aiokafka reconnects on its own
                log.warning("compacted.fetch_failed", reader=self.name, error=str(error))
                await asyncio.sleep(1.0)
                continue
            await self._apply_all(batches.values())
            if not self.caught_up.is_set():
                await self._check_caught_up(consumer)

    async def _apply_all(self, batches: Iterable[list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Apply fetched records, letting other tasks run between slices of `APPLY_SLICE` records.

        A fetch can return thousands of records (a replay); applying them in one go would hold the
        event loop for tens of milliseconds and show up as request latency.
        """
        for records in batches:
            for record in records:
                try:
                    self._apply(record.key, record.value)
                except Exception as error:  # one bad record must not stop the table
                    self.failed += 1
                    log.warning("compacted.apply_failed", reader=self.name, offset=record.offset, error=str(error))
                self.records += 1
                if self.records % APPLY_SLICE == 0:
                    await asyncio.sleep(0)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return
        self.caught_up.set()
        log.info("compacted.caught_up", reader=self.name, records=self.records)
