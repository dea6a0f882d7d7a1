"""Kafka events: one envelope, one model per event type, and a parser for any of them.

Every event is JSON with `event_id`, `type`, `task_id`, `occurred_at` and `schema_version`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.generation import GenerationParams
from schemas.status import Stage, StoredFile, TaskStatus
from schemas.tenancy import OWNER_PATTERN, Priority
from schemas.training import TrainingOptions

SCHEMA_VERSION: Literal[1] = 1
_TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def new_event_id() -> str:
    """A fresh random event id."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields shared by every event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    task_id: Annotated[str, Field(pattern=_TASK_ID, description="Also the Kafka message key.")]
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """JSON encoding used on the wire."""
        return self.model_dump_json().encode()


_OWNER_DOC = "Who submitted it (the gateway stamps the key's owner); names its fair-queue lane. None: 'anonymous'."
_PRIORITY_DOC = "Queue priority: `high`, `normal` or `batch` (weights of the fair scheduler, docs/scheduling.md)."


class GenerationRequested(Envelope):
    """A generation job. Topics: `acefarm.generation.requests` (intake), `acefarm.generation.ready` (admitted)."""

    type: Literal["generation.requested"] = "generation.requested"
    params: GenerationParams
    callback_url: str | None = None
    owner: Annotated[str, Field(pattern=OWNER_PATTERN)] | None = Field(default=None, description=_OWNER_DOC)
    priority: Priority = Field(default=Priority.NORMAL, description=_PRIORITY_DOC)


class TrainingRequested(Envelope):
    """A LoRA training job. Topic: `acefarm.training.requests`."""

    type: Literal["training.requested"] = "training.requested"
    lora_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    style_name: Annotated[str, Field(min_length=1, max_length=100)]
    dataset_key: Annotated[str, Field(description="Storage key of the uploaded zip.")]
    options: TrainingOptions = Field(default_factory=TrainingOptions)
    owner: Annotated[str, Field(pattern=OWNER_PATTERN)] | None = Field(
        default=None, description="Who submitted it (the gateway stamps the key's owner). None: 'anonymous'."
    )


class TaskStarted(Envelope):
    """A worker took the job. Topic: `acefarm.task.events`."""

    type: Literal["task.started"] = "task.started"
    attempt: Annotated[str, Field(description="Unique per delivery of the job to a worker.")]
    worker: str


class TaskProgress(Envelope):
    """Progress of a running job. Topic: `acefarm.task.events`."""

    type: Literal["task.progress"] = "task.progress"
    attempt: str
    stage: Stage
    progress: Annotated[float, Field(ge=0.0, le=1.0)]
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    message: str | None = None


class TaskSucceeded(Envelope):
    """A job finished; its files are stored. Topic: `acefarm.task.events`."""

    type: Literal["task.succeeded"] = "task.succeeded"
    attempt: str
    files: list[StoredFile] = Field(default_factory=list)
    lora_id: str | None = None
    loss: float | None = None


class TaskFailed(Envelope):
    """A job failed with a readable reason. Topic: `acefarm.task.events`."""

    type: Literal["task.failed"] = "task.failed"
    attempt: str | None = None
    error: Annotated[str, Field(max_length=4000)]
    reason: Literal["invalid_input", "out_of_memory", "unsupported", "engine_error", "timeout", "internal"] = (
        "engine_error"
    )


class TaskCancelled(Envelope):
    """A job was cancelled, queued or running. Topic: `acefarm.task.events`."""

    type: Literal["task.cancelled"] = "task.cancelled"
    attempt: str | None = None
    reason: str = "cancelled by request"


class CancelRequested(Envelope):
    """Ask workers to skip or stop a job. Topic: `acefarm.task.control`."""

    type: Literal["task.cancel_requested"] = "task.cancel_requested"


class TaskStatusRecord(Envelope):
    """A folded status snapshot published by `streams`. Topic: `acefarm.task.status`."""

    type: Literal["task.status"] = "task.status"
    status: TaskStatus


class DeadLetter(Envelope):
    """A record that could not be processed. Topic: `acefarm.deadletter`."""

    type: Literal["deadletter"] = "deadletter"
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    value: Annotated[str, Field(description="The raw value, decoded as UTF-8 with replacement.")]
    error: str
    consumer: str

    @classmethod
    def of_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        consumer: str,
    ) -> DeadLetter:
        """The dead letter for a raw record; keyed by its key when that is a valid task id, else 'unknown'."""
        text_key = key.decode(errors="replace") if key else None
        return cls(
            task_id=text_key if text_key and re.match(_TASK_ID, text_key) else "unknown",
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=text_key,
            value=(value or b"").decode(errors="replace")[:100_000],
            error=error[:4000],
            consumer=consumer,
        )


RequestEvent = Annotated[GenerationRequested | TrainingRequested, Field(discriminator="type")]
LifecycleEvent = Annotated[
    TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled, Field(discriminator="type")
]
AnyEvent = Annotated[
    GenerationRequested
    | TrainingRequested
    | TaskStarted
    | TaskProgress
    | TaskSucceeded
    | TaskFailed
    | TaskCancelled
    | CancelRequested
    | TaskStatusRecord
    | DeadLetter,
    Field(discriminator="type"),
]

_ANY: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_LIFECYCLE: TypeAdapter[LifecycleEvent] = TypeAdapter(LifecycleEvent)

EVENT_MODELS: tuple[type[Envelope], ...] = (
    GenerationRequested,
    TrainingRequested,
    TaskStarted,
    TaskProgress,
    TaskSucceeded,
    TaskFailed,
    TaskCancelled,
    CancelRequested,
    TaskStatusRecord,
    DeadLetter,
)


def parse_event(raw: bytes | str) -> AnyEvent:
    """Validate raw JSON as any acefarm event; raises `pydantic.ValidationError`."""
    return _ANY.validate_json(raw)


def parse_lifecycle(raw: bytes | str) -> LifecycleEvent:
    """Validate raw JSON as a lifecycle event; raises `pydantic.ValidationError`."""
    return _LIFECYCLE.validate_json(raw)
