"""Tasks by owner and state, newest first: the index behind `GET /tasks?status=...` and queue estimates.

For every (owner, state) and every (everyone, state) the index keeps a list of `(created_at in µs, task
id)` sorted ascending, so a page of the newest tasks before a cursor is a bisection plus `limit` steps,
whatever the number of tasks, and an owner's rank among its pending tasks is one bisection. Lists are
updated when a task changes state or is evicted; empty ones are dropped, so many owners cost nothing.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

from schemas.status import TaskState, TaskStatus

Key = tuple[int, str]
"""Sort key of a task: (created_at in microseconds since the epoch, task id)."""

Scope = tuple[bool, str | None]
"""(True, None): every owner's tasks; (False, owner): one owner's (None: tasks without an owner)."""

EVERYONE: Scope = (True, None)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def scope_of(owner: str | None) -> Scope:
    """The scope of one owner's tasks."""
    return (False, owner)


def key_of(status: TaskStatus) -> Key:
    """The task's sort key (a naive `created_at` is taken as UTC)."""
    at = status.created_at if status.created_at.tzinfo else status.created_at.replace(tzinfo=UTC)
    return ((at - _EPOCH) // timedelta(microseconds=1), status.task_id)


def encode_cursor(key: Key) -> str:
    """The opaque cursor of a page that continues after `key`."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    """The key an `encode_cursor` cursor stands for; ValueError when it is not one."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError("not a cursor returned by GET /tasks") from error
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], int) and isinstance(raw[1], str)):
        raise ValueError("not a cursor returned by GET /tasks")
    return (raw[0], raw[1])


def _newest_first(keys: list[Key], before: Key | None) -> Iterator[Key]:
    end = len(keys) if before is None else bisect_left(keys, before)
    for index in range(end - 1, -1, -1):
        yield keys[index]


class TaskIndex:
    """(scope, state) → task keys sorted by creation (no I/O)."""

    def __init__(self) -> None:
        self._lists: dict[tuple[Scope, TaskState], list[Key]] = {}

    def add(self, status: TaskStatus) -> None:
        """Index a task under its owner and state."""
        key = key_of(status)
        for scope in (EVERYONE, scope_of(status.owner)):
            insort(self._lists.setdefault((scope, status.status), []), key)

    def discard(self, status: TaskStatus) -> None:
        """Remove a task indexed with `add(status)` (nothing when it is not there)."""
        key = key_of(status)
        for scope in (EVERYONE, scope_of(status.owner)):
            slot = (scope, status.status)
            keys = self._lists.get(slot)
            if keys is None:
                continue
            index = bisect_left(keys, key)
            if index < len(keys) and keys[index] == key:
                del keys[index]
            if not keys:
                del self._lists[slot]

    def replace(self, old: TaskStatus, new: TaskStatus) -> None:
        """Move a task from how `old` indexed it to `new` (nothing when owner, state and creation agree)."""
        if (old.owner, old.status, old.created_at) != (new.owner, new.status, new.created_at):
            self.discard(old)
            self.add(new)

    def newest(self, scope: Scope, states: Iterable[TaskState], before: Key | None, limit: int) -> list[Key]:
        """Up to `limit` keys of `scope`'s tasks in `states`, newest first, all older than `before` when given."""
        runs = [_newest_first(self._lists.get((scope, state), []), before) for state in set(states)]
        return list(islice(heapq.merge(*runs, reverse=True), limit))

    def newer(self, scope: Scope, state: TaskState, key: Key) -> int:
        """How many of `scope`'s tasks in `state` were created after `key`."""
        keys = self._lists.get((scope, state), [])
        return len(keys) - bisect_right(keys, key)
