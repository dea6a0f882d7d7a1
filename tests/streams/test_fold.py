"""Unit tests of the pure status fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest

from schemas import topics
from schemas.events import (
    CancelRequested,
    GenerationRequested,
    TaskCancelled,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskStatusRecord,
    TaskSucceeded,
    TrainingRequested,
)
from schemas.generation import GenerationParams
from schemas.status import Stage, StoredFile, TaskKind, TaskState, TaskStatus
from streams.fold import FoldedRow, FoldEvent, MalformedRecord, apply, decode, dumps, loads

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TID = "task-1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requested(t: float = 0) -> GenerationRequested:
    return GenerationRequested(
        task_id=TID, params=GenerationParams(prompt="calm piano", duration=10), occurred_at=at(t)
    )


def training(t: float = 0) -> TrainingRequested:
    return TrainingRequested(
        task_id=TID, lora_id="my-style", style_name="Mine", dataset_key="datasets/x.zip", occurred_at=at(t)
    )


def started(attempt: str = "a1", t: float = 1) -> TaskStarted:
    return TaskStarted(task_id=TID, attempt=attempt, worker="gpu-0", occurred_at=at(t))


def progress(p: float, attempt: str = "a1", t: float = 2) -> TaskProgress:
    return TaskProgress(
        task_id=TID,
        attempt=attempt,
        stage=Stage.DIFFUSION,
        progress=p,
        step=int(p * 8),
        total_steps=8,
        occurred_at=at(t),
    )


FILE = StoredFile(key=f"outputs/{TID}/take-0.wav", content_type="audio/wav", size_bytes=1234, duration_s=10.0)


def succeeded(attempt: str = "a1", t: float = 3) -> TaskSucceeded:
    return TaskSucceeded(task_id=TID, attempt=attempt, files=[FILE], occurred_at=at(t))


def failed(t: float = 3) -> TaskFailed:
    return TaskFailed(task_id=TID, attempt="a1", error="CUDA out of memory", reason="out_of_memory", occurred_at=at(t))


def cancelled(t: float = 3) -> TaskCancelled:
    return TaskCancelled(task_id=TID, attempt="a1", occurred_at=at(t))


def cancel(t: float = 1) -> CancelRequested:
    return CancelRequested(task_id=TID, occurred_at=at(t))


def fold(*events: FoldEvent) -> tuple[TaskStatus | None, list[TaskStatus]]:
    """Fold `events` from nothing; return the final status and every emitted change."""
    emitted: list[TaskStatus] = []

    def step(status: TaskStatus | None, event: FoldEvent) -> TaskStatus | None:
        new = apply(status, event)
        if new is None:
            return status
        emitted.append(new)
        return new

    return reduce(step, events, None), emitted


def states(emitted: list[TaskStatus]) -> list[tuple[str, int]]:
    return [(s.status.value, s.version) for s in emitted]


def test_request_creates_pending_task() -> None:
    status = apply(None, requested())
    assert status is not None
    assert (status.task_id, status.status, status.kind, status.version) == (
        TID,
        TaskState.PENDING,
        TaskKind.GENERATION,
        1,
    )
    assert status.created_at == status.updated_at == T0


def test_training_request_carries_kind_and_lora() -> None:
    status = apply(None, training())
    assert status is not None and (status.kind, status.lora_id) == (TaskKind.TRAINING, "my-style")


def test_happy_path_sequence() -> None:
    final, emitted = fold(requested(), started(), progress(0.25), progress(0.5, t=2.5), succeeded())
    assert states(emitted) == [("pending", 1), ("running", 2), ("running", 3), ("running", 4), ("success", 5)]
    assert final is not None
    assert (final.progress, final.files, final.attempt, final.worker) == (1.0, [FILE], "a1", "gpu-0")
    assert (final.created_at, final.updated_at) == (at(0), at(3))
    assert emitted[2].stage is Stage.DIFFUSION and emitted[2].step == 2


def test_duplicates_change_nothing() -> None:
    status = apply(None, requested())
    assert apply(status, requested(t=5)) is None
    running = apply(status, started())
    assert apply(running, started()) is None
    moving = apply(running, progress(0.5))
    assert apply(moving, progress(0.5)) is None


def test_terminal_is_sticky_second_success_ignored() -> None:
    _, emitted = fold(
        requested(),
        started("a1"),
        succeeded("a1"),
        started("a2", t=4),
        progress(0.3, "a2", t=5),
        succeeded("a2", t=6),
        failed(t=7),
        cancelled(t=8),
        cancel(t=9),
    )
    assert states(emitted) == [("pending", 1), ("running", 2), ("success", 3)]


@pytest.mark.parametrize(("event", "state"), [(failed(), TaskState.FAILED), (cancelled(), TaskState.CANCELLED)])
def test_other_final_states_are_sticky(event: FoldEvent, state: TaskState) -> None:
    final, emitted = fold(requested(), started(), event, succeeded(t=9))
    assert final is not None and final.status is state and emitted[-1].status is state
    assert len(emitted) == 3


def test_failure_carries_error_and_reason() -> None:
    final, _ = fold(requested(), started(), failed())
    assert final is not None and (final.error, final.message) == ("CUDA out of memory", "out_of_memory")


def test_progress_from_another_attempt_is_ignored() -> None:
    running = apply(apply(None, requested()), started("a2"))
    assert apply(running, progress(0.9, attempt="a1")) is None
    assert apply(running, progress(0.1, attempt="a2")) is not None


def test_redelivery_restarts_progress_for_the_new_attempt() -> None:
    final, emitted = fold(requested(), started("a1"), progress(0.8), started("a2", t=4))
    assert final is not None and (final.status, final.attempt, final.progress, final.stage) == (
        TaskState.RUNNING,
        "a2",
        0.0,
        None,
    )
    assert states(emitted)[-1] == ("running", 4)


def test_cancel_request_on_pending_cancels_at_once() -> None:
    final, emitted = fold(requested(), cancel(), started(t=2), succeeded(t=3))
    assert final is not None and final.status is TaskState.CANCELLED
    assert states(emitted) == [("pending", 1), ("cancelled", 2)]


def test_cancel_request_on_running_waits_for_the_worker() -> None:
    final, emitted = fold(requested(), started(), cancel(t=2), cancelled(t=3))
    assert states(emitted) == [("pending", 1), ("running", 2), ("cancelled", 3)]
    assert final is not None and final.message == "cancelled by request"


def test_events_for_unknown_task_create_it() -> None:
    status = apply(None, started())
    assert status is not None and (status.status, status.attempt, status.version) == (TaskState.RUNNING, "a1", 1)
    done = apply(None, succeeded())
    assert done is not None and done.status is TaskState.SUCCESS and done.files == [FILE]
    moving = apply(None, progress(0.4))
    assert moving is not None and moving.status is TaskState.RUNNING and moving.progress == 0.4


def test_late_request_fills_in_what_only_it_knows() -> None:
    final, emitted = fold(started(t=1), training(t=0))
    assert final is not None
    assert (final.status, final.kind, final.lora_id, final.created_at) == (
        TaskState.RUNNING,
        TaskKind.TRAINING,
        "my-style",
        at(0),
    )
    assert states(emitted) == [("running", 1), ("running", 2)]


def test_updated_at_never_goes_back() -> None:
    final, _ = fold(requested(t=10), started(t=5))
    assert final is not None and final.updated_at == at(10)


def test_table_encoding_round_trips() -> None:
    status = apply(None, requested())
    assert status is not None
    row = FoldedRow(status=status).advanced(status, "acefarm.task.events:0", 7)
    assert loads(dumps(row)) == row
    assert row.folded("acefarm.task.events:0", 7) and not row.folded("acefarm.task.events:0", 8)
    assert not row.folded("acefarm.task.events:1", 0)
    assert loads(None) is None


def test_decode_accepts_events_on_their_topic() -> None:
    event = started()
    assert decode(topics.TASK_EVENTS, TID.encode(), event.to_bytes()) == event
    assert isinstance(decode(topics.GENERATION_REQUESTS, TID.encode(), requested().to_bytes()), GenerationRequested)
    assert isinstance(decode(topics.TASK_CONTROL, TID.encode(), cancel().to_bytes()), CancelRequested)


@pytest.mark.parametrize(
    ("topic", "key", "value", "why"),
    [
        (topics.TASK_EVENTS, TID.encode(), b"not json", "Invalid JSON"),
        (topics.TASK_EVENTS, TID.encode(), None, "empty value"),
        (topics.TASK_EVENTS, TID.encode(), b'{"type": "task.started", "task_id": "task-1"}', "attempt"),
        (topics.TASK_EVENTS, TID.encode(), requested().to_bytes(), "does not belong"),
        (topics.GENERATION_REQUESTS, TID.encode(), started().to_bytes(), "does not belong"),
        (topics.TASK_EVENTS, b"other-task", started().to_bytes(), "must equal the task id"),
        (topics.TASK_EVENTS, None, started().to_bytes(), "must equal the task id"),
        (
            topics.TASK_STATUS,
            TID.encode(),
            TaskStatusRecord(
                task_id=TID, status=TaskStatus(task_id=TID, status=TaskState.PENDING, created_at=T0, updated_at=T0)
            ).to_bytes(),
            "does not belong",
        ),
    ],
)
def test_decode_rejects_malformed_records(topic: str, key: bytes | None, value: bytes | None, why: str) -> None:
    with pytest.raises(MalformedRecord, match=why):
        decode(topic, key, value)
