"""The scheduler process: intake topic → fair queue in memory → ready topic, only while the GPUs need work.

Each model pool has its own intake (`acefarm.generation.requests[.<pool>]`), fair queue, ready gauge and
ready topic (`acefarm.generation.ready[.<pool>]`). One loop: fetch intake records (validated; malformed
ones dead-lettered), queue them in their pool's lanes (owner, priority), admit in fair order while the
pool's ready topic is shallow, commit the intakes' settled prefixes, publish a pool's queue snapshot when
it changed. With nothing waiting it only waits for records.
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

from acefarm.infra import eventloop
from acefarm.infra.kafka import ensure_topics, make_consumer, make_producer
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.metrics import ADMISSIONS, WAITING, serving_metrics
from acefarm.infra.pools import pool_keys
from acefarm.infra.settings import Settings
from acefarm.runtime.events import parse_request
from scheduler.fair_queue import FairQueue
from scheduler.gauge import ReadyGauge
from scheduler.ledger import OffsetLedger
from scheduler.recovery import INTAKE_HEADER, already_admitted, intake_header
from schemas import topics
from schemas.events import GenerationRequested
from schemas.queues import LaneSnapshot, QueuedTask, QueueSnapshot, snapshot_key
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


class PoolQueue:
    """One model pool's fair queue: its intake and ready topics, its ready gauge, and its intake offsets."""

    def __init__(self, settings: Settings, pool: str | None, gauge: ReadyGauge) -> None:
        self.pool = pool
        self.intake = topics.generation_requests(pool)
        self.ready = topics.generation_ready(pool)
        self.queue: FairQueue[Waiting] = FairQueue(weights(settings))
        self.gauge = gauge
        self.ledger = OffsetLedger()
        self.skip: set[tuple[int, int]] = set()
        self.committed: dict[int, int] = {}
        self.rate = AdmissionRate()
        self.dirty = True
        self.published_at = float("-inf")
        self.paused = False


