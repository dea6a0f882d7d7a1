"""Queue depth and drain rate of the worker groups, read from Kafka in the background every few seconds.

Depth is the log end minus the group's committed offset, summed over the topic's partitions (a
partition the group never committed counts from its first retained record). One `Backlog` per
gateway reads it every `BACKLOG_REFRESH_S` seconds with one admin and one group-less consumer client
(a few small requests per refresh: every queue's log ends at once, then each group's committed offsets),
exports it as `acefarm_queue_depth`, `acefarm_consumer_lag` and `acefarm_queue_drain_rate`, and answers
`depth` and `drain_rate` from memory, so admission control can ask on every request at no cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from litestar.datastructures import State

from acefarm.infra.kafka import client_options, make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import CONSUMER_LAG, QUEUE_DEPTH, QUEUE_DRAIN_RATE
from acefarm.infra.pools import pool_keys
from acefarm.infra.settings import Settings
from schemas import topics

log = get_logger(__name__)

BACKLOG_KEY = "backlog"
"""Where the lifespan keeps the `Backlog` on `app.state`."""
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Queue:
    """A topic and the consumer group that works it off."""

    topic: str
    group: str


def watched(settings: Settings) -> tuple[Queue, ...]:
    """Every queue a job waits in: each model pool's generation intake (the scheduler's) and ready topic (its
    GPU consumers'), for the pools `settings` know (`acefarm.infra.pools.pool_keys`), then planning and training."""
    pools = pool_keys(settings)
    return (
        *(Queue(topics.generation_requests(pool), topics.SCHEDULERS_GROUP) for pool in pools),
        *(Queue(topics.generation_ready(pool), topics.gpu_workers_group(pool)) for pool in pools),
        Queue(topics.PLANNING_REQUESTS, topics.PLANNERS_GROUP),
        Queue(topics.TRAINING_REQUESTS, topics.TRAINERS_GROUP),
    )


class Backlog:
    """Depth and drain rate of each watched queue, refreshed in a background task."""

    def __init__(self, settings: Settings, queues: tuple[Queue, ...] | None = None) -> None:
        self.settings = settings
        self.queues = watched(settings) if queues is None else queues
        self.refreshed_at: float | None = None
        """`time.monotonic()` of the last successful refresh."""
        self._depth: dict[Queue, int] = {}
        self._committed: dict[Queue, deque[tuple[float, int]]] = {q: deque() for q in self.queues}
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._coordinators: dict[str, int] = {}
        """Each group's coordinator broker, looked up once."""

    def depth(self, topic: str, group: str) -> int | None:
        """Records on `topic` that `group` has not committed, as of the last refresh; None before one."""
        return self._depth.get(Queue(topic, group))

    def drain_rate(self, topic: str = topics.GENERATION_READY, group: str = topics.GPU_WORKERS_GROUP) -> float | None:
        """Records per second `group` committed on `topic` over the last minute; None before two refreshes."""
        history = self._committed.get(Queue(topic, group))
        if not history or len(history) < 2:
            return None
        (then, first), (now, last) = history[0], history[-1]
        return (last - first) / (now - then) if now > then else None

    def queued_jobs(self) -> int | None:
        """Jobs waiting or running farm-wide (every watched queue), as of the last refresh; None before one."""
        depths = [depth for depth in self._depth.values() if depth is not None]
        return sum(depths) if depths else None

    def drain_rate_per_s(self) -> float | None:
        """Generation jobs the GPU consumers of every pool finished per second over the last minute (admission's
        `Retry-After`); None before two refreshes."""
        ready = [q for q in self.queues if topics.is_generation_ready(q.topic)]
        rates = [rate for q in ready if (rate := self.drain_rate(q.topic, q.group)) is not None]
        return sum(rates) if rates else None

    async def start(self) -> None:
        """Open the clients, read once, then keep refreshing every `BACKLOG_REFRESH_S` seconds."""
        self._admin = AIOKafkaAdminClient(**client_options(self.settings))
        await self._admin.start()
        self._consumer = make_consumer(self.settings, group_id=None)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="backlog")

    async def stop(self) -> None:
        """Stop refreshing and close the clients."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()

    async def refresh(self) -> None:
        """Read every watched queue's end and committed offsets now.

        One request for every queue's log ends, one per group for its committed offsets (its coordinator is
        looked up once and kept until a read fails), one for the first offsets of partitions never committed.
        """
        assert self._admin is not None and self._consumer is not None
        now = time.monotonic()
        tps = {queue: await self._partitions(queue) for queue in self.queues}
        ends = await self._consumer.end_offsets([tp for queue_tps in tps.values() for tp in queue_tps])
        offsets = dict(
            zip(tps, await asyncio.gather(*(self._committed_offsets(q, t) for q, t in tps.items())), strict=True)
        )
        uncommitted = [tp for q, queue_tps in tps.items() for tp in queue_tps if offsets[q].get(tp, -1) < 0]
        starts = await self._consumer.beginning_offsets(uncommitted) if uncommitted else {}
        for queue, queue_tps in tps.items():
            if queue_tps:
                committed = {tp: starts[tp] if tp in starts else offsets[queue][tp] for tp in queue_tps}
                self._record(queue, {tp: ends[tp] for tp in queue_tps}, committed, now)
        self.refreshed_at = now

    async def _partitions(self, queue: Queue) -> list[TopicPartition]:
        assert self._consumer is not None
        partitions = self._consumer.partitions_for_topic(queue.topic)
        if not partitions:
            await self._consumer.topics()  # metadata not fetched yet (or the topic is new)
            partitions = self._consumer.partitions_for_topic(queue.topic) or set()
        return [TopicPartition(queue.topic, p) for p in sorted(partitions)]

    async def _committed_offsets(self, queue: Queue, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """`queue.group`'s committed offset per partition in `tps` (-1 where it never committed; the partitions
        are named: the embedded broker drops the connection on a request for "all of the group's")."""
        assert self._admin is not None
        coordinator = self._coordinators.get(queue.group)
        if coordinator is None:
            coordinator = self._coordinators[queue.group] = await self._admin.find_coordinator(queue.group)
        try:
            found = await self._admin.list_consumer_group_offsets(queue.group, coordinator, partitions=tps)
        except Exception:
            self._coordinators.pop(queue.group, None)  # it may have moved: look it up again next time
            raise
        return {tp: meta.offset for tp, meta in found.items()}

    def _record(
        self, queue: Queue, ends: dict[TopicPartition, int], committed: dict[TopicPartition, int], now: float
    ) -> None:
        """Keep and export one queue's depth, per-partition lag and committed total."""
        depth = committed_total = 0
        for tp, end in ends.items():
            lag = max(end - committed[tp], 0)
            CONSUMER_LAG.labels(queue.topic, queue.group, str(tp.partition)).set(lag)
            depth += lag
            committed_total += committed[tp]
        self._depth[queue] = depth
        QUEUE_DEPTH.labels(queue.topic, queue.group).set(depth)
        history = self._committed[queue]
        history.append((now, committed_total))
        while history and now - history[0][0] > RATE_WINDOW_S:
            history.popleft()
        rate = self.drain_rate(queue.topic, queue.group)
        if rate is not None:
            QUEUE_DRAIN_RATE.labels(queue.topic, queue.group).set(rate)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep the last figures; Kafka may be back at the next refresh
                log.warning("backlog.refresh_failed", error=str(error)[:300])
            await asyncio.sleep(self.settings.backlog_refresh_s)


def provide_backlog(state: State) -> Backlog:
    """The `backlog` dependency: the `Backlog` the lifespan put on `app.state`."""
    backlog: Backlog = state[BACKLOG_KEY]
    return backlog
