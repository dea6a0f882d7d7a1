"""Kafka events: one envelope, one model per event type, and a parser for any of them.

Every event is JSON with `event_id`, `type`, `task_id`, `occurred_at` and `schema_version`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from schemas import topics
from schemas.generation import GenerationParams
from schemas.ids import LORA_ID_PATTERN, OWNER_PATTERN, TASK_ID_PATTERN
from schemas.planning import FormatInput, LmResult, PlanMode, SampleInput, UnderstandInput
from schemas.results import GenerationUsed
from schemas.status import Stage, StoredFile, TaskStatus
from schemas.tenancy import Priority
from schemas.training import TrainingOptions
from schemas.webhooks import MAX_WEBHOOK_URL, WebhookEvent, WebhookRequest, WebhookState

SCHEMA_VERSION: Literal[1] = 1
MAX_ATTEMPT = 64
MAX_WORKER = 512
MAX_MESSAGE = 1000
MAX_ERROR = 4000
MAX_REASON = 200
MAX_KEY = 1024
"""Storage keys: S3's limit."""
MAX_DEAD_VALUE = 100_000
MAX_ATTEMPT_NUMBER = 1000
Attempt = Annotated[str, Field(min_length=1, max_length=MAX_ATTEMPT, description="Unique per delivery of the job.")]


def new_event_id() -> str:
    """A fresh random event id."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class RawRecord(Protocol):
    """Where a Kafka record sits and what it holds (aiokafka's and faust's records both fit)."""

    @property
    def topic(self) -> str:
        """The record's topic."""

    @property
    def partition(self) -> int:
        """The record's partition."""

    @property
    def offset(self) -> int:
        """The record's offset."""

    @property
    def key(self) -> Any:
        """The raw key (bytes when it has one)."""

    @property
    def value(self) -> Any:
        """The raw value (bytes when it has one)."""


