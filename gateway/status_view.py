"""The gateway's read model of task status, fed by the `streams` service's snapshots.

`streams` publishes a full `TaskStatusRecord` to `acefarm.task.status` (keyed by task id) on every
change. The view reads that topic from the beginning on every partition with no consumer group (so
start-up needs no group join and every gateway replica sees every task), keeps the latest status of
each task plus a short history of snapshots for SSE replay, and wakes per-task waiters on change.

Memory is bounded: at most `max_tasks` tasks (least recently changed evicted first), each with at
most `history` snapshots. A `TaskIndex` keeps the tasks by owner and state for listings.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from gateway.limits import UnfinishedJobs
from gateway.task_index import Key, Scope, TaskIndex, key_of, scope_of
from gateway.wakeups import TaskWakeups
from schemas import topics
from schemas.events import GenerationRequested, PlanningRequested, TaskStatusRecord, TrainingRequested, parse_event
from schemas.status import PLANNED_KINDS, TaskKind, TaskState, TaskStatus

log = get_logger(__name__)


@dataclass
class _Entry:
    latest: TaskStatus
    history: list[TaskStatus] = field(default_factory=list)
    """Oldest first; a list, not a deque: a deque allocates a 64-slot block per task (~0.8 KB at 100k tasks)."""


class StatusStore:
    """task id → latest status and recent snapshots, with per-task change notification (no I/O).

    `unfinished` counts each owner's pending and running tasks from every accepted snapshot (the
    topic's and the gateway's own just-submitted rows), so it is rebuilt whenever the view re-reads
    the topic; a task evicted from the store stays counted until its final snapshot arrives.
    """

    def __init__(self, max_tasks: int = 100_000, history: int = 16) -> None:
        self.unfinished = UnfinishedJobs()
        self._tasks: OrderedDict[str, _Entry] = OrderedDict()
        self._wakeups = TaskWakeups()
        self._max_tasks = max_tasks
        self._history = history
        self._index = TaskIndex()

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, task_id: str) -> TaskStatus | None:
        """The latest known status, or None."""
        entry = self._tasks.get(task_id)
        return entry.latest if entry else None

    def since(self, task_id: str, version: int | None) -> list[TaskStatus]:
        """Snapshots newer than `version`, oldest first.

        When the history no longer reaches back to `version`, the oldest kept snapshots still
        come first; the latest status is always the last item unless the caller is up to date.
        """
        entry = self._tasks.get(task_id)
        if entry is None:
            return []
        if version is None:
            return [entry.latest]
        return [s for s in entry.history if s.version > version]

    def update(self, status: TaskStatus) -> bool:
        """Record a snapshot if it is newer than what is known; returns whether it was."""
        entry = self._tasks.get(status.task_id)
        if entry is not None and status.version <= entry.latest.version:
            return False
        if entry is None:
            entry = _Entry(latest=status)
            self._tasks[status.task_id] = entry
            self._index.add(status)
            while len(self._tasks) > self._max_tasks:
                self._index.discard(self._tasks.popitem(last=False)[1].latest)
        else:
            self._index.replace(entry.latest, status)
            entry.latest = status
            self._tasks.move_to_end(status.task_id)
        entry.history.append(status)
        if len(entry.history) > self._history:
            del entry.history[0]
        self.unfinished.observe(status.task_id, status.owner, status.status.is_final)
        self._wakeups.wake(status.task_id)
        return True

    def forget(self, task_id: str) -> None:
        """Drop a task whose status expired (streams published its tombstone)."""
        self._tasks.pop(task_id, None)

    def insert_pending(self, status: TaskStatus) -> bool:
        """Record a just-submitted task unless the task is already known; returns whether it was."""
        if status.task_id in self._tasks:
            return False
        return self.update(status)

    def record_submitted(self, event: GenerationRequested | PlanningRequested | TrainingRequested) -> bool:
        """`insert_pending` for a request event the gateway has just published (version 0), with its owner."""
        at = event.occurred_at
        lora_id: str | None
        if isinstance(event, TrainingRequested):
            kind, lora_id, request_hash = TaskKind.TRAINING, event.lora_id, None
        elif isinstance(event, PlanningRequested):
            kind, request_hash = PLANNED_KINDS[event.mode], event.request_hash
            lora_id = event.params.lora_id if event.params else None
        else:
            kind, lora_id, request_hash = TaskKind.GENERATION, event.params.lora_id, event.request_hash
        pending = TaskStatus(
            task_id=event.task_id,
            kind=kind,
            status=TaskState.PENDING,
            lora_id=lora_id,
            owner=event.owner,
            request_hash=request_hash,
            created_at=at,
            updated_at=at,
            version=0,
        )
        return self.insert_pending(pending)

    def newest(self, scope: Scope, states: Iterable[TaskState], before: Key | None, limit: int) -> list[TaskStatus]:
        """Up to `limit` latest statuses of `scope`'s tasks in `states`, newest created first, all created
        before the task `before` names (a page after it) when given."""
        keys = self._index.newest(scope, states, before, limit)
        return [self._tasks[task_id].latest for _, task_id in keys]

    def pending_after(self, status: TaskStatus) -> int:
        """How many pending tasks of the same owner were created after this one."""
        return self._index.newer(scope_of(status.owner), TaskState.PENDING, key_of(status))

    def wait_newer(self, task_id: str, version: int, timeout_s: float, *also: asyncio.Future[Any]) -> Awaitable[None]:
        """Something to await until the task has a snapshot newer than `version` (`newer` tells), any of
        `also` is done, or the timeout has passed; done at once if it has one already.

        Waiters share timers (`gateway.wakeups`), so the timeout ends within 1/8 of `timeout_s` after it. A
        plain function handing out the waiter, so an idle stream holds no coroutine frame of its own here.
        """
        if self.newer(task_id, version):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self._wakeups.wait(task_id, timeout_s, *also)

    def newer(self, task_id: str, version: int) -> bool:
        """Whether the task has a snapshot newer than `version`."""
        current = self.get(task_id)
        return current is not None and current.version > version


class StatusView:
    """Keeps a `StatusStore` up to date from the TASK_STATUS topic (a `CompactedReader` in the background)."""

    def __init__(self, settings: Settings, store: StatusStore | None = None) -> None:
        self.settings = settings
        self.store = store or StatusStore()
        self._reader = CompactedReader(settings, topics.TASK_STATUS, self._apply, name="status-view")
        self.caught_up = self._reader.caught_up

    async def start(self) -> None:
        """Read TASK_STATUS from the beginning on every partition and follow it."""
        await self._reader.start()

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        await self._reader.stop()

    @property
    def running(self) -> bool:
        """Whether the background consumer is alive."""
        return self._reader.running

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the task's status expired (STATUS_RETENTION_DAYS)
            if key is not None:
                self.store.forget(key.decode(errors="replace"))
            return
        try:
            event = parse_event(value)
        except ValidationError as error:
            log.warning("status_view.malformed", error=str(error)[:300])
            return
        if isinstance(event, TaskStatusRecord):
            self.store.update(event.status)
