"""The status read model's store: newest snapshot wins, bounded memory, replay, change waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.status_view import StatusStore
from schemas.status import TaskState, TaskStatus

NOW = datetime.now(UTC)


def snap(task_id: str, version: int, status: TaskState = TaskState.RUNNING) -> TaskStatus:
    """A status snapshot."""
    return TaskStatus(task_id=task_id, status=status, created_at=NOW, updated_at=NOW, version=version)


def test_newest_version_wins() -> None:
    store = StatusStore()
    assert store.update(snap("a", 2))
    assert not store.update(snap("a", 1))
    assert not store.update(snap("a", 2))
    assert store.update(snap("a", 3, TaskState.SUCCESS))
    assert store.get("a") == snap("a", 3, TaskState.SUCCESS)
    assert store.get("b") is None


def test_pending_placeholder_never_overrides_a_known_task() -> None:
    store = StatusStore()
    store.update(snap("a", 4))
    assert not store.insert_pending(snap("a", 0, TaskState.PENDING))
    assert store.insert_pending(snap("b", 0, TaskState.PENDING))
    assert store.update(snap("b", 1, TaskState.PENDING))


def test_memory_is_bounded() -> None:
    store = StatusStore(max_tasks=3, history=2)
    for n in range(5):
        store.update(snap(f"t{n}", 1))
    store.update(snap("t2", 2))  # recently changed tasks are kept
    store.update(snap("t5", 1))
    assert len(store) == 3
    assert [t for t in ("t0", "t1", "t2", "t3", "t4", "t5") if store.get(t)] == ["t2", "t4", "t5"]
    for version in range(3, 10):
        store.update(snap("t2", version))
    assert [s.version for s in store.since("t2", 0)] == [8, 9]


def test_since_replays_newer_snapshots() -> None:
    store = StatusStore()
    for version in range(1, 5):
        store.update(snap("a", version))
    assert [s.version for s in store.since("a", None)] == [4]
    assert [s.version for s in store.since("a", 2)] == [3, 4]
    assert store.since("a", 4) == []
    assert store.since("unknown", None) == []


async def test_waiters_wake_on_change_and_time_out() -> None:
    store = StatusStore()
    store.update(snap("a", 1))
    await asyncio.wait_for(store.wait_newer("a", 0, 5), 0.5)  # already newer: done at once
    assert store.newer("a", 0)
    await store.wait_newer("a", 1, 0.05)
    assert not store.newer("a", 1)  # timed out
    waiters = [asyncio.ensure_future(store.wait_newer("a", 1, 5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    store.update(snap("a", 2))
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert store.newer("a", 1)


def test_unfinished_jobs_follow_the_owners_snapshots_including_evicted_tasks() -> None:
    store = StatusStore(max_tasks=2)
    owned = {"owner": "alice"}
    store.update(snap("a", 1).model_copy(update=owned))
    store.insert_pending(snap("b", 0, TaskState.PENDING).model_copy(update=owned))
    store.update(snap("c", 1).model_copy(update=owned))  # evicts "a", which is still running
    assert store.get("a") is None and store.unfinished.count_unfinished("alice") == 3
    store.update(snap("a", 2, TaskState.SUCCESS).model_copy(update=owned))
    store.update(snap("b", 1, TaskState.CANCELLED).model_copy(update=owned))
    assert not store.update(snap("b", 0).model_copy(update=owned))  # an older snapshot changes nothing
    assert store.unfinished.count_unfinished("alice") == 1
