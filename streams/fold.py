"""The status fold: how one record changes one task's status. Pure functions, no I/O.

Rules (`apply`):
- a request creates a pending task; a request for a known task only fills in what only the request
  knows (kind, LoRA id, owner, request hash, creation time) when it is older than what created the
  task, otherwise it is a duplicate and ignored;
- started → running with that attempt; `attempts` is the highest `attempt_number` seen (the worker
  counts starts durably, so a lost or repeated `started` event cannot skew it); progress counts
  only for the current attempt;
- once a task moves to another attempt, the events of the attempts before it are ignored: a worker
  that lost the job (a redelivery went to another worker) cannot overwrite the current attempt;
- succeeded / failed / cancelled are final and sticky: the first one wins, later ones are ignored.
  A final with no attempt (a delivery that was never run, e.g. "cancelled before it started") ends
  the task whatever ran before; a final from an attempt the fold never saw start applies too (the
  `started` event may be missing: one sent before workers awaited it, or a lost send);
- a cancel request cancels a pending task at once and leaves a running one to its worker, which
  reports `TaskCancelled`; a cancel for a task nobody submitted is ignored, so it cannot cancel a
  task submitted later under that id;
- a webhook delivery report (`WebhookDelivery`, from the webhook service) sets `webhook_status`, final or
  not, unless it is older than the recorded one or would replace a `completed` delivery's record with an
  earlier event's; its `status_version` is the version it creates, so the webhook service can tell the
  snapshots it caused from the task's own changes; a report about an unknown task is ignored;
- any other event for an unknown task creates it (topics are not ordered relative to each other).
Every change bumps `version` by one; `apply` returns None when nothing changes.

`fold_record` decides what one source record does to the table (dead-letter it, skip it, or change a
row); `streams.app` only carries that decision out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from schemas import topics
from schemas.events import (
    CancelRequested,
    GenerationRequested,
    InvalidRecord,
    PlanningRequested,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    TrainingRequested,
    WebhookDelivery,
    validate_record,
)
from schemas.status import PLANNED_KINDS, TaskKind, TaskState, TaskStatus
from schemas.webhooks import WebhookStatus

FoldEvent = TaskEvent
"""The events the fold reads (`schemas.events.TaskEvent`)."""

SOURCE_TOPICS: tuple[str, ...] = (
    topics.GENERATION_REQUESTS,
    topics.PLANNING_REQUESTS,
    topics.TRAINING_REQUESTS,
    topics.TASK_EVENTS,
    topics.TASK_CONTROL,
)
"""The topics folded into the status table of every farm (their event types: `schemas.events.events_for_topic`);
a farm with model pools adds their intake topics."""


class MalformedRecord(ValueError):
    """A record that is not a valid event for its topic."""


def decode(topic: str, key: bytes | None, value: bytes | None) -> FoldEvent:
    """Validate one record of a folded topic (`schemas.events.validate_record`, the rule every consumer
    applies); raises `MalformedRecord` saying what is wrong."""
    try:
        event = validate_record(topic, key, value)
    except InvalidRecord as exc:
        raise MalformedRecord(str(exc)) from None
    folded = topic in SOURCE_TOPICS or topics.is_generation_requests(topic)  # model pools' intakes too
    if not folded or not isinstance(event, FoldEvent):
        raise MalformedRecord(f"event type {event.type!r} does not belong on topic {topic!r}")
    return event


def apply(status: TaskStatus | None, event: FoldEvent, past_attempts: Collection[str] = ()) -> TaskStatus | None:
    """The task's status after `event`, or None when the event changes nothing.

    `past_attempts` are the attempts the task has moved on from; their events are ignored.
    """
    if status is None:
        return None if isinstance(event, CancelRequested | WebhookDelivery) else _create(event)
    if getattr(event, "attempt", None) in past_attempts:
        return None
    changes = _changes(status, event)
    if not changes or all(getattr(status, name) == value for name, value in changes.items()):
        return None
    return status.model_copy(
        update={**changes, "updated_at": max(status.updated_at, event.occurred_at), "version": status.version + 1}
    )


def _create(event: FoldEvent) -> TaskStatus:
    at = event.occurred_at
    blank = TaskStatus(task_id=event.task_id, status=TaskState.PENDING, created_at=at, updated_at=at, version=0)
    return blank.model_copy(update={**_changes(blank, event), "version": 1})


def _changes(status: TaskStatus, event: FoldEvent) -> dict[str, Any]:
    """The fields `event` sets on `status` (empty when it is ignored)."""
    final = status.status.is_final
    match event:
        case GenerationRequested() | PlanningRequested() | TrainingRequested():
            return _request(status, event)
        case CancelRequested():
            if status.status is not TaskState.PENDING:
                return {}
            return {"status": TaskState.CANCELLED, "message": "cancelled by request", "stage": None, "eta_s": None}
        case TaskStarted():
            if final or (status.status is TaskState.RUNNING and status.attempt == event.attempt):
                return {}
            return {
                **_RESET,
                "status": TaskState.RUNNING,
                "attempt": event.attempt,
                "worker": event.worker,
                "attempts": max(status.attempts, event.attempt_number),
            }
        case TaskProgress():
            if final or (status.attempt is not None and status.attempt != event.attempt):
                return {}
            fields = ("stage", "progress", "step", "total_steps", "eta_s", "message")
            update = {name: getattr(event, name) for name in fields}
            if event.loss is not None:
                update["loss"] = event.loss
            return {**update, "status": TaskState.RUNNING, "attempt": event.attempt}
        case TaskSucceeded():
            if final:
                return {}
            return {
                "status": TaskState.SUCCESS,
                "attempt": event.attempt,
                "progress": 1.0,
                "stage": None,
                "message": None,
                "eta_s": None,
                "error": None,
                "files": event.files,
                "lora_id": event.lora_id or status.lora_id,
                "loss": event.loss if event.loss is not None else status.loss,
                "result": event.result or status.result,
                "used": event.used,
            }
        case TaskFailed():
            if final:
                return {}
            return {
                "status": TaskState.FAILED,
                "attempt": event.attempt or status.attempt,
                "stage": None,
                "eta_s": None,
                "error": event.error,
                "message": event.reason,
            }
        case TaskCancelled():
            if final:
                return {}
            return {
                "status": TaskState.CANCELLED,
                "attempt": event.attempt or status.attempt,
                "stage": None,
                "eta_s": None,
                "message": event.reason,
            }
        case WebhookDelivery():
            return _webhook_delivery(status, event)
    raise TypeError(f"not a folded event: {type(event).__name__}")  # pragma: no cover


_RESET: dict[str, Any] = {
    "progress": 0.0,
    "stage": None,
    "step": None,
    "total_steps": None,
    "eta_s": None,
    "message": None,
    "error": None,
}


def _request(status: TaskStatus, event: GenerationRequested | PlanningRequested | TrainingRequested) -> dict[str, Any]:
    """A request fills in what only it knows, if it is the task's first event; else it is a duplicate.

    A planned generation's forwarded `GenerationRequested` is younger than its `PlanningRequested`: a duplicate.
    """
    if status.version > 0 and event.occurred_at >= status.created_at:
        return {}
    update: dict[str, Any] = {"created_at": min(status.created_at, event.occurred_at), "owner": event.owner}
    update["webhook"] = event.webhook_target()
    if isinstance(event, TrainingRequested):
        update |= {"kind": TaskKind.TRAINING, "lora_id": status.lora_id or event.lora_id}
    elif isinstance(event, PlanningRequested):
        update |= {"kind": PLANNED_KINDS[event.mode], "request_hash": event.request_hash}
    else:
        update |= {"kind": TaskKind.GENERATION, "request_hash": event.request_hash}
    return update


def _webhook_delivery(status: TaskStatus, event: WebhookDelivery) -> dict[str, Any]:
    """A delivery report replaces the recorded one unless it is older or about an earlier event than `completed`."""
    current = status.webhook_status
    if current is not None and (
        event.occurred_at < current.updated_at or (current.event == "completed" and event.event != "completed")
    ):
        return {}
    recorded = WebhookStatus(
        delivery_id=event.delivery_id,
        event=event.event,
        state=event.state,
        attempts=event.attempts,
        last_error=event.last_error,
        updated_at=event.occurred_at,
        status_version=status.version + 1,
    )
    return {"webhook_status": recorded}


MAX_PAST_ATTEMPTS = 32
"""How many superseded attempts a row remembers (oldest forgotten first)."""


class FoldedRow(BaseModel):
    """One row of the status table: the status; per source partition, the offset of the last
    record that changed it (a re-read record at or below that offset was folded already); and the
    attempts the task has moved on from."""

    status: TaskStatus
    marks: dict[str, int] = Field(default_factory=dict)
    past_attempts: list[str] = Field(default_factory=list)

    def folded(self, mark: str, offset: int) -> bool:
        """Whether the record at `offset` of source partition `mark` is already part of this row."""
        return self.marks.get(mark, -1) >= offset

    def advanced(self, status: TaskStatus, mark: str, offset: int) -> FoldedRow:
        """The row after a change made by the record at `offset` of `mark`."""
        past = self.past_attempts
        previous = self.status.attempt
        if previous is not None and previous != status.attempt and previous not in past:
            past = [*past, previous][-MAX_PAST_ATTEMPTS:]
        return FoldedRow(status=status, marks={**self.marks, mark: offset}, past_attempts=past)


_ROW: TypeAdapter[FoldedRow] = TypeAdapter(FoldedRow)


def dumps(row: FoldedRow) -> str:
    """The table encoding of a row (JSON text)."""
    return row.model_dump_json()


def loads(raw: bytes | str | None) -> FoldedRow | None:
    """Decode a table value (None stays None)."""
    return None if raw is None else _ROW.validate_json(raw)


@dataclass(frozen=True)
class SourceRecord:
    """One record read from a folded topic: where it sits and what it holds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def mark(self) -> str:
        """Its source partition, as rows and the dead-letter table name it."""
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class Reject:
    """Dead-letter the record (first time its offset is seen) with `error`."""

    error: str


