"""The status fold: how one event changes one task's status. Pure functions, no I/O.

Rules:
- a request creates a pending task; a request for a known task only fills in what only the request
  knows (kind, LoRA id, owner, request hash, creation time) when it is older than what created the
  task, otherwise it is a duplicate and ignored;
- started → running with that attempt; progress counts only for the current attempt;
- succeeded / failed / cancelled are final and sticky: the first one wins, later ones are ignored;
- a cancel request cancels a pending (or unknown) task at once and leaves a running one to its
  worker, which reports `TaskCancelled`;
- an event for an unknown task creates it (topics are not ordered relative to each other).
Every change bumps `version` by one; `apply` returns None when nothing changes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from schemas import topics
from schemas.events import (
    CancelRequested,
    GenerationRequested,
    TaskCancelled,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    TrainingRequested,
    parse_event,
)
from schemas.status import TaskKind, TaskState, TaskStatus

FoldEvent = (
    GenerationRequested
    | TrainingRequested
    | TaskStarted
    | TaskProgress
    | TaskSucceeded
    | TaskFailed
    | TaskCancelled
    | CancelRequested
)

TOPIC_EVENTS: dict[str, tuple[type[FoldEvent], ...]] = {
    topics.GENERATION_REQUESTS: (GenerationRequested,),
    topics.TRAINING_REQUESTS: (TrainingRequested,),
    topics.TASK_EVENTS: (TaskStarted, TaskProgress, TaskSucceeded, TaskFailed, TaskCancelled),
    topics.TASK_CONTROL: (CancelRequested,),
}
"""The event types each folded topic may carry."""

SOURCE_TOPICS: tuple[str, ...] = tuple(TOPIC_EVENTS)


class MalformedRecord(ValueError):
    """A record that is not a valid event for its topic."""


def decode(topic: str, key: bytes | None, value: bytes | None) -> FoldEvent:
    """Validate one record of a folded topic; raises `MalformedRecord` saying what is wrong."""
    if value is None:
        raise MalformedRecord("empty value")
    try:
        event = parse_event(value)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise MalformedRecord(str(exc)) from exc
    allowed = TOPIC_EVENTS.get(topic, ())
    if not isinstance(event, allowed):
        raise MalformedRecord(f"event type {event.type!r} does not belong on topic {topic!r}")
    if key is None or key.decode(errors="replace") != event.task_id:
        raise MalformedRecord(f"record key {key!r} must equal the task id {event.task_id!r}")
    return event


def apply(status: TaskStatus | None, event: FoldEvent) -> TaskStatus | None:
    """The task's status after `event`, or None when the event changes nothing."""
    if status is None:
        return _create(event)
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
        case GenerationRequested() | TrainingRequested():
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


def _request(status: TaskStatus, event: GenerationRequested | TrainingRequested) -> dict[str, Any]:
    """A request fills in what only it knows, if it is the task's first event; else it is a duplicate."""
    if status.version > 0 and event.occurred_at >= status.created_at:
        return {}
    update: dict[str, Any] = {"created_at": min(status.created_at, event.occurred_at), "owner": event.owner}
    if isinstance(event, TrainingRequested):
        update |= {"kind": TaskKind.TRAINING, "lora_id": status.lora_id or event.lora_id}
    else:
        update |= {"kind": TaskKind.GENERATION, "request_hash": event.request_hash}
    return update


class FoldedRow(BaseModel):
    """One row of the status table: the status and, per source partition, the offset of the last
    record that changed it (a re-read record at or below that offset was folded already)."""

    status: TaskStatus
    marks: dict[str, int] = Field(default_factory=dict)

    def folded(self, mark: str, offset: int) -> bool:
        """Whether the record at `offset` of source partition `mark` is already part of this row."""
        return self.marks.get(mark, -1) >= offset

    def advanced(self, status: TaskStatus, mark: str, offset: int) -> FoldedRow:
        """The row after a change made by the record at `offset` of `mark`."""
        return FoldedRow(status=status, marks={**self.marks, mark: offset})


_ROW: TypeAdapter[FoldedRow] = TypeAdapter(FoldedRow)


def dumps(row: FoldedRow) -> str:
    """The table encoding of a row (JSON text)."""
    return row.model_dump_json()


def loads(raw: bytes | str | None) -> FoldedRow | None:
    """Decode a table value (None stays None)."""
    return None if raw is None else _ROW.validate_json(raw)
