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
from schemas.results import GenerationResult
from schemas.status import Stage, StoredFile, TaskStatus
from schemas.training import TrainingOptions

SCHEMA_VERSION: Literal[1] = 1
_TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MAX_ATTEMPT = 64
MAX_WORKER = 512
MAX_MESSAGE = 1000
MAX_ERROR = 4000
MAX_REASON = 200
MAX_KEY = 1024
"""Storage keys: S3's limit."""
MAX_DEAD_VALUE = 100_000
Attempt = Annotated[str, Field(min_length=1, max_length=MAX_ATTEMPT, description="Unique per delivery of the job.")]


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


class GenerationRequested(Envelope):
    """A generation job. Topic: `acefarm.generation.requests`."""

    type: Literal["generation.requested"] = "generation.requested"
    params: GenerationParams
    callback_url: Annotated[str, Field(max_length=2048)] | None = None


class TrainingRequested(Envelope):
    """A LoRA training job. Topic: `acefarm.training.requests`."""

    type: Literal["training.requested"] = "training.requested"
    lora_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    style_name: Annotated[str, Field(min_length=1, max_length=100)]
    dataset_key: Annotated[str, Field(max_length=MAX_KEY, description="Storage key of the uploaded zip.")]
    options: TrainingOptions = Field(default_factory=TrainingOptions)


class TaskStarted(Envelope):
    """A worker took the job. Topic: `acefarm.task.events`."""

    type: Literal["task.started"] = "task.started"
    attempt: Attempt
    worker: Annotated[str, Field(max_length=MAX_WORKER)]


class TaskProgress(Envelope):
    """Progress of a running job. Topic: `acefarm.task.events`."""

    type: Literal["task.progress"] = "task.progress"
    attempt: Attempt
    stage: Stage
    progress: Annotated[float, Field(ge=0.0, le=1.0)]
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    message: Annotated[str, Field(max_length=MAX_MESSAGE)] | None = None


class TaskSucceeded(Envelope):
    """A job finished; its files are stored. Topic: `acefarm.task.events`."""

    type: Literal["task.succeeded"] = "task.succeeded"
    attempt: Attempt
    files: list[StoredFile] = Field(default_factory=list)
    lora_id: Annotated[str, Field(max_length=64)] | None = None
    loss: float | None = None
    result: GenerationResult | None = Field(
        default=None, description="Generation jobs: the seeds, metadata, model, LoRAs and timings used."
    )


class TaskFailed(Envelope):
    """A job failed with a readable reason. Topic: `acefarm.task.events`."""

    type: Literal["task.failed"] = "task.failed"
    attempt: Attempt | None = None
    error: Annotated[str, Field(max_length=MAX_ERROR)]
    reason: Literal["invalid_input", "out_of_memory", "unsupported", "engine_error", "timeout", "internal"] = (
        "engine_error"
    )


class TaskCancelled(Envelope):
    """A job was cancelled, queued or running. Topic: `acefarm.task.events`."""

    type: Literal["task.cancelled"] = "task.cancelled"
    attempt: Attempt | None = None
    reason: Annotated[str, Field(max_length=MAX_REASON)] = "cancelled by request"


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
    source_topic: Annotated[str, Field(max_length=249)]
    partition: int
    offset: int
    key: Annotated[str, Field(max_length=MAX_KEY)] | None = None
    value: Annotated[
        str, Field(max_length=MAX_DEAD_VALUE, description="The raw value, decoded as UTF-8 with replacement.")
    ]
    error: Annotated[str, Field(max_length=MAX_ERROR)]
    consumer: Annotated[str, Field(max_length=MAX_WORKER)]

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
        """The dead letter for a raw record; keyed by its key when that is a valid task id, else 'unknown'.

        The key, value and error are cut to their maximum lengths."""
        text_key = key.decode(errors="replace") if key else None
        return cls(
            task_id=text_key if text_key and re.match(_TASK_ID, text_key) else "unknown",
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=text_key[:MAX_KEY] if text_key is not None else None,
            value=(value or b"").decode(errors="replace")[:MAX_DEAD_VALUE],
            error=error[:MAX_ERROR],
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
