"""What a finished generation job used: seeds, metadata (and where each value came from), model, LoRAs, timings."""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.generation import GenerationParams, LoraWeight
from schemas.planning import LmResult

MetadataField = Literal["bpm", "key", "time_signature", "language", "duration"]
"""The song metadata a result reports."""

Seconds = Annotated[float, Field(ge=0.0)]


class ValueSource(StrEnum):
    """Where a metadata value came from."""

    USER = "user"
    """The request set it."""
    LM = "lm"
    """The 5 Hz language model decided it (planning stage)."""
    DEFAULT = "default"
    """The request left it at its default (for bpm, key and time signature: the model chose freely)."""


class MetadataSources(BaseModel):
    """The source of each metadata value."""

    model_config = ConfigDict(extra="forbid")

    bpm: ValueSource
    key: ValueSource
    time_signature: ValueSource
    language: ValueSource
    duration: ValueSource


class SongMetadata(BaseModel):
    """The metadata the model was conditioned on, with the source of each value."""

    model_config = ConfigDict(extra="forbid")

    bpm: int | None = Field(description="Tempo; null: none given, the model chose.")
    key: str | None = Field(description="Key and scale; null: none given, the model chose.")
    time_signature: int | None = Field(description="Beats per bar; null: none given, the model chose.")
    language: str = Field(description="Language of the lyrics (ISO 639 or 'unknown').")
    duration: Seconds = Field(description="Length of each take in seconds.")
    source: MetadataSources


class ModelUsed(BaseModel):
    """The model that ran the job."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The model pool's name (as in `GET /models` and the request's `model`).")
    engine: str = Field(description="The engine: 'acestep' for ACE-Step 1.5 through diffusers.")
    id: str = Field(description="Hub model id, or the local checkpoint directory's name.")
    revision: str | None = Field(default=None, description="Hub revision; null: the default branch or local.")


class StageTimings(BaseModel):
    """Wall-clock seconds per stage of one job (null: the stage did not happen or was not reported)."""

    model_config = ConfigDict(extra="forbid")

    queue_s: Seconds | None = Field(default=None, description="From the request's creation to its start.")
    inputs_s: Seconds | None = Field(default=None, description="Fetching and decoding input audio.")
    encode_s: Seconds | None = Field(default=None, description="Text, lyrics and audio conditioning.")
    diffusion_s: Seconds | None = Field(default=None, description="The diffusion steps.")
    decode_s: Seconds | None = Field(default=None, description="Latents to audio (VAE).")
    upload_s: Seconds | None = Field(default=None, description="Encoding and storing the takes.")
    total_s: Seconds | None = Field(default=None, description="From the start to the stored takes.")


class GenerationUsed(BaseModel):
    """What a generation job used, reported with its files (`used` on the success event and the status)."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[int] = Field(description="The seed of each take, in the order of the files.")
    metadata: SongMetadata
    model: ModelUsed
    loras: list[LoraWeight] = Field(default_factory=list, description="The LoRAs applied, at their scales.")
    timings: StageTimings = Field(default_factory=StageTimings)


_REQUEST_FIELDS: dict[MetadataField, str] = {
    "bpm": "bpm",
    "key": "key",
    "time_signature": "time_signature",
    "language": "vocal_language",
    "duration": "duration",
}
"""Each metadata field's request field."""


def used_metadata(params: GenerationParams, lm_fields: Collection[MetadataField] = ()) -> SongMetadata:
    """The metadata `params` conditions the model on; a value is `lm` when named in `lm_fields`, `default`
    when it equals the request field's default, else `user`."""
    sources: dict[str, ValueSource] = {}
    for name, request_field in _REQUEST_FIELDS.items():
        info = GenerationParams.model_fields[request_field]
        value = getattr(params, request_field)
        if name in lm_fields:
            sources[name] = ValueSource.LM
        elif not info.is_required() and value == info.get_default(call_default_factory=True):
            sources[name] = ValueSource.DEFAULT
        else:
            sources[name] = ValueSource.USER
    return SongMetadata(
        bpm=params.bpm,
        key=params.key,
        time_signature=params.time_signature,
        language=params.vocal_language,
        duration=params.duration,
        source=MetadataSources.model_validate(sources),
    )


def lm_fields(plan: LmResult | None) -> set[MetadataField]:
    """The metadata fields a planned generation's LM decided (`plan.decided_by_lm`, request field names)."""
    if plan is None:
        return set()
    decided = set(plan.decided_by_lm)
    return {name for name, request_field in _REQUEST_FIELDS.items() if request_field in decided or name in decided}
