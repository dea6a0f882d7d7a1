"""Which finished tasks are past the status lifetime (`STATUS_RETENTION_DAYS`). No I/O.

`streams.app` notes each task that reaches a final status (`note`), re-reads the whole table after a
recovery (`rescan`), and on every trim tick deletes the rows `due` returns and publishes a tombstone for
each on the status topic. The fold itself never forgets a task.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.status import TaskStatus

DAY_S = 24 * 3600.0


def row_partition(marks: dict[str, int]) -> int:
    """The partition a row lives on, from its marks (`topic:partition` of the records that changed it).

    The source topics are co-partitioned by task id, so every mark names the same partition, which is
    also the row's partition of the table's changelog.
    """
    return int(next(iter(marks)).rpartition(":")[2])


class FinishedIndex:
    """task id → when it reached its final status (Unix time), for the rows this worker holds."""

    def __init__(self) -> None:
        self._finished: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._finished)

    def note(self, status: TaskStatus) -> None:
        """Remember `status`'s task if it is final (its `updated_at` is when it finished)."""
        if status.status.is_final:
            self._finished.setdefault(status.task_id, status.updated_at.timestamp())

    def rescan(self, statuses: Iterable[TaskStatus]) -> None:
        """Rebuild from every row held now (after a recovery or a rebalance)."""
        self._finished.clear()
        for status in statuses:
            self.note(status)

    def due(self, now: float, lifetime_s: float, limit: int) -> list[str]:
        """Up to `limit` tasks that finished more than `lifetime_s` before `now`, oldest first."""
        cutoff = now - lifetime_s
        expired = sorted((at, task_id) for task_id, at in self._finished.items() if at < cutoff)
        return [task_id for _, task_id in expired[:limit]]

    def forget(self, task_id: str) -> None:
        """Stop tracking a task (its row was deleted)."""
        self._finished.pop(task_id, None)
