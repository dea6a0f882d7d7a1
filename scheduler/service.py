"""The scheduler process: intake topic → fair queue in memory → ready topic, only while the GPUs need work.

One loop: fetch intake records (validated; malformed ones dead-lettered), queue them in lanes
(owner, priority), admit in fair order while the ready topic is shallow, commit the intake's settled
prefix, publish a queue snapshot when it changed. With nothing waiting it only waits for records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from acefarm.infra.kafka import ensure_topics, make_consumer, make_producer
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.metrics import ADMISSIONS, WAITING, serving_metrics
from acefarm.infra.settings import Settings
from acefarm.runtime.events import parse_request
from scheduler.fair_queue import FairQueue
from scheduler.gauge import ReadyGauge
from scheduler.ledger import OffsetLedger
from scheduler.recovery import INTAKE_HEADER, already_admitted, intake_header
from schemas import topics
from schemas.events import GenerationRequested
from schemas.queues import LaneSnapshot, QueuedTask, QueueSnapshot
from schemas.tenancy import ANONYMOUS, Priority

log = get_logger(__name__)

IDLE_WAIT_MS = 60_000
"""How long one fetch waits when nothing is queued (records wake it at once)."""
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Waiting:
    """A valid request held back in a lane: its intake position and its bytes (admitted unchanged)."""

    task_id: str
    partition: int
    offset: int
    value: bytes
    priority: Priority
    headers: tuple[tuple[str, bytes], ...]
    """The intake record's headers (trace context), carried to the ready record."""


def scheduler_name(settings: Settings) -> str:
    """`SCHEDULER_ID` when set, else `host:pid`: the key of this instance's queue snapshots."""
    return settings.scheduler_id or f"{socket.gethostname()}:{os.getpid()}"


def weights(settings: Settings) -> dict[Priority, int]:
    """The round-robin weight of each priority."""
    return {
        Priority.HIGH: settings.scheduler_weight_high,
        Priority.NORMAL: settings.scheduler_weight_normal,
        Priority.BATCH: settings.scheduler_weight_batch,
    }


