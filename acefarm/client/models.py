"""Results the client returns beyond the contract's own models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from schemas.status import TaskStatusResponse
from schemas.training import LoraManifest


class UploadedAudio(BaseModel):
    """Answer of `POST /uploads`: pass `key` as `src_audio_key` or `reference_audio_key`."""

    key: str
    content_type: str
    size_bytes: int
    duration_s: float


@dataclass(frozen=True)
class GenerateResult:
    """A finished generation: its final status and the files downloaded (empty unless `download_to` was given)."""

    status: TaskStatusResponse
    files: list[Path] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        """The job's id."""
        return self.status.task_id


@dataclass(frozen=True)
class TrainingResult:
    """A finished LoRA training: its final status and the new LoRA's manifest (use `lora.lora_id` to generate)."""

    status: TaskStatusResponse
    lora: LoraManifest
