"""Task status as served by `GET /status/{task_id}` and pushed over SSE."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.results import GenerationResult


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


class Stage(StrEnum):
    """Where a running job is."""

    QUEUED = "queued"
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
    result: GenerationResult | None = None
    lora_id: str | None = None
    worker: str | None = None
    attempt: str | None = None
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
    eta_s: float | None = None
    message: str | None = None
    file_url: str | None = Field(default=None, description="URL of the first result file.")
    file_urls: list[str] = Field(default_factory=list)
    result: GenerationResult | None = Field(
        default=None, description="After a generation succeeds: the seeds, metadata, model, LoRAs and timings used."
    )
    error: str | None = None
    lora_id: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int


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
