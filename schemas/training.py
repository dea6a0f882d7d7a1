"""LoRA training options and the stored adapter manifest."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingOptions(BaseModel):
    """Hyper-parameters of a LoRA run; defaults follow ACE-Step's own trainer."""

    model_config = ConfigDict(extra="forbid")

    rank: Annotated[int, Field(ge=1, le=256, description="LoRA rank r.")] = 64
    alpha: Annotated[int | None, Field(ge=1, le=512, description="LoRA alpha; default 2 x rank.")] = None
    learning_rate: Annotated[float, Field(gt=0, le=1e-2, description="AdamW learning rate.")] = 1e-4
    steps: Annotated[int, Field(ge=1, le=100_000, description="Optimizer steps.")] = 1000
    warmup_steps: Annotated[int, Field(ge=0, le=10_000, description="Linear warm-up before cosine decay.")] = 100
    batch_size: Annotated[int, Field(ge=1, le=32)] = 1
    clip_seconds: Annotated[float, Field(ge=5, le=240, description="Tracks are split into clips this long.")] = 30.0
    trigger_tag: Annotated[
        str | None, Field(max_length=100, description="Tag prepended to every caption; use it in prompts.")
    ] = None
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000, description="Steps between checkpoints.")] = 100
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42

    @property
    def effective_alpha(self) -> int:
        """Alpha, defaulting to twice the rank."""
        return self.alpha if self.alpha is not None else 2 * self.rank


CaptionSource = Literal["metadata", "lm", "style name"]
"""Where a clip's caption came from: the dataset's `metadata.csv/json`, the 5 Hz LM's understand step, or
the LoRA's style name (nothing else known)."""


class ClipCaption(BaseModel):
    """What the model was told about one training clip, and where its caption came from."""

    start_s: Annotated[float, Field(description="Where the clip starts in its track, in seconds.")]
    caption: Annotated[str, Field(description="The caption trained on (trigger tag included).")]
    caption_source: CaptionSource
    bpm: int | None = None
    key: str | None = None


class TrackInfo(BaseModel):
    """One training track as found in the uploaded zip (`clips`: filled in by the trainer)."""

    name: str
    duration_s: float
    caption: str | None = None
    lyrics: str | None = None
    bpm: int | None = None
    key: str | None = None
    clips: Annotated[list[ClipCaption], Field(description="The track's training clips, in order.")] = []


class LoraManifest(BaseModel):
    """Stored next to an adapter: what it is and how it was made."""

    model_config = ConfigDict(extra="forbid")

    lora_id: str
    style_name: str
    base_model: str
    base_model_revision: str | None = None
    options: TrainingOptions
    tracks: list[TrackInfo]
    final_loss: float | None = None
    steps_done: int
    created_at: datetime
    task_id: str
    owner: Annotated[
        str | None, Field(description="Who trained it (the training request's owner); None: only admins see it.")
    ] = None
    public: Annotated[
        bool, Field(description="Whether every user may list it and generate with it (without its lyrics/captions).")
    ] = False