class Envelope(BaseModel):
    """Fields shared by every event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    task_id: Annotated[str, Field(pattern=TASK_ID_PATTERN, description="Also the Kafka message key.")]
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """JSON encoding used on the wire."""
        return self.model_dump_json().encode()


_OWNER_DOC = "Who submitted it (the gateway stamps the key's owner); names its fair-queue lane. None: 'anonymous'."
_PRIORITY_DOC = "Queue priority: `high`, `normal` or `batch` (weights of the fair scheduler, docs/scheduling.md)."


class SubmittedRequest(WebhookRequest):
    """What every submitted job request carries besides its input: who sent it, how urgent it is, the hash of
    the body it came from (idempotent retries) and its webhook."""

    owner: Annotated[str | None, Field(pattern=OWNER_PATTERN, description=_OWNER_DOC)] = None
    request_hash: Annotated[
        str | None,
        Field(
            pattern=r"^[0-9a-f]{64}$",
            description="SHA-256 of the submitted request body; set by the gateway to tell an idempotent "
            "retry from a different request under the same Idempotency-Key.",
        ),
    ] = None
    priority: Priority = Field(default=Priority.NORMAL, description=_PRIORITY_DOC)


class GenerationRequested(Envelope, SubmittedRequest):
    """A generation job. Topics: `acefarm.generation.requests` (intake), `acefarm.generation.ready` (admitted)."""

    type: Literal["generation.requested"] = "generation.requested"
    params: GenerationParams
    plan: Annotated[
        LmResult | None, Field(description="Set by the planner: what the LM decided (reported with the result).")
    ] = None


class PlanningRequested(Envelope, SubmittedRequest):
    """A 5 Hz LM job. Topic: `acefarm.planning.requests`; the input of its `mode` is set, the others not.

    `generate` plans `params` and forwards a `GenerationRequested` (same task id) to the DiT;
    `sample` with `generate` forwards one too; `format`, `understand` and plain `sample` end here.
    """

    type: Literal["planning.requested"] = "planning.requested"
    mode: PlanMode
    params: GenerationParams | None = None
    sample: SampleInput | None = None
    format: FormatInput | None = None
    understand: UnderstandInput | None = None

    @model_validator(mode="after")
    def _input_of_mode(self) -> Self:
        inputs = {PlanMode.GENERATE: "params", PlanMode.SAMPLE: "sample", PlanMode.FORMAT: "format"}
        inputs[PlanMode.UNDERSTAND] = "understand"
        for mode, name in inputs.items():
            if (getattr(self, name) is not None) != (mode is self.mode):
                raise ValueError(f"mode '{self.mode.value}' takes its input in '{inputs[self.mode]}' only")
        return self


class TrainingRequested(Envelope, WebhookRequest):
    """A LoRA training job. Topic: `acefarm.training.requests`."""

    type: Literal["training.requested"] = "training.requested"
    lora_id: Annotated[str, Field(pattern=LORA_ID_PATTERN)]
    style_name: Annotated[str, Field(min_length=1, max_length=100)]
    dataset_key: Annotated[str, Field(max_length=MAX_KEY, description="Storage key of the uploaded zip.")]
    options: TrainingOptions = Field(default_factory=TrainingOptions)
    owner: Annotated[str | None, Field(pattern=OWNER_PATTERN, description=_OWNER_DOC)] = None


class TaskStarted(Envelope):
    """A worker took the job. Topic: `acefarm.task.events`."""

    type: Literal["task.started"] = "task.started"
    attempt: Attempt
    worker: Annotated[str, Field(max_length=MAX_WORKER)]
    attempt_number: Annotated[
        int, Field(ge=1, le=MAX_ATTEMPT_NUMBER, description="How many times the job was started, this one included.")
    ] = 1


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
    result: LmResult | None = None
    used: GenerationUsed | None = Field(
        default=None, description="Generation jobs: the seeds, metadata, model, LoRAs and timings used."
    )


class TaskFailed(Envelope):
    """A job failed with a readable reason. Topic: `acefarm.task.events`."""

    type: Literal["task.failed"] = "task.failed"
    attempt: Attempt | None = None
    error: Annotated[str, Field(max_length=MAX_ERROR)]
    reason: Annotated[
        Literal[
            "invalid_input", "out_of_memory", "unsupported", "engine_error", "timeout", "expired", "poison", "internal"
        ],
        Field(
            description="timeout: passed its deadline; expired: not started within its queue lifetime; "
            "poison: its attempts ended their workers too often (crash or hang)."
        ),
    ] = "engine_error"


class TaskCancelled(Envelope):
    """A job was cancelled, queued or running. Topic: `acefarm.task.events`."""

    type: Literal["task.cancelled"] = "task.cancelled"
    attempt: Attempt | None = None
    reason: Annotated[str, Field(max_length=MAX_REASON)] = "cancelled by request"


class CancelRequested(Envelope):
    """Ask workers to skip or stop a job. Topic: `acefarm.task.control`."""

    type: Literal["task.cancel_requested"] = "task.cancel_requested"


class WebhookDelivery(Envelope):
    """What became of a webhook delivery, for the task's status. Topic: `acefarm.task.events`.

    Published by the webhook service when a delivery fails (`retrying`, then `failed` once it gives up),
    and when one succeeds if it is a `completed` delivery or an earlier attempt had failed."""

    type: Literal["webhook.delivery"] = "webhook.delivery"
    delivery_id: Annotated[str, Field(min_length=1, max_length=MAX_ATTEMPT)]
    event: WebhookEvent
    state: WebhookState
    attempts: Annotated[int, Field(ge=1)]
    last_error: Annotated[str, Field(max_length=MAX_MESSAGE)] | None = None


class WebhookRetry(Envelope):
    """A webhook delivery to try again once `due_at` has passed. Topic: `acefarm.webhooks.retries`."""

    type: Literal["webhook.retry"] = "webhook.retry"
    delivery_id: Annotated[str, Field(min_length=1, max_length=MAX_ATTEMPT)]
    event: WebhookEvent
    url: Annotated[str, Field(max_length=MAX_WEBHOOK_URL)]
    body: Annotated[str, Field(max_length=MAX_DEAD_VALUE, description="The exact JSON body every attempt sends.")]
    attempt: Annotated[int, Field(ge=2, description="The number of the attempt to make.")]
    first_attempt_at: datetime
    due_at: datetime


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
    def of_record(cls, record: RawRecord, error: str, consumer: str) -> DeadLetter:
        """The dead letter for a raw record; keyed by its key when that is a valid task id, else 'unknown'.

        The key, value and error are cut to their maximum lengths."""
        key, value = record.key, record.value
        text_key = key.decode(errors="replace") if isinstance(key, bytes) else None
        return cls(
            task_id=text_key if text_key and re.match(TASK_ID_PATTERN, text_key) else "unknown",
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=text_key[:MAX_KEY] if text_key is not None else None,
            value=(value if isinstance(value, bytes) else b"").decode(errors="replace")[:MAX_DEAD_VALUE],
            error=error[:MAX_ERROR],
            consumer=consumer,
        )


RequestEvent = Annotated[GenerationRequested | PlanningRequested | TrainingRequested, Field(discriminator="type")]
LifecycleEvent = Annotated[
    TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled, Field(discriminator="type")
]
TaskEvent = (
    GenerationRequested
    | PlanningRequested
    | TrainingRequested
    | TaskStarted
    | TaskProgress
    | TaskSucceeded
    | TaskFailed
    | TaskCancelled
    | CancelRequested
    | WebhookDelivery
)
"""Every event that changes a task's status (what the status fold reads)."""
AnyEvent = Annotated[TaskEvent | WebhookRetry | TaskStatusRecord | DeadLetter, Field(discriminator="type")]

