"""Queue snapshots of the fair scheduler, and where a waiting task stands in them.

Each scheduler instance publishes a `QueueSnapshot` per model pool on the compacted `acefarm.scheduler.queues`
topic (keyed by `snapshot_key`) at most about once a second and only when that pool's queue changed. The gateway keeps
the latest snapshot per key and answers a pending task's queue position and ETA with `queue_positions`
(no Kafka write per position change). See docs/scheduling.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import utcnow
from schemas.ids import OWNER_PATTERN
from schemas.tenancy import Priority


class QueuedTask(BaseModel):
    """A waiting task and how many admissions its scheduler makes before it (0: it is next)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    ahead: Annotated[int, Field(ge=0)]


class LaneSnapshot(BaseModel):
    """One lane (owner, priority): its length and its first waiting tasks in admission order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: Annotated[str, Field(pattern=OWNER_PATTERN)]
    priority: Priority
    length: Annotated[int, Field(ge=0)]
    head: list[QueuedTask] = Field(default_factory=list, description="The first waiting tasks (at most N).")


class QueueSnapshot(BaseModel):
    """What one scheduler instance holds back for one model pool. Topic: `acefarm.scheduler.queues`
    (key: `snapshot_key(scheduler, pool)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["scheduler.queues"] = "scheduler.queues"
    schema_version: Literal[1] = 1
    scheduler: Annotated[str, Field(min_length=1, max_length=200, description="Instance id.")]
    pool: Annotated[str | None, Field(max_length=64, description="The model pool (null: the default pool).")] = None
    partitions: list[int] = Field(description="Intake partitions of the pool this instance schedules.")
    published_at: datetime = Field(default_factory=utcnow)
    waiting: Annotated[int, Field(ge=0, description="Tasks waiting in this instance, all lanes.")]
    lanes: list[LaneSnapshot] = Field(default_factory=list)
    ready_backlog: Annotated[
        int, Field(ge=0, description="Admitted tasks not finished yet (ready log-end minus the group's commits).")
    ] = 0
    consumers: Annotated[int, Field(ge=0, description="Live members of the pool's gpu-workers group.")] = 0
    admitted_per_s: Annotated[float, Field(ge=0, description="Recent admissions per second of this instance.")] = 0.0

    def to_bytes(self) -> bytes:
        """JSON encoding used on the wire."""
        return self.model_dump_json().encode()


def snapshot_key(scheduler: str, pool: str | None) -> str:
    """The Kafka key of an instance's snapshot of a pool: the instance id, with `/<pool>` for a named pool."""
    return scheduler if pool is None else f"{scheduler}/{pool}"


class QueuePosition(NamedTuple):
    """Jobs that start before a waiting task, and the estimated seconds until it starts (None: no rate yet)."""

    position: int
    eta_s: float | None


def current(snapshots: Iterable[QueueSnapshot]) -> list[QueueSnapshot]:
    """The snapshots still in force: newest first, dropping any whose pool's partitions a newer one now holds
    (a scheduler that stopped or lost partitions in a rebalance)."""
    kept: list[QueueSnapshot] = []
    taken: set[tuple[str | None, int]] = set()
    for snapshot in sorted(snapshots, key=lambda s: s.published_at, reverse=True):
        held = {(snapshot.pool, partition) for partition in snapshot.partitions}
        if taken.isdisjoint(held):
            kept.append(snapshot)
            taken.update(held)
    return kept


def queue_positions(snapshots: Iterable[QueueSnapshot]) -> dict[str, QueuePosition]:
    """Position and ETA of every task listed in the snapshots (compute once per new snapshot, then look up).

    position = admitted jobs still waiting in the ready topic (backlog minus one running per consumer)
    + the admissions its own scheduler makes before it, scaled by the share of admissions that scheduler
    makes when several run. eta_s = (position + 1) / the farm's admission rate (admissions follow the
    GPUs' drain rate while jobs wait), i.e. the expected wait until it starts. Each model pool counts apart.
    """
    by_pool: dict[str | None, list[QueueSnapshot]] = {}
    for snapshot in current(snapshots):
        by_pool.setdefault(snapshot.pool, []).append(snapshot)
    return {task: found for live in by_pool.values() for task, found in _pool_positions(live).items()}


def _pool_positions(live: list[QueueSnapshot]) -> dict[str, QueuePosition]:
    """`queue_positions` of one pool's snapshots in force (newest first)."""
    newest = live[0]
    in_ready = max(0, newest.ready_backlog - newest.consumers)
    total_rate = sum(s.admitted_per_s for s in live)
    busy = max(1, sum(1 for s in live if s.waiting))
    positions: dict[str, QueuePosition] = {}
    for snapshot in live:
        share = total_rate / snapshot.admitted_per_s if snapshot.admitted_per_s > 0 else float(busy)
        for lane in snapshot.lanes:
            for task in lane.head:
                position = in_ready + round(task.ahead * share)
                eta = (position + 1) / total_rate if total_rate > 0 else None
                positions[task.task_id] = QueuePosition(position, None if eta is None else round(eta, 1))
    return positions


def queue_position(snapshots: Iterable[QueueSnapshot], task_id: str) -> QueuePosition | None:
    """Position and ETA of one waiting task; None when no snapshot lists it (not waiting in a scheduler, or
    beyond the first N of its lane)."""
    return queue_positions(snapshots).get(task_id)