@dataclass(frozen=True)
class Skip:
    """Do nothing: the record was dead-lettered or folded already, or changes nothing."""

    why: Literal["dead-lettered already", "folded already", "no change"]


@dataclass(frozen=True)
class Change:
    """Publish `row.status` as the task's snapshot, then store `row` under its task id."""

    event: FoldEvent
    row: FoldedRow


Decision = Reject | Skip | Change


def fold_record(
    record: SourceRecord, row_of: Callable[[str], FoldedRow | None], dead_lettered_to: int | None
) -> Decision:
    """What `record` does to the table.

    `row_of` reads a task's current row; `dead_lettered_to` is the highest offset of the record's
    source partition already dead-lettered (None if none): a re-read malformed record at or below it
    is skipped, so each one is dead-lettered once. A record at or below its row's mark for the
    partition was folded before a restart and is skipped; its change is not published twice.
    """
    try:
        event = decode(record.topic, record.key, record.value)
    except MalformedRecord as exc:
        if dead_lettered_to is not None and record.offset <= dead_lettered_to:
            return Skip("dead-lettered already")
        return Reject(str(exc))
    row = row_of(event.task_id)
    if row is not None and row.folded(record.mark, record.offset):
        return Skip("folded already")
    new = apply(row.status if row else None, event, row.past_attempts if row else ())
    if new is None:
        return Skip("no change")
    return Change(event, (row or FoldedRow(status=new)).advanced(new, record.mark, record.offset))
