"""The 5 Hz LM planning stage in the contract: LM request fields, the sample/format/understand bodies,
and the `result` an LM job reports. Field names follow ACE-Step's API (`thinking`, `use_cot_*`, `lm_*`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.rules import WHITESPACE, Base64Audio, Matches, StrictNumbers, any_case

AUDIO_CODES_MAX_CHARS = 200_000
"""About 600 s of codes (five per second, up to 22 characters each), with room."""
AUDIO_CODES = Matches(
    f"^(?:{WHITESPACE}*<\\|audio_code_[0-9]{{1,6}}\\|>)+{WHITESPACE}*$",
    "audio_codes must be a string of '<|audio_code_N|>' tokens, e.g. '<|audio_code_12|>'",
)
"""Audio codes as the LM writes them: `<|audio_code_N|>` tokens, whitespace between them allowed."""
KEY_NAME = Matches(
    f"^{WHITESPACE}*[A-Ga-g](?:#|[Bb])?{WHITESPACE}+(?:{any_case('major')}|{any_case('minor')}){WHITESPACE}*$",
    "key must look like 'C major', 'F# minor' or 'Bb major'",
)
"""A key and scale such as 'C major' or 'F# minor' (any letter case, surrounding whitespace allowed)."""
COT_FIELDS = ("use_cot_metas", "use_cot_caption", "use_cot_language")


class LmSampling(StrictNumbers):
    """How the 5 Hz LM samples (ACE-Step's `lm_*` parameters) and whether its metadata is constrained."""

    model_config = ConfigDict(extra="forbid")

    lm_temperature: Annotated[float, Field(ge=0.0, le=2.0, description="LM sampling temperature (0: greedy).")] = 0.85
    lm_top_p: Annotated[float | None, Field(gt=0.0, le=1.0, description="LM nucleus sampling (1 or null: off).")] = 0.9
    lm_top_k: Annotated[int | None, Field(ge=0, le=100_000, description="LM top-k sampling (0 or null: off).")] = None
    lm_cfg_scale: Annotated[
        float, Field(ge=1.0, le=10.0, description="LM classifier-free guidance (above 1 enables it).")
    ] = 2.0
    lm_negative_prompt: Annotated[
        str | None, Field(max_length=500, description="Caption the LM's guidance steers away from.")
    ] = None
    constrained_decoding: Annotated[
        bool, Field(description="Constrain the LM's metadata to valid values (bpm 30-300, known keys, ...).")
    ] = True


class LmOptions(LmSampling):
    """The LM fields of a generation request; any of them routes the job through the planning stage."""

    thinking: Annotated[
        bool,
        Field(description="The 5 Hz LM plans the song (metadata, audio codes) before the DiT: best quality."),
    ] = False
    use_cot_metas: Annotated[
        bool | None, Field(description="LM decides bpm, key and time signature left unset (default: `thinking`).")
    ] = None
    use_cot_caption: Annotated[bool | None, Field(description="LM rewrites the caption (default: `thinking`).")] = None
    use_cot_language: Annotated[
        bool | None, Field(description="LM detects the vocal language (default: `thinking`).")
    ] = None
    audio_codes: Annotated[
        Annotated[str, Field(max_length=AUDIO_CODES_MAX_CHARS), AUDIO_CODES] | None,
        Field(
            description="Audio codes ('<|audio_code_N|>...', 5 per second) to condition the DiT on; skips the LM.",
        ),
    ] = None

    def cot(self, name: str) -> bool:
        """Whether `use_cot_<name>` is on (unset follows `thinking`)."""
        value: bool | None = getattr(self, f"use_cot_{name}")
        return self.thinking if value is None else value

    def needs_lm(self) -> bool:
        """Whether the job goes through the planning stage: LM work asked for and no codes given."""
        return self.audio_codes is None and (self.thinking or any(getattr(self, name) for name in COT_FIELDS))


class PlanMode(StrEnum):
    """What a planning job does."""

    GENERATE = "generate"
    """Plan a generation (metadata, caption, codes), then forward it to the DiT."""
    SAMPLE = "sample"
    """A one-line description → caption, lyrics, metadata (then optionally the song)."""
    FORMAT = "format"
    """Clean up a caption, lyrics and metadata."""
    UNDERSTAND = "understand"
    """Audio → caption, lyrics, bpm, key, time signature, language."""


class LmResult(BaseModel):
    """What the LM decided or described: the `result` of a task that went through the LM."""

    model_config = ConfigDict(extra="forbid")

    caption: str | None = None
    lyrics: str | None = None
    bpm: int | None = None
    key: str | None = None
    time_signature: int | None = None
    vocal_language: str | None = None
    duration: float | None = None
    decided_by_lm: Annotated[
        list[str], Field(description="Which of these fields the LM chose (the others came from the request).")
    ] = Field(default_factory=list)
    audio_codes_key: Annotated[
        str | None, Field(description="Storage key of the audio codes the LM wrote (text; served at /files/{key}).")
    ] = None
    audio_codes_count: int | None = None
    lm_seconds: Annotated[
        dict[str, float], Field(description="Seconds per LM phase (think, codes, describe, tokenize).")
    ] = Field(default_factory=dict)


class SampleInput(LmSampling):
    """Body of `POST /sample`: a description → caption, lyrics and metadata, and the song if `generate`."""

    query: Annotated[str, Field(min_length=1, max_length=2000, description="A short description of the song.")]
    instrumental: bool = False
    vocal_language: Annotated[str | None, Field(max_length=16, description="Language of the lyrics to write.")] = None
    duration: Annotated[float | None, Field(ge=10.0, le=600.0, description="Length (s); the LM picks when unset.")] = (
        None
    )
    generate: Annotated[bool, Field(description="Also generate the song (a planned generation).")] = False
    thinking: Annotated[bool, Field(description="With `generate`: the LM also writes audio codes.")] = True
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None


class FormatInput(LmSampling):
    """Body of `POST /format`: a caption, lyrics and metadata to clean up (given metadata is kept)."""

    prompt: Annotated[str, Field(min_length=1, max_length=2000, description="The caption to rewrite.")]
    lyrics: Annotated[str, Field(max_length=10_000)] = ""
    bpm: Annotated[int | None, Field(ge=30, le=300)] = None
    key: Annotated[str, KEY_NAME] | None = None
    time_signature: Literal[2, 3, 4, 6] | None = None
    duration: Annotated[float | None, Field(ge=10.0, le=600.0)] = None
    vocal_language: Annotated[str | None, Field(max_length=16)] = None
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None


class UnderstandInput(LmSampling):
    """An understand job on Kafka: audio (by storage key) → caption, lyrics and metadata."""

    audio_key: Annotated[str, Field(max_length=1024, description="Storage key of the audio (POST /uploads).")]
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None


ONE_AUDIO = ("audio", "audio_key")
"""`POST /understand` takes exactly one of these."""


def _one_audio_schema(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": [name], "properties": {name: {"type": "string"}}} for name in ONE_AUDIO]


class UnderstandRequest(LmSampling):
    """Body of `POST /understand`: the audio inline (base64) or as an uploaded key (the schema's `oneOf`)."""

    model_config = ConfigDict(json_schema_extra=_one_audio_schema)

    audio: Annotated[Base64Audio | None, Field(description="Base64 audio (wav/flac/mp3/ogg).")] = None
    audio_key: Annotated[str | None, Field(max_length=1024, description="Storage key from POST /uploads.")] = None
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None

    @model_validator(mode="after")
    def _one_audio(self) -> Self:
        if (self.audio is None) == (self.audio_key is None):
            raise ValueError("give exactly one of audio (base64) or audio_key")
        return self

    def to_input(self, audio_key: str) -> UnderstandInput:
        """The event-ready input, with inline audio replaced by its storage key."""
        return UnderstandInput(**self.model_dump(exclude={"audio", "audio_key"}), audio_key=audio_key)
