"""Which finished tasks are past the status lifetime (`streams.retention`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.status import TaskKind, TaskState, TaskStatus
from streams.retention import FinishedIndex, row_partition

NOW = datetime(2026, 1, 31, tzinfo=UTC)


def status(task_id: str, state: TaskState, days_ago: float) -> TaskStatus:
    at = NOW - timedelta(days=days_ago)
    return TaskStatus(task_id=task_id, kind=TaskKind.GENERATION, status=state, created_at=at, updated_at=at, version=1)


def test_only_final_tasks_past_the_lifetime_are_due_oldest_first_within_the_limit() -> None:
    index = FinishedIndex()
    for s in (
        status("old", TaskState.SUCCESS, 40),
        status("older", TaskState.FAILED, 50),
        status("recent", TaskState.CANCELLED, 10),
        status("stuck", TaskState.RUNNING, 90),
    ):
        index.note(s)
    lifetime_s = 30 * 86400
    assert index.due(NOW.timestamp(), lifetime_s, limit=10) == ["older", "old"]
    assert index.due(NOW.timestamp(), lifetime_s, limit=1) == ["older"]
    index.forget("older")
    assert index.due(NOW.timestamp(), lifetime_s, limit=10) == ["old"]


def test_the_first_final_time_counts_and_a_rescan_starts_afresh() -> None:
    index = FinishedIndex()
    index.note(status("t", TaskState.SUCCESS, 40))
    index.note(status("t", TaskState.SUCCESS, 1))  # a later snapshot (a webhook report) does not extend it
    assert index.due(NOW.timestamp(), 30 * 86400, limit=10) == ["t"]
    index.rescan([status("u", TaskState.SUCCESS, 40)])
    assert len(index) == 1 and index.due(NOW.timestamp(), 30 * 86400, limit=10) == ["u"]


def test_row_partition_comes_from_any_mark() -> None:
    assert row_partition({"acefarm.task.events:7": 12, "acefarm.generation.requests:7": 3}) == 7
