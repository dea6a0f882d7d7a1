"""Where pending jobs stand in the fair scheduler's queue, from its snapshots (no Kafka write per change).

Each scheduler publishes a `QueueSnapshot` on the compacted `acefarm.scheduler.queues` topic about once a
second while its queue changes (docs/scheduling.md). The view reads that topic with a `CompactedReader`,
keeps the latest snapshot per scheduler (a tombstone removes one), and computes every listed task's
position and ETA once per new snapshot (`schemas.queues.queue_positions`); a lookup is then a dict read.

A snapshot lists only the first `SCHEDULER_SNAPSHOT_TOP` tasks of each lane. For a pending task beyond
them, `beyond_head` extrapolates from its owner's lane: its place in the lane is the lane's length minus
the owner's pending tasks submitted after it (lanes are FIFO), and each place further back adds as many
jobs ahead as one place does among the listed tasks (or, with one listed task, one per owner waiting).
The estimate is capped at everything waiting; ETA = (position + 1) / the farm's admission rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.settings import Settings
from gateway.wakeups import Signal
from schemas import topics
from schemas.queues import QueuePosition, QueueSnapshot, current, queue_positions

SMALL_QUEUE = 10
"""Up to this position every move of one place is worth telling; beyond it, moves of 10 %."""


def eta(position: int, live: list[QueueSnapshot]) -> float | None:
    """Seconds until a job with `position` jobs before it starts, at the farm's recent admission rate."""
    rate = sum(s.admitted_per_s for s in live)
    return round((position + 1) / rate, 1) if rate > 0 else None


def beyond_head(
    live: list[QueueSnapshot], positions: dict[str, QueuePosition], owner: str, after: int
) -> QueuePosition | None:
    """Estimated position of one of `owner`'s waiting tasks that no snapshot lists, `after` being how many of
    the owner's pending tasks were submitted after it; None when the owner has no lane longer than its
    listed head (then the task is not waiting in a scheduler)."""
    lanes = [lane for snapshot in live for lane in snapshot.lanes if lane.owner == owner]
    listed = sorted(positions[t.task_id].position for lane in lanes for t in lane.head if t.task_id in positions)
    length = sum(lane.length for lane in lanes)
    if not listed or length <= len(listed):
        return None
    place = min(length - 1, max(len(listed), length - 1 - after))
    if len(listed) > 1:
        step = (listed[-1] - listed[0]) / (len(listed) - 1)
    else:
        step = len({lane.owner for snapshot in live for lane in snapshot.lanes})
    newest = live[0]
    most = max(0, newest.ready_backlog - newest.consumers) + sum(s.waiting for s in live) - 1
    position = min(most, round(listed[-1] + (place - len(listed) + 1) * max(1.0, step)))
    return QueuePosition(position, eta(position, live))


def moved(before: QueuePosition | None, now: QueuePosition | None) -> bool:
    """Whether a position changed enough to push: by one place up to `SMALL_QUEUE`, by 10 % beyond it."""
    if before is None or now is None:
        return before != now
    change = abs(now.position - before.position)
    return change >= 1 if min(now.position, before.position) <= SMALL_QUEUE else change >= 0.1 * before.position


class QueueView:
    """The schedulers' latest snapshots, read from their compacted topic, answering pending tasks' positions."""

    def __init__(self, settings: Settings) -> None:
        self._snapshots: dict[bytes, QueueSnapshot] = {}
        self._live: list[QueueSnapshot] = []
        self._positions: dict[str, QueuePosition] | None = None
        self._changes = Signal()
        self.reader = CompactedReader(settings, topics.SCHEDULER_QUEUES, self._apply, name="queue-view")

    async def start(self) -> None:
        """Read the snapshot topic from the beginning and follow it."""
        await self.reader.start()

    async def stop(self) -> None:
        """Stop following the topic."""
        await self.reader.stop()

    def position(self, task_id: str, owner: str, after: Callable[[], int]) -> QueuePosition | None:
        """Position and ETA of a pending task of `owner`: listed in a snapshot, else estimated from its lane
        (`after()`: the owner's pending tasks submitted after it, asked only then); None when unknown."""
        if self._positions is None:
            self._live = current(self._snapshots.values())
            self._positions = queue_positions(self._live)
        found = self._positions.get(task_id)
        if found is not None or not self._live:
            return found
        return beyond_head(self._live, self._positions, owner, after())

    def next_change(self) -> asyncio.Future[None]:
        """A future done when the next snapshot arrives, shared by everyone waiting for it (no task or
        timer per waiter: `gateway.wakeups`)."""
        return self._changes.next()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:  # a scheduler stopped cleanly
            self._snapshots.pop(key, None)
        else:
            self._snapshots[key] = QueueSnapshot.model_validate_json(value)
        self._positions = None
        self._changes.fire()
