"""How much room a model pool's ready topic has: admitted jobs not yet finished, against its GPU consumers alive.

One gauge per pool: its ready topic (`acefarm.generation.ready[.<pool>]`) and its group (`gpu-workers[.<pool>]`).
backlog = Σ over ready partitions (log-end offset − the pool's group's committed offset). GPU
consumers commit after a job's final event, so the backlog counts running jobs too. Measured only while
jobs wait in the scheduler (never on a timer when idle); between measurements each admission adds one, so a
stale figure still bounds the backlog from above and the scheduler admits on it before measuring again.

The interval adapts: when a measurement finds a GPU consumer idle (backlog below the consumer count),
the jobs are shorter than the interval and it halves (down to MIN_REFRESH_S); otherwise it doubles back
up to SCHEDULER_REFRESH_MS. Long jobs cost a few measurements a second; short jobs keep the GPUs fed.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from acefarm.infra.kafka import client_options, make_consumer
from acefarm.infra.settings import Settings
from schemas import topics

MIN_REFRESH_S = 0.01


class ReadyGauge:
    """A pool's ready topic's backlog and its group's live members; `room()` says how many may be admitted."""

    def __init__(self, settings: Settings, pool: str | None = None) -> None:
        self.topic = topics.generation_ready(pool)
        self.group = topics.gpu_workers_group(pool)
        self._depth = settings.scheduler_ready_depth
        self._max_interval_s = settings.scheduler_refresh_ms / 1000
        self._interval_s = self._max_interval_s
        # A member of no group: it only reads the pool's group's committed offsets (it never commits).
        self._observer: AIOKafkaConsumer = make_consumer(settings, group_id=self.group)
        self._admin = AIOKafkaAdminClient(**client_options(settings))
        self.partitions: list[TopicPartition] = []
        """The ready topic's partitions."""
        self._starts: dict[TopicPartition, int] = {}
        self.backlog = 0
        self.consumers = 0
        self._measured_at = float("-inf")

    async def start(self) -> None:
        """Connect and learn the ready topic's partitions."""
        await self._observer.start()
        await self._admin.start()
        await self._load_partitions()

    async def stop(self) -> None:
        """Disconnect."""
        await self._observer.stop()
        await self._admin.close()

    @property
    def stale(self) -> bool:
        """Whether the last measurement is older than the current refresh interval."""
        return time.monotonic() - self._measured_at > self._interval_s

    @property
    def measured(self) -> bool:
        """Whether the gauge was measured at least once (before that its backlog is unknown, not zero)."""
        return self._measured_at > float("-inf")

    @property
    def interval_ms(self) -> int:
        """The current refresh interval (ms)."""
        return max(1, round(self._interval_s * 1000))

    async def refresh(self) -> None:
        """Measure the backlog and count the live GPU consumers."""
        if not self.partitions:
            await self._load_partitions()
        ends = await self._observer.end_offsets(self.partitions)
        committed = await asyncio.gather(*(self._observer.committed(tp) for tp in self.partitions))
        missing = [tp for tp, offset in zip(self.partitions, committed, strict=True) if offset is None]
        if any(tp not in self._starts for tp in missing):
            self._starts.update(await self._observer.beginning_offsets(missing))
        self.backlog = sum(
            max(0, ends[tp] - (offset if offset is not None else self._starts[tp]))
            for tp, offset in zip(self.partitions, committed, strict=True)
        )
        self.consumers = await self._members()
        self._measured_at = time.monotonic()
        idle_gpu = self.backlog < max(1, self.consumers)
        adjusted = self._interval_s / 2 if idle_gpu else self._interval_s * 2
        self._interval_s = min(self._max_interval_s, max(MIN_REFRESH_S, adjusted))

    def room(self) -> int:
        """Jobs that may be admitted now: SCHEDULER_READY_DEPTH per live GPU consumer (at least one), minus backlog."""
        return self._depth * max(1, self.consumers) - self.backlog

    def admitted(self) -> None:
        """Count one admission until the next measurement."""
        self.backlog += 1

    async def _load_partitions(self) -> None:
        described = await self._admin.describe_topics([self.topic])
        found = sorted(p["partition"] for topic in described if topic["error_code"] == 0 for p in topic["partitions"])
        if not found:
            raise RuntimeError(f"topic {self.topic} has no partitions: was it created?")
        self.partitions = [TopicPartition(self.topic, p) for p in found]

    async def _members(self) -> int:
        responses = await self._admin.describe_consumer_groups([self.group])
        return sum(len(group[5]) for response in responses for group in response.groups if group[0] == 0)
