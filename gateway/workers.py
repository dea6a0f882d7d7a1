"""Which workers are alive: the heartbeats on `acefarm.workers`, followed live, and `GET /workers`; the model
pools the alive GPU consumers serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import datetime
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.metrics import WORKERS_ALIVE
from acefarm.infra.pools import ModelPool
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import utcnow
from schemas.generation import TaskType
from schemas.workers import ALIVE_INTERVALS, WorkerHeartbeat

WORKERS_KEY = "workers"
"""Where the lifespan keeps the `WorkerTable` on `app.state`."""
READINESS_NOTE = (
    "Readiness does not require any worker: jobs are queued on Kafka and wait until a worker of their kind is alive."
)


class WorkerTable:
    """Worker name → newest heartbeat, from the compacted topic (a tombstone removes the worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.beats: dict[str, WorkerHeartbeat] = {}
        self.reader = CompactedReader(settings, topics.WORKERS, self._apply, name="workers")
        self._gauges: asyncio.Task[None] | None = None
        self._kinds: set[str] = set()

    async def start(self) -> None:
        """Start following the topic and refreshing `acefarm_workers_alive`."""
        await self.reader.start()
        self._gauges = asyncio.create_task(self._export(), name="workers-gauge")

    async def stop(self) -> None:
        """Stop following."""
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges
        await self.reader.stop()

    def alive(self, now: datetime | None = None) -> list[WorkerHeartbeat]:
        """Workers whose newest heartbeat is younger than three of their intervals, by name."""
        now = now or utcnow()
        return sorted((b for b in self.beats.values() if b.alive(now)), key=lambda b: b.worker)

    def alive_by_kind(self, now: datetime | None = None) -> dict[str, int]:
        """How many workers of each kind are alive (kinds seen before and now gone count 0)."""
        counts = Counter(b.kind for b in self.alive(now))
        return {kind: counts.get(kind, 0) for kind in sorted(self._kinds | set(counts))}

    def joined(self, kind: str, now: datetime | None = None) -> int:
        """How many alive workers of `kind` have joined their consumer group."""
        return sum(1 for b in self.alive(now) if b.kind == kind and b.joined)

    def pools(self, now: datetime | None = None) -> list[ModelPool]:
        """The model pools alive workers announce (their task types merged), the default pool first, then by
        name; empty while no worker of any pool is alive."""
        tasks: dict[str, set[TaskType]] = {}
        default: set[str] = set()
        known = {task.value for task in TaskType}
        for beat in self.alive(now):
            if beat.pool is None:
                continue
            tasks.setdefault(beat.pool, set()).update(TaskType(t) for t in beat.task_types if t in known)
            if beat.default_pool:
                default.add(beat.pool)
        pools = [ModelPool(name, frozenset(types), default=name in default) for name, types in tasks.items()]
        return sorted(pools, key=lambda pool: (not pool.default, pool.name))

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode()
        if value is None:
            self.beats.pop(name, None)
            return
        beat = WorkerHeartbeat.model_validate_json(value)
        self.beats[name] = beat
        self._kinds.add(beat.kind)

    async def _export(self) -> None:
        while True:
            for kind, count in self.alive_by_kind().items():
                WORKERS_ALIVE.labels(kind).set(count)
            await asyncio.sleep(self.settings.heartbeat_interval_s)


def provide_workers(state: State) -> WorkerTable:
    """The `workers` dependency: the `WorkerTable` the lifespan put on `app.state`."""
    table: WorkerTable = state[WORKERS_KEY]
    return table


class WorkersController(Controller):
    """`GET /workers`."""

    tags = ("health",)

    @get("/workers", summary="Workers alive now, by kind, with what each is doing")
    async def workers(self, workers: NamedDependency[WorkerTable]) -> dict[str, Any]:
        """Alive workers (a heartbeat within three intervals): kind, model, device, current job, uptime."""
        now = utcnow()
        alive = workers.alive(now)
        return {
            "alive": workers.alive_by_kind(now),
            "alive_after_s": f"{ALIVE_INTERVALS} heartbeat intervals",
            "workers": [
                {**beat.model_dump(mode="json"), "last_seen_s": round((now - beat.sent_at).total_seconds(), 1)}
                for beat in alive
            ],
        }
