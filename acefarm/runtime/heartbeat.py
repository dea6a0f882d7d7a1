"""A worker announcing itself on the compacted `acefarm.workers` topic (`WorkerHeartbeat`).

One heartbeat every `HEARTBEAT_INTERVAL_S` seconds, and one at once whenever something readers care
about changes (joined its group, started or finished a job), at most one per `CHANGE_GAP_S` (a drain of
short jobs announces its latest state a few times a second, not every job); a tombstone when the worker
stops cleanly. A heartbeat that cannot be sent is logged and retried at the next beat: heartbeats never
stop a worker from working.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.runtime.group_loop import PausingListener
from acefarm.runtime.identity import WorkerIdentity
from schemas import topics
from schemas.events import utcnow
from schemas.workers import WorkerHeartbeat

log = get_logger(__name__)

TOMBSTONE_TIMEOUT_S = 5.0
CHANGE_GAP_S = 0.25
"""Changes within this long of the last heartbeat go out together, in the next one."""


@dataclass
class Heartbeat:
    """Sends this worker's `WorkerHeartbeat` in the background between `start` and `stop`."""

    producer: AIOKafkaProducer
    beat: WorkerHeartbeat
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _jobs: list[str | None] = field(default_factory=list)
    """Jobs in flight, oldest first (with the pipelined loop, the next one is prepared while one computes)."""

    @classmethod
    def of(cls, producer: AIOKafkaProducer, settings: Settings, identity: WorkerIdentity) -> Heartbeat:
        """A heartbeat announcing `identity` (worker, kind, topic, group, checkpoint, device, pool, task types),
        started now."""
        now: datetime = utcnow()
        beat = WorkerHeartbeat(
            worker=identity.worker,
            kind=identity.service,
            topic=identity.topic,
            group=identity.group_id,
            model=identity.checkpoint,
            device=identity.device,
            pool=identity.pool,
            default_pool=identity.default_pool,
            task_types=list(identity.task_types),
            started_at=now,
            sent_at=now,
            interval_s=settings.heartbeat_interval_s,
        )
        return cls(producer, beat)

    def start(self) -> None:
        """Send the first heartbeat now and keep beating in a background task."""
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    def update(self, **changes: Any) -> None:
        """Change fields (joined, current_task, jobs_done) and announce them at once."""
        self.beat = self.beat.model_copy(update=changes)
        self._changed.set()

    @contextlib.contextmanager
    def working_on(self, task_id: str | None) -> Iterator[None]:
        """Hold `task_id` in flight for the block, counted as done afterwards; the current job announced is the
        oldest one in flight (the one computing while the next is prepared)."""
        self._jobs.append(task_id)
        self.update(current_task=self._jobs[0])
        try:
            yield
        finally:
            self._jobs.remove(task_id)
            current = self._jobs[0] if self._jobs else None
            self.update(current_task=current, jobs_done=self.beat.jobs_done + 1)

    async def stop(self) -> None:
        """Stop beating and write a tombstone, so readers drop this worker at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        key = self.beat.worker.encode()
        try:
            await asyncio.wait_for(self.producer.send_and_wait(topics.WORKERS, None, key=key), TOMBSTONE_TIMEOUT_S)
        except Exception as error:  # readers drop it after three intervals anyway
            log.warning("heartbeat.tombstone_failed", error=str(error))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            self.beat = self.beat.model_copy(update={"sent_at": utcnow()})
            sent = loop.time()
            try:
                await self.producer.send_and_wait(topics.WORKERS, self.beat.to_bytes(), key=self.beat.worker.encode())
            except Exception as error:
                log.warning("heartbeat.send_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.beat.interval_s)
            if self._changed.is_set():  # changes close together: the next beat carries them all
                await asyncio.sleep(max(sent + CHANGE_GAP_S - loop.time(), 0.0))


class AnnouncingListener(PausingListener):
    """`PausingListener` that marks the heartbeat `joined` once the group has assigned partitions."""

    def __init__(self, consumer: AIOKafkaConsumer, heartbeat: Heartbeat) -> None:
        super().__init__(consumer)
        self._heartbeat = heartbeat

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pause as `PausingListener` does, then announce the join."""
        await super().on_partitions_assigned(assigned)
        if not self._heartbeat.beat.joined:
            self._heartbeat.update(joined=True)
