"""Unit tests of the pure status fold: the rules (`apply`) and the per-record decision (`fold_record`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    WebhookDelivery,
)
from schemas.generation import GenerationParams
from schemas.results import GenerationUsed, ModelUsed, StageTimings, used_metadata
from schemas.status import Stage, StoredFile, TaskKind, TaskState, TaskStatus
from streams.fold import (
    MAX_PAST_ATTEMPTS,
    Change,
    FoldedRow,
    FoldEvent,
    MalformedRecord,
    Reject,
    Skip,
    SourceRecord,
    apply,
    decode,
    dumps,
    fold_record,
    loads,
)
from tests.streams.tables import Tables, Topics

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


def failed(t: float = 3, attempt: str | None = "a1") -> TaskFailed:
    return TaskFailed(
        task_id=TID, attempt=attempt, error="CUDA out of memory", reason="out_of_memory", occurred_at=at(t)
    )


def cancelled(t: float = 3, attempt: str | None = "a1") -> TaskCancelled:
    return TaskCancelled(task_id=TID, attempt=attempt, occurred_at=at(t))


def cancel(t: float = 1) -> CancelRequested:
    return CancelRequested(task_id=TID, occurred_at=at(t))


def fold(*events: FoldEvent) -> tuple[TaskStatus | None, list[TaskStatus]]:
    """Publish `events` in order and fold each record; return the final status and every published change."""
    topics_, tables = Topics(), Tables()
    for event in events:
        tables.read(topics_.publish(event))
    return tables.status(TID), tables.snapshots


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


def test_success_carries_what_the_job_used() -> None:
    params = GenerationParams(prompt="calm piano", duration=10, bpm=90, lora_id="my-style", lora_scale=0.5)
    used = GenerationUsed(
        seeds=[7],
        metadata=used_metadata(params),
        model=ModelUsed(name="base", engine="acestep", id="ACE-Step/acestep-v15-base-diffusers", revision="main"),
        loras=params.loras,
        timings=StageTimings(queue_s=0.5, diffusion_s=2.0, total_s=3.0),
    )
    success = TaskSucceeded(task_id=TID, attempt="a1", files=[FILE], used=used, occurred_at=at(3))
    final, _ = fold(requested(), started(), success)
    assert final is not None and final.used == used and final.result is None
    assert final.used.metadata.bpm == 90 and final.used.metadata.source.bpm == "user"


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
    pool_topic = topics.generation_requests("base")
    assert isinstance(decode(pool_topic, TID.encode(), requested().to_bytes()), GenerationRequested)


@pytest.mark.parametrize(
    ("topic", "key", "value", "why"),
    [
        (topics.TASK_EVENTS, TID.encode(), b"not json", "Invalid JSON"),
        (topics.TASK_EVENTS, TID.encode(), None, "empty value"),
        (topics.TASK_EVENTS, TID.encode(), b'{"type": "task.started", "task_id": "task-1"}', "attempt"),
        (topics.TASK_EVENTS, TID.encode(), requested().to_bytes(), "does not belong"),
        (topics.GENERATION_REQUESTS, TID.encode(), started().to_bytes(), "does not belong"),
        (topics.generation_requests("base"), TID.encode(), started().to_bytes(), "does not belong"),
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


def test_cancel_for_an_unknown_task_is_ignored_and_does_not_cancel_a_later_submission() -> None:
    assert apply(None, cancel(t=0)) is None
    final, emitted = fold(cancel(t=0), requested(t=1), started(t=2), succeeded(t=3))
    assert final is not None and final.status is TaskState.SUCCESS
    assert states(emitted) == [("pending", 1), ("running", 2), ("success", 3)]


def test_final_of_a_superseded_attempt_is_ignored() -> None:
    """A worker that lost the job (redelivered to a2) reports a timeout late: a2 still decides."""
    zombie = TaskFailed(task_id=TID, attempt="a1", error="stuck", reason="timeout", occurred_at=at(5))
    final, emitted = fold(requested(), started("a1"), started("a2", t=4), zombie, succeeded("a2", t=6))
    assert final is not None and (final.status, final.attempt) == (TaskState.SUCCESS, "a2")
    assert states(emitted) == [("pending", 1), ("running", 2), ("running", 3), ("success", 4)]


def test_started_and_progress_of_a_superseded_attempt_are_ignored() -> None:
    final, emitted = fold(requested(), started("a1"), started("a2", t=4), started("a1", t=5), progress(0.9, "a1", t=6))
    assert final is not None and (final.attempt, final.progress) == ("a2", 0.0)
    assert len(emitted) == 3


def test_final_of_an_attempt_whose_start_was_lost_applies() -> None:
    """A `started` event may be missing: a final from an attempt never seen is the newer delivery's."""
    final, _ = fold(requested(), started("a1"), succeeded("a2", t=6))
    assert final is not None and (final.status, final.attempt) == (TaskState.SUCCESS, "a2")


@pytest.mark.parametrize("event", [cancelled(attempt=None), failed(attempt=None)])
def test_final_without_attempt_applies_to_pending_and_running(event: FoldEvent) -> None:
    pending, _ = fold(requested(), event)
    assert pending is not None and pending.status.is_final
    # a delivery crashed while running, the next one was never run: the task ends all the same
    running, _ = fold(requested(), started("a1"), event)
    assert running is not None and running.status.is_final and running.attempt == "a1"


