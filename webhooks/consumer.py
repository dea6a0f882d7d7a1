"""A consumer-group member that works on many records at once and commits only what is finished.

Each record's work runs as its own task; `Watermarks` turns finished records into commit positions. Work
that raises (Kafka unreachable while publishing a retry) is tried again after a pause until it succeeds or
the service stops; a record whose work never finished is not committed, so a restart reads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from acefarm.infra.kafka import make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from webhooks.offsets import Watermarks

log = get_logger(__name__)

WORK_RETRY_PAUSE_S = 1.0


class WorkingConsumer(ConsumerRebalanceListener):
    """Member of `group_id` on `topic`: spawns work per record, commits finished records, drains on stop."""

    def __init__(self, settings: Settings, topic: str, group_id: str, stop: asyncio.Event) -> None:
        self.consumer = make_consumer(settings, group_id=group_id)
        self.marks = Watermarks()
        self.group_id = group_id
        self.stop_requested = stop
        self._topic = topic
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_revoke: Callable[[set[TopicPartition]], None] | None = None

    async def start(self) -> None:
        """Connect and subscribe (the group is joined on the first fetch)."""
        await self.consumer.start()
        self.consumer.subscribe([self._topic], listener=self)

    async def stop(self, drain_s: float) -> None:
        """Let running work finish for up to `drain_s`, commit what finished, leave the group."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=drain_s)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.commit()
        await self.consumer.stop()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished on the revoked partitions, then stop tracking them."""
        await self.commit()
        self.marks.forget(revoked)
        if self.on_revoke is not None:
            self.on_revoke(set(revoked))
        if revoked:
            log.info("webhooks.partitions_revoked", group=self.group_id, partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Log the assignment."""
        log.info("webhooks.partitions_assigned", group=self.group_id, partitions=len(assigned))

    async def commit(self) -> None:
        """Commit every partition's position that moved; a failed commit is retried next time."""
        positions = self.marks.committable()
        if not positions:
            return
        try:
            await self.consumer.commit(positions)
        except KafkaError as error:
            log.warning("webhooks.commit_failed", group=self.group_id, error=str(error))
            return
        self.marks.committed(positions)

    def spawn(self, tp: TopicPartition, offset: int, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `work` for the record at `offset` of `tp` in a task; its offset is done once `work` returns."""
        self.marks.track(tp, offset)
        task = asyncio.create_task(self._run(tp, offset, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, tp: TopicPartition, offset: int, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("webhooks.work_failed", group=self.group_id, partition=tp.partition, offset=offset)
                if self.stop_requested.is_set():
                    return
                await asyncio.sleep(WORK_RETRY_PAUSE_S)
                continue
            self.marks.done(tp, offset)
            return

    def hold(self, too_many: bool) -> None:
        """Pause every assigned partition while `too_many` records are open, resume otherwise."""
        assigned = self.consumer.assignment()
        if too_many:
            self.consumer.pause(*assigned)
        else:
            self.consumer.resume(*assigned)
