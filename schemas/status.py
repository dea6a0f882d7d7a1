"""Task status as served by `GET /status/{task_id}` and pushed over SSE."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.planning import LmResult, PlanMode
from schemas.results import GenerationUsed
from schemas.webhooks import WebhookEvent, WebhookStatus, WebhookTarget


class TaskState(StrEnum):
    """Lifecycle states; success, failed and cancelled are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether no further change can follow."""
        return self in (TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED)


class TaskKind(StrEnum):
    """What a task does."""

    GENERATION = "generation"
    TRAINING = "training"
    SAMPLE = "sample"
    FORMAT = "format"
    UNDERSTAND = "understand"


PLANNED_KINDS: dict[PlanMode, TaskKind] = {
    PlanMode.GENERATE: TaskKind.GENERATION,
    PlanMode.SAMPLE: TaskKind.SAMPLE,
    PlanMode.FORMAT: TaskKind.FORMAT,
    PlanMode.UNDERSTAND: TaskKind.UNDERSTAND,
}
"""The kind of task a planning request of each mode is."""


class Stage(StrEnum):
    """Where a running job is."""

    QUEUED = "queued"
    PLANNING = "planning"
    LOADING = "loading"
    ENCODING = "encoding"
    DIFFUSION = "diffusion"
    DECODING = "decoding"
    UPLOADING = "uploading"
    PREPARING = "preparing"
    TRAINING = "training"
    CHECKPOINTING = "checkpointing"


class StoredFile(BaseModel):
    """One stored result file."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(description="Storage key; served at /files/{key}.")]
    content_type: str
    size_bytes: Annotated[int, Field(ge=0)]
    duration_s: Annotated[float | None, Field(ge=0)] = None
    sample_rate: int | None = None
    channels: int | None = None


class TaskStatus(BaseModel):
    """The folded state of one task."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    kind: TaskKind = TaskKind.GENERATION
    status: TaskState
    progress: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    stage: Stage | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    message: str | None = None
    error: str | None = None
    files: list[StoredFile] = Field(default_factory=list)
    lora_id: str | None = None
    result: LmResult | None = None
    used: GenerationUsed | None = None
    worker: str | None = None
    attempt: str | None = None
    owner: Annotated[str | None, Field(description="Who submitted it (the request event's owner).")] = None
    request_hash: Annotated[
        str | None, Field(description="SHA-256 of the submitted body (the request event's), for idempotent retries.")
    ] = None
    webhook: WebhookTarget | None = None
    webhook_status: WebhookStatus | None = None
    attempts: Annotated[int, Field(ge=0, description="How many times a worker started the task.")] = 0
    created_at: datetime
    updated_at: datetime
    version: Annotated[int, Field(ge=0, description="Increases by one with every change; the SSE event id.")] = 0


class TaskStatusResponse(BaseModel):
    """Body of `GET /status/{task_id}`."""

    task_id: str
    kind: TaskKind
    status: TaskState
    progress: float
    stage: Stage | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = Field(
        default=None,
        description="Estimated seconds left: while pending, until a GPU starts the job (from the scheduler's "
        "queue); while running, until it finishes. None when unknown.",
    )
    queue_position: int | None = Field(
        default=None,
        ge=0,
        description="While pending: the jobs that start before this one (0: it is next). None when not "
        "pending, or while the gateway cannot tell (e.g. the job is already admitted to a GPU's queue).",
    )
    message: str | None = None
    file_url: str | None = Field(
        default=None, description="URL of the first result file; signed, so it works without headers until it expires."
    )
    file_urls: list[str] = Field(default_factory=list, description="Signed URLs of every result file.")
    events_url: str | None = Field(
        default=None,
        description="Signed URL of the task's live events; works without headers (EventSource) until it expires.",
    )
    error: str | None = None
    lora_id: str | None = None
    owner: str | None = Field(default=None, description="Who submitted the task.")
    webhook_status: Annotated[
        WebhookStatus | None, Field(description="The latest recorded webhook delivery, when the job has a webhook.")
    ] = None
    attempts: int = Field(default=0, description="How many times a worker started the task.")
    result: LmResult | None = Field(default=None, description="What the 5 Hz LM decided or described (LM tasks).")
    used: GenerationUsed | None = Field(
        default=None,
        description="After a generation succeeds: the seeds, metadata (with sources), model, LoRAs and timings used.",
    )
    audio_codes_url: str | None = Field(default=None, description="URL of the audio codes the LM wrote.")
    created_at: datetime
    updated_at: datetime
    version: int


class TaskList(BaseModel):
    """Body of `GET /tasks`: the statuses asked for, newest first, and where the next page starts."""

    tasks: list[TaskStatusResponse]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; None on the last page (and for `ids`)."
    )


class WebhookPayload(BaseModel):
    """Body of every webhook POST (see `schemas.webhooks` and docs/webhooks.md)."""

    delivery_id: Annotated[str, Field(description="Idempotency id: the same on every retry of this delivery.")]
    event: WebhookEvent
    task_id: str
    status: Annotated[TaskStatusResponse, Field(description="The task as `GET /status/{task_id}` shows it.")]


class TaskAccepted(BaseModel):
    """Body of a 202 answer to a submission."""

    task_id: str
    status: TaskState = TaskState.PENDING
    lora_id: str | None = None


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer."""

    status_code: int
    detail: str
    extra: dict[str, object] | list[object] | None = None