def test_row_remembers_a_bounded_number_of_past_attempts() -> None:
    events: list[FoldEvent] = [requested(), *(started(f"a{i}", t=i) for i in range(MAX_PAST_ATTEMPTS + 3))]
    topics_, tables = Topics(), Tables()
    for event in events:
        tables.read(topics_.publish(event))
    past = tables.rows[TID].past_attempts
    assert len(past) == MAX_PAST_ATTEMPTS and (past[0], past[-1]) == ("a2", f"a{MAX_PAST_ATTEMPTS + 1}")


def record(event: FoldEvent | None = None, offset: int = 0, value: bytes | None = None) -> SourceRecord:
    value = value if event is None else event.to_bytes()
    return SourceRecord(topic=topics.TASK_EVENTS, partition=2, offset=offset, key=TID.encode(), value=value)


def test_record_mark_names_topic_and_partition() -> None:
    assert record(started()).mark == "acefarm.task.events:2"


def test_fold_record_changes_a_new_row_and_marks_the_offset() -> None:
    event = started()
    decision = fold_record(record(event, offset=7), lambda _: None, None)
    assert isinstance(decision, Change) and decision.event == event
    assert decision.row.status.status is TaskState.RUNNING
    assert decision.row.marks == {"acefarm.task.events:2": 7}


def test_fold_record_skips_records_already_folded_and_changes_nothing_new() -> None:
    first = fold_record(record(started(), offset=7), lambda _: None, None)
    assert isinstance(first, Change)
    rows = {TID: first.row}
    assert fold_record(record(started(), offset=7), rows.get, None) == Skip("folded already")
    assert fold_record(record(started(), offset=8), rows.get, None) == Skip("no change")
    later = fold_record(record(progress(0.5), offset=9), rows.get, None)
    assert isinstance(later, Change) and later.row.marks == {"acefarm.task.events:2": 9}


def test_fold_record_dead_letters_a_malformed_record_once() -> None:
    decision = fold_record(record(value=b"not json", offset=4), lambda _: None, None)
    assert isinstance(decision, Reject) and "Invalid JSON" in decision.error
    assert fold_record(record(value=b"not json", offset=4), lambda _: None, 4) == Skip("dead-lettered already")
    assert isinstance(fold_record(record(value=None, offset=5), lambda _: None, 4), Reject)


def test_rows_from_before_past_attempts_were_kept_still_load() -> None:
    status = apply(None, requested())
    assert status is not None
    row = loads(f'{{"status": {status.model_dump_json()}, "marks": {{"t:0": 3}}}}')
    assert row == FoldedRow(status=status, marks={"t:0": 3})


def webhook_report(
    event: str = "completed", state: str = "retrying", attempts: int = 1, t: float = 4, delivery: str = "d1"
) -> WebhookDelivery:
    return WebhookDelivery(
        task_id=TID,
        delivery_id=delivery,
        event=event,
        state=state,
        attempts=attempts,
        last_error="HTTP 500" if state != "delivered" else None,
        occurred_at=at(t),
    )


def test_request_carries_its_webhook_target_onto_the_status() -> None:
    event = requested().model_copy(update={"webhook": "https://example.com/hook", "webhook_events": ["start"]})
    status, _ = fold(event)
    assert status is not None and status.webhook is not None
    assert (status.webhook.url, status.webhook.events) == ("https://example.com/hook", ["start"])
    assert fold(requested())[0].webhook is None  # type: ignore[union-attr]


def test_webhook_reports_show_on_a_final_task_and_name_the_version_they_made() -> None:
    status, emitted = fold(requested(), started(), succeeded(), webhook_report(), webhook_report(state="failed", t=9))
    assert status is not None and status.status is TaskState.SUCCESS
    assert status.webhook_status is not None
    assert (status.webhook_status.state, status.webhook_status.status_version) == ("failed", status.version)
    assert emitted[-2].webhook_status is not None and emitted[-2].webhook_status.status_version == emitted[-2].version


def test_an_older_or_earlier_event_report_does_not_replace_a_completed_one() -> None:
    base, _ = fold(requested(), started(), succeeded(), webhook_report(state="delivered", t=5))
    assert base is not None
    assert apply(base, webhook_report(t=4.5)) is None
    assert apply(base, webhook_report(event="start", delivery="d0", t=6)) is None
    later = apply(base, webhook_report(state="delivered", attempts=2, t=6))
    assert later is not None and later.webhook_status is not None and later.webhook_status.attempts == 2


def test_a_webhook_report_for_an_unknown_task_is_ignored() -> None:
    report = webhook_report()
    assert apply(None, report) is None
    assert decode(topics.TASK_EVENTS, TID.encode(), report.to_bytes()) == report


def test_attempts_is_the_highest_attempt_number_started() -> None:
    def numbered(attempt: str, number: int, t: float) -> TaskStarted:
        return TaskStarted(task_id=TID, attempt=attempt, worker="gpu-0", attempt_number=number, occurred_at=at(t))

    poison = TaskFailed(task_id=TID, error="not retried", reason="poison", occurred_at=at(9))
    final, _ = fold(requested(), numbered("a1", 1, 1), numbered("a2", 2, 2), numbered("a3", 3, 3), poison)
    assert final is not None and (final.status, final.message, final.attempts) == (TaskState.FAILED, "poison", 3)
    # the first `started` was lost: the count comes from the worker's durable record, not from counting events
    lost_first, _ = fold(requested(), numbered("a2", 2, 2))
    assert lost_first is not None and lost_first.attempts == 2
    fresh, _ = fold(requested())
    assert fresh is not None and fresh.attempts == 0