class AdmissionRate:
    """Admissions per second over the last minute."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def note(self) -> None:
        """Count one admission now."""
        self._times.append(time.monotonic())

    def per_s(self) -> float:
        """Admissions per second across the recent ones (0 with fewer than two)."""
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._times and self._times[0] < cutoff:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(time.monotonic() - self._times[0], 1e-3)


class Scheduler:
    """The fair queue between the intake and the ready topic, for the intake partitions this instance holds."""

    def __init__(
        self, settings: Settings, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, gauge: ReadyGauge
    ) -> None:
        self.name = scheduler_name(settings)
        self.queue: FairQueue[Waiting] = FairQueue(weights(settings))
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._gauge = gauge
        self._ledger = OffsetLedger()
        self._skip: set[tuple[int, int]] = set()
        self._committed: dict[int, int] = {}
        self._rate = AdmissionRate()
        self._dirty = True
        self._published_at = float("-inf")
        self._paused = False
        self._recovering = 0
        """Rebalance recoveries in progress: nothing is admitted while one runs."""

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule until `stop` is set."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                fetch = asyncio.create_task(self._consumer.getmany(timeout_ms=self._wait_ms(), max_records=500))
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
                for records in fetch.result().values():
                    for record in records:
                        await self._take(record)
                await self._admit()
                await self.commit()
                await self._publish_snapshot()
                self._backpressure()
        finally:
            stopping.cancel()

    async def partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is settled on `revoked`, then drop their waiting jobs (the next owner re-reads them)."""
        await self.commit()
        gone = {tp.partition for tp in revoked if tp.topic == topics.GENERATION_REQUESTS}
        dropped = len(self.queue.remove_if(lambda item: item.partition in gone))
        for partition in gone:
            self._ledger.forget(partition)
            self._committed.pop(partition, None)
        self._skip = {position for position in self._skip if position[0] not in gone}
        self._paused = False
        self._dirty = True
        log.info("scheduler.partitions_revoked", partitions=sorted(gone), dropped=dropped)

    async def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Find the records of `assigned` that an earlier owner admitted but did not commit, to skip them.

        The partitions stay paused and nothing is admitted meanwhile; records fetched before the pause
        that turn out to be admitted already are taken back out of the queue.
        """
        intake = [tp for tp in assigned if tp.topic == topics.GENERATION_REQUESTS]
        self._recovering += 1
        if intake:
            self._consumer.pause(*intake)
        try:
            positions: dict[int, int] = {}
            for tp in intake:
                committed = await self._consumer.committed(tp)
                if committed is None:
                    committed = (await self._consumer.beginning_offsets([tp]))[tp]
                positions[tp.partition] = committed
                self._committed[tp.partition] = committed
            self._skip |= await already_admitted(self._settings, positions, self._gauge.partitions)
            for item in self.queue.remove_if(lambda item: (item.partition, item.offset) in self._skip):
                self._skip.discard((item.partition, item.offset))
                self._ledger.settled(item.partition, item.offset)
        finally:
            if intake:
                self._consumer.resume(*intake)
            self._recovering -= 1
        self._dirty = True
        log.info("scheduler.partitions_assigned", partitions=sorted(positions))

    async def commit(self) -> None:
        """Commit each partition's settled prefix where it moved."""
        moved = {p: offset for p, offset in self._ledger.positions().items() if self._committed.get(p) != offset}
        if not moved:
            return
        try:
            await self._consumer.commit({TopicPartition(topics.GENERATION_REQUESTS, p): o for p, o in moved.items()})
        except KafkaError as error:  # a rebalance took the partitions: the next owner re-reads and skips
            log.warning("scheduler.commit_failed", error=repr(error))
            return
        self._committed.update(moved)

    async def publish_tombstone(self) -> None:
        """Remove this instance's snapshot from the compacted topic (on a clean stop)."""
        await self._producer.send_and_wait(topics.SCHEDULER_QUEUES, None, key=self.name.encode())

    async def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Queue a valid request; settle an already-admitted or malformed (dead-lettered) one."""
        self._ledger.seen(record.partition, record.offset)
        position = (record.partition, record.offset)
        if position in self._skip:
            self._skip.discard(position)
            self._ledger.settled(*position)
            return
        event = await parse_request(self._producer, record, GenerationRequested, self.name)
        if event is None:
            self._ledger.settled(*position)
            return
        headers = tuple((name, value) for name, value in record.headers or () if name != INTAKE_HEADER)
        item = Waiting(event.task_id, record.partition, record.offset, record.value or b"", event.priority, headers)
        self.queue.push(event.owner or ANONYMOUS, event.priority, item)
        self._dirty = True

    async def _admit(self) -> None:
        """Move jobs to the ready topic in fair order while it has room (not during a recovery)."""
        if self._recovering or not len(self.queue):
            return
        if self._gauge.stale:
            await self._gauge.refresh()
        while len(self.queue) and self._gauge.room() > 0:
            item = self.queue.pop()
            if item is None:
                break
            await self._producer.send_and_wait(
                topics.GENERATION_READY,
                item.value,
                key=item.task_id.encode(),
                headers=[*item.headers, intake_header(item.partition, item.offset)],
            )
            ADMISSIONS.labels(item.priority.value).inc()
            self._gauge.admitted()
            self._ledger.settled(item.partition, item.offset)
            self._rate.note()
            self._dirty = True
            log.debug("scheduler.admitted", task_id=item.task_id, waiting=len(self.queue))
        WAITING.set(len(self.queue))

    def _wait_ms(self) -> int:
        """Long when idle; the refresh interval while jobs wait; sooner when a snapshot is due."""
        wait = self._gauge.interval_ms if len(self.queue) else IDLE_WAIT_MS
        if self._dirty:
            due_in = self._published_at + self._settings.scheduler_snapshot_interval_s - time.monotonic()
            wait = min(wait, int(max(0.0, due_in) * 1000) + 1)
        return wait

    async def _publish_snapshot(self) -> None:
        """Publish the queue snapshot when it changed and the last one is old enough."""
        if not self._dirty or time.monotonic() < self._published_at + self._settings.scheduler_snapshot_interval_s:
            return
        snapshot = self.snapshot()
        await self._producer.send_and_wait(topics.SCHEDULER_QUEUES, snapshot.to_bytes(), key=self.name.encode())
        self._published_at = time.monotonic()
        self._dirty = False

    def snapshot(self) -> QueueSnapshot:
        """What this instance holds back now, with the admissions before each listed task."""
        lanes = [
            LaneSnapshot(
                owner=view.owner,
                priority=view.priority,
                length=view.length,
                head=[QueuedTask(task_id=item.task_id, ahead=ahead) for item, ahead in view.head],
            )
            for view in self.queue.forecast(self._settings.scheduler_snapshot_top)
        ]
        return QueueSnapshot(
            scheduler=self.name,
            partitions=sorted(tp.partition for tp in self._consumer.assignment()),
            waiting=len(self.queue),
            lanes=lanes,
            ready_backlog=self._gauge.backlog,
            consumers=self._gauge.consumers,
            admitted_per_s=round(self._rate.per_s(), 3),
        )

    def _backpressure(self) -> None:
        """Stop fetching while SCHEDULER_MAX_WAITING jobs wait; resume below it."""
        full = len(self.queue) >= self._settings.scheduler_max_waiting
        assigned = self._consumer.assignment()
        if full and not self._paused and assigned:
            self._consumer.pause(*assigned)
            self._paused = True
            log.warning("scheduler.intake_paused", waiting=len(self.queue))
        elif not full and self._paused:
            if assigned:
                self._consumer.resume(*assigned)
            self._paused = False
            log.info("scheduler.intake_resumed", waiting=len(self.queue))


class _Rebalance(ConsumerRebalanceListener):
    """Hands partition moves to the scheduler; logs the first join."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._joined = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Settle and drop the revoked partitions' jobs."""
        await self._scheduler.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Recover the admitted-but-uncommitted records of the new partitions."""
        await self._scheduler.partitions_assigned(assigned)
        if not self._joined:
            self._joined = True
            log.info("kafka.group_joined", group=topics.SCHEDULERS_GROUP, partitions=len(assigned))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Join the schedulers' group on the intake topic and schedule until SIGTERM/SIGINT (or `stop`)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(settings)
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id=topics.SCHEDULERS_GROUP)
    gauge = ReadyGauge(settings)
    scheduler = Scheduler(settings, consumer, producer, gauge)
    consumer.subscribe([topics.GENERATION_REQUESTS], listener=_Rebalance(scheduler))
    await producer.start()
    try:
        await gauge.start()
        await consumer.start()
        log.info("scheduler.ready", scheduler=scheduler.name, weights={str(k): v for k, v in weights(settings).items()})
        await scheduler.run(stop)
        await scheduler.commit()
        await scheduler.publish_tombstone()
    finally:
        for close in (consumer.stop, gauge.stop, producer.stop):
            with contextlib.suppress(Exception):
                await close()
        log.info("scheduler.stopped", scheduler=scheduler.name)


def run_scheduler(settings: Settings) -> None:
    """Run the scheduler until SIGTERM/SIGINT (blocking). See docs/scheduling.md."""
    configure_logging("scheduler", settings.log_level, settings.log_format)
    try:
        with serving_metrics(settings.metrics_port, settings.metrics_host):
            asyncio.run(serve(settings))
    except Exception:
        log.exception("scheduler.crashed")  # unsettled intake records are re-read by the next owner
        raise SystemExit(1) from None