class Scheduler:
    """The fair queues between each model pool's intake and its ready topic, for the intake partitions this
    instance holds: one `PoolQueue` (fair queue, ready gauge, offsets) per pool."""

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        gauges: dict[str | None, ReadyGauge],
    ) -> None:
        self.name = scheduler_name(settings)
        self.pools = {queue.intake: queue for queue in (PoolQueue(settings, p, g) for p, g in gauges.items())}
        """Each pool's queue by its intake topic."""
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._recovering = 0
        """Rebalance recoveries in progress: nothing is admitted while one runs."""

    @property
    def waiting(self) -> int:
        """Jobs waiting in every pool's queue."""
        return sum(len(pool.queue) for pool in self.pools.values())

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
                for tp, records in fetch.result().items():
                    for record in records:
                        await self._take(self.pools[tp.topic], record)
                for pool in self.pools.values():
                    await self._admit(pool)
                await self.commit()
                for pool in self.pools.values():
                    await self._publish_snapshot(pool)
                    self._backpressure(pool)
        finally:
            stopping.cancel()

    async def partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is settled on `revoked`, then drop their waiting jobs (the next owner re-reads them)."""
        await self.commit()
        for pool in self.pools.values():
            gone = {tp.partition for tp in revoked if tp.topic == pool.intake}
            if gone:
                self._drop(pool, gone)

    def _drop(self, pool: PoolQueue, gone: set[int]) -> None:
        """Forget a pool's revoked intake partitions and their waiting jobs."""
        dropped = len(pool.queue.remove_if(lambda item: item.partition in gone))
        for partition in gone:
            pool.ledger.forget(partition)
            pool.committed.pop(partition, None)
        pool.skip = {position for position in pool.skip if position[0] not in gone}
        pool.paused = False
        pool.dirty = True
        log.info("scheduler.partitions_revoked", topic=pool.intake, partitions=sorted(gone), dropped=dropped)

    async def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Find the records of `assigned` that an earlier owner admitted but did not commit, to skip them.

        The partitions stay paused and nothing is admitted meanwhile; records fetched before the pause
        that turn out to be admitted already are taken back out of the queue.
        """
        intake = [tp for tp in assigned if tp.topic in self.pools]
        self._recovering += 1
        if intake:
            self._consumer.pause(*intake)
        try:
            for pool in self.pools.values():
                await self._recover(pool, [tp for tp in intake if tp.topic == pool.intake])
        finally:
            if intake:
                self._consumer.resume(*intake)
            self._recovering -= 1

    async def _recover(self, pool: PoolQueue, assigned: list[TopicPartition]) -> None:
        """`partitions_assigned` for one pool's intake partitions."""
        if not assigned:
            return
        positions: dict[int, int] = {}
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            if committed is None:
                committed = (await self._consumer.beginning_offsets([tp]))[tp]
            positions[tp.partition] = committed
            pool.committed[tp.partition] = committed
        pool.skip |= await already_admitted(self._settings, pool.intake, positions, pool.gauge.partitions)
        for item in pool.queue.remove_if(lambda item: (item.partition, item.offset) in pool.skip):
            pool.skip.discard((item.partition, item.offset))
            pool.ledger.settled(item.partition, item.offset)
        pool.dirty = True
        log.info("scheduler.partitions_assigned", topic=pool.intake, partitions=sorted(positions))

    async def commit(self) -> None:
        """Commit each intake partition's settled prefix where it moved."""
        moved = {
            (pool, p): offset
            for pool in self.pools.values()
            for p, offset in pool.ledger.positions().items()
            if pool.committed.get(p) != offset
        }
        if not moved:
            return
        try:
            await self._consumer.commit({TopicPartition(pool.intake, p): o for (pool, p), o in moved.items()})
        except KafkaError as error:  # a rebalance took the partitions: the next owner re-reads and skips
            log.warning("scheduler.commit_failed", error=repr(error))
            return
        for (pool, p), offset in moved.items():
            pool.committed[p] = offset

    async def publish_tombstones(self) -> None:
        """Remove this instance's snapshots from the compacted topic (on a clean stop)."""
        for pool in self.pools.values():
            key = snapshot_key(self.name, pool.pool).encode()
            await self._producer.send_and_wait(topics.SCHEDULER_QUEUES, None, key=key)

    async def _take(self, pool: PoolQueue, record: ConsumerRecord[bytes, bytes]) -> None:
        """Queue a valid request; settle an already-admitted or malformed (dead-lettered) one."""
        pool.ledger.seen(record.partition, record.offset)
        position = (record.partition, record.offset)
        if position in pool.skip:
            pool.skip.discard(position)
            pool.ledger.settled(*position)
            return
        event = await parse_request(self._producer, record, GenerationRequested, self.name)
        if event is None:
            pool.ledger.settled(*position)
            return
        headers = tuple((name, value) for name, value in record.headers or () if name != INTAKE_HEADER)
        item = Waiting(event.task_id, record.partition, record.offset, record.value or b"", event.priority, headers)
        pool.queue.push(event.owner or ANONYMOUS, event.priority, item)
        pool.dirty = True

    async def _admit(self, pool: PoolQueue) -> None:
        """Move a pool's jobs to its ready topic in fair order while it has room (not during a recovery).

        A stale gauge still bounds the backlog from above (jobs only leave it, and this instance counts its own
        admissions), so jobs go out at once while it shows room and the gauge is measured afterwards; it is
        measured first only when it shows none. An idle farm's next job then waits for no measurement.
        """
        if self._recovering or not len(pool.queue):
            return
        if pool.gauge.stale and (pool.gauge.room() <= 0 or not pool.gauge.measured):
            await pool.gauge.refresh()
        if await self._admit_while_room(pool) and pool.gauge.stale:
            await pool.gauge.refresh()
            await self._admit_while_room(pool)
        WAITING.set(self.waiting)

    async def _admit_while_room(self, pool: PoolQueue) -> int:
        """Admit a pool's jobs in fair order while its gauge shows room; how many went."""
        admitted = 0
        while len(pool.queue) and pool.gauge.room() > 0:
            item = pool.queue.pop()
            if item is None:
                break
            await self._producer.send_and_wait(
                pool.ready,
                item.value,
                key=item.task_id.encode(),
                headers=[*item.headers, intake_header(item.partition, item.offset)],
            )
            ADMISSIONS.labels(item.priority.value).inc()
            pool.gauge.admitted()
            pool.ledger.settled(item.partition, item.offset)
            pool.rate.note()
            pool.dirty = True
            admitted += 1
            log.debug("scheduler.admitted", task_id=item.task_id, topic=pool.ready, waiting=len(pool.queue))
        return admitted

    def _wait_ms(self) -> int:
        """Long when idle; the refresh interval while jobs wait; sooner when a snapshot is due."""
        wait = IDLE_WAIT_MS
        for pool in self.pools.values():
            if len(pool.queue):
                wait = min(wait, pool.gauge.interval_ms)
            if pool.dirty:
                due_in = pool.published_at + self._settings.scheduler_snapshot_interval_s - time.monotonic()
                wait = min(wait, int(max(0.0, due_in) * 1000) + 1)
        return wait

    async def _publish_snapshot(self, pool: PoolQueue) -> None:
        """Publish a pool's queue snapshot when it changed and the last one is old enough."""
        if not pool.dirty or time.monotonic() < pool.published_at + self._settings.scheduler_snapshot_interval_s:
            return
        snapshot = self.snapshot(pool)
        key = snapshot_key(self.name, pool.pool).encode()
        await self._producer.send_and_wait(topics.SCHEDULER_QUEUES, snapshot.to_bytes(), key=key)
        pool.published_at = time.monotonic()
        pool.dirty = False

    def snapshot(self, pool: PoolQueue) -> QueueSnapshot:
        """What this instance holds back now in `pool`, with the admissions before each listed task."""
        lanes = [
            LaneSnapshot(
                owner=view.owner,
                priority=view.priority,
                length=view.length,
                head=[QueuedTask(task_id=item.task_id, ahead=ahead) for item, ahead in view.head],
            )
            for view in pool.queue.forecast(self._settings.scheduler_snapshot_top)
        ]
        return QueueSnapshot(
            scheduler=self.name,
            pool=pool.pool,
            partitions=sorted(tp.partition for tp in self._consumer.assignment() if tp.topic == pool.intake),
            waiting=len(pool.queue),
            lanes=lanes,
            ready_backlog=pool.gauge.backlog,
            consumers=pool.gauge.consumers,
            admitted_per_s=round(pool.rate.per_s(), 3),
        )

    def _backpressure(self, pool: PoolQueue) -> None:
        """Stop fetching a pool's intake while SCHEDULER_MAX_WAITING of its jobs wait; resume below it."""
        full = len(pool.queue) >= self._settings.scheduler_max_waiting
        assigned = [tp for tp in self._consumer.assignment() if tp.topic == pool.intake]
        if full and not pool.paused and assigned:
            self._consumer.pause(*assigned)
            pool.paused = True
            log.warning("scheduler.intake_paused", topic=pool.intake, waiting=len(pool.queue))
        elif not full and pool.paused:
            if assigned:
                self._consumer.resume(*assigned)
            pool.paused = False
            log.info("scheduler.intake_resumed", topic=pool.intake, waiting=len(pool.queue))


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
    """Join the schedulers' group on every model pool's intake topic (`acefarm.infra.pools.pool_keys`) and
    schedule until SIGTERM/SIGINT (or `stop`)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(settings)
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id=topics.SCHEDULERS_GROUP)
    gauges = {pool: ReadyGauge(settings, pool) for pool in pool_keys(settings)}
    scheduler = Scheduler(settings, consumer, producer, gauges)
    consumer.subscribe(list(scheduler.pools), listener=_Rebalance(scheduler))
    await producer.start()
    try:
        for gauge in gauges.values():
            await gauge.start()
        await consumer.start()
        log.info(
            "scheduler.ready",
            scheduler=scheduler.name,
            intake=list(scheduler.pools),
            weights={str(k): v for k, v in weights(settings).items()},
        )
        await scheduler.run(stop)
        await scheduler.commit()
        await scheduler.publish_tombstones()
    finally:
        for close in (consumer.stop, *(gauge.stop for gauge in gauges.values()), producer.stop):
            with contextlib.suppress(Exception):
                await close()
        log.info("scheduler.stopped", scheduler=scheduler.name)


def run_scheduler(settings: Settings) -> None:
    """Run the scheduler until SIGTERM/SIGINT (blocking). See docs/scheduling.md."""
    configure_logging("scheduler", settings.log_level, settings.log_format)
    try:
        with serving_metrics(settings.metrics_port, settings.metrics_host):
            eventloop.run(serve(settings))
    except Exception:
        log.exception("scheduler.crashed")  # unsettled intake records are re-read by the next owner
        raise SystemExit(1) from None