_ANY: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_LIFECYCLE: TypeAdapter[LifecycleEvent] = TypeAdapter(LifecycleEvent)

EVENT_MODELS: tuple[type[Envelope], ...] = (
    GenerationRequested,
    PlanningRequested,
    TrainingRequested,
    TaskStarted,
    TaskProgress,
    TaskSucceeded,
    TaskFailed,
    TaskCancelled,
    CancelRequested,
    WebhookDelivery,
    WebhookRetry,
    TaskStatusRecord,
    DeadLetter,
)


EVENTS_BY_TOPIC: dict[str, tuple[type[Envelope], ...]] = {
    topics.GENERATION_REQUESTS: (GenerationRequested,),
    topics.PLANNING_REQUESTS: (PlanningRequested,),
    topics.GENERATION_READY: (GenerationRequested,),
    topics.TRAINING_REQUESTS: (TrainingRequested,),
    topics.TASK_EVENTS: (TaskStarted, TaskProgress, TaskSucceeded, TaskFailed, TaskCancelled, WebhookDelivery),
    topics.TASK_CONTROL: (CancelRequested,),
    topics.WEBHOOK_RETRIES: (WebhookRetry,),
    topics.TASK_STATUS: (TaskStatusRecord,),
    topics.DEAD_LETTER: (DeadLetter,),
}
"""The event types each topic may carry: the one list every producer, consumer and test reads (a named model
pool's intake carries what `GENERATION_REQUESTS` does: `events_for_topic`)."""


def events_for_topic(topic: str) -> tuple[type[Envelope], ...]:
    """The event types `topic` may carry: `EVENTS_BY_TOPIC`, with every model pool's intake and ready topic
    as the default pool's."""
    if topics.is_generation_requests(topic):
        return EVENTS_BY_TOPIC[topics.GENERATION_REQUESTS]
    if topics.is_generation_ready(topic):
        return EVENTS_BY_TOPIC[topics.GENERATION_READY]
    return EVENTS_BY_TOPIC.get(topic, ())


def parse_event(raw: bytes | str) -> AnyEvent:
    """Validate raw JSON as any acefarm event; raises `pydantic.ValidationError`."""
    return _ANY.validate_json(raw)


def parse_lifecycle(raw: bytes | str) -> LifecycleEvent:
    """Validate raw JSON as a lifecycle event; raises `pydantic.ValidationError`."""
    return _LIFECYCLE.validate_json(raw)


class InvalidRecord(ValueError):
    """A Kafka record that is not a valid event for its topic; the message says what is wrong."""


def validate_record(topic: str, key: bytes | None, value: bytes | None) -> AnyEvent:
    """The one rule for a valid record, applied by every consumer (streams fold, scheduler, workers).

    The value must parse as an event, its type must belong on `topic` (`events_for_topic`) and the
    record key must equal its task id. Raises `InvalidRecord` saying which rule failed.
    """
    if not value:
        raise InvalidRecord("empty value")
    try:
        event = parse_event(value)
    except ValidationError as error:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in error.errors()[:10]]
        raise InvalidRecord("invalid event: " + "; ".join(parts)) from None
    allowed = events_for_topic(topic)
    if not isinstance(event, allowed):
        names = ", ".join(str(kind.model_fields["type"].default) for kind in allowed) or "no"
        raise InvalidRecord(f"event type {event.type!r} does not belong on topic {topic!r} (expected a {names} event)")
    if key is None or key.decode(errors="replace") != event.task_id:
        raise InvalidRecord(f"record key {key!r} must equal the task id {event.task_id!r}")
    return event
