"""The status store's owner index: pages newest first by owner and state, moves on state changes, forgets
evicted tasks, and opaque cursors that refuse anything they did not make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.status_view import StatusStore
from gateway.task_index import EVERYONE, decode_cursor, encode_cursor, key_of, scope_of
from schemas.status import TaskState, TaskStatus

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PENDING, RUNNING, SUCCESS = TaskState.PENDING, TaskState.RUNNING, TaskState.SUCCESS


def snap(task_id: str, minute: int, owner: str | None, state: TaskState = PENDING, version: int = 1) -> TaskStatus:
    """A status of `owner`'s task created `minute` minutes after T0."""
    at = T0 + timedelta(minutes=minute)
    return TaskStatus(task_id=task_id, status=state, owner=owner, created_at=at, updated_at=at, version=version)


def ids(statuses: list[TaskStatus]) -> list[str]:
    return [s.task_id for s in statuses]


def test_pages_are_newest_first_per_owner_and_state() -> None:
    store = StatusStore()
    for n in range(6):
        store.update(snap(f"a{n}", n, "alice", RUNNING if n == 2 else PENDING))
        store.update(snap(f"b{n}", n, "bob"))
    alice = scope_of("alice")
    assert ids(store.newest(alice, [PENDING], None, 10)) == ["a5", "a4", "a3", "a1", "a0"]
    assert ids(store.newest(alice, [PENDING, RUNNING], None, 3)) == ["a5", "a4", "a3"]
    first = store.newest(alice, [PENDING, RUNNING], None, 3)
    assert ids(store.newest(alice, [PENDING, RUNNING], key_of(first[-1]), 3)) == ["a2", "a1", "a0"]
    assert ids(store.newest(EVERYONE, [RUNNING], None, 10)) == ["a2"]
    assert len(store.newest(EVERYONE, [PENDING], None, 100)) == 11
    assert store.newest(scope_of("carol"), list(TaskState), None, 10) == []


def test_a_state_change_moves_the_task_and_eviction_forgets_it() -> None:
    store = StatusStore(max_tasks=3)
    store.update(snap("a0", 0, "alice"))
    store.update(snap("a1", 1, "alice"))
    store.update(snap("a0", 0, "alice", SUCCESS, version=2))
    alice = scope_of("alice")
    assert ids(store.newest(alice, [PENDING], None, 10)) == ["a1"]
    assert ids(store.newest(alice, [SUCCESS], None, 10)) == ["a0"]
    store.update(snap("a2", 2, "alice"))
    store.update(snap("a3", 3, "alice"))  # evicts a1, the least recently changed
    assert ids(store.newest(alice, list(TaskState), None, 10)) == ["a3", "a2", "a0"]
    assert ids(store.newest(EVERYONE, [PENDING], None, 10)) == ["a3", "a2"]


def test_tasks_without_an_owner_are_listed_for_everyone_only() -> None:
    store = StatusStore()
    store.update(snap("direct", 0, None))
    assert ids(store.newest(EVERYONE, [PENDING], None, 10)) == ["direct"]
    assert store.newest(scope_of("anonymous"), [PENDING], None, 10) == []


def test_pending_after_counts_the_owners_newer_pending_tasks() -> None:
    store = StatusStore()
    tasks = [snap(f"a{n}", n, "alice") for n in range(5)]
    for status in tasks:
        store.update(status)
    store.update(snap("b9", 9, "bob"))
    store.update(snap("a3", 3, "alice", RUNNING, version=2))
    assert store.pending_after(tasks[0]) == 3
    assert store.pending_after(tasks[4]) == 0


def test_cursors_round_trip_and_garbage_is_refused() -> None:
    key = key_of(snap("t,with/odd=chars", 0, "alice"))
    assert decode_cursor(encode_cursor(key)) == key
    for garbage in ("", "not base64!", encode_cursor(key)[:-3], "W10", "eyJhIjogMX0"):
        with pytest.raises(ValueError, match="not a cursor"):
            decode_cursor(garbage)
