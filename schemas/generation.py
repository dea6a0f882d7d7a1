"""Generation parameters and the `POST /generate` body."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from schemas.ids import LORA_ID_PATTERN, MODEL_NAME_PATTERN
from schemas.planning import KEY_NAME, LmOptions
from schemas.rules import WHITESPACE, Base64Audio, Matches, OneOf, StrictNumbers, any_case, cross_field
from schemas.tenancy import Priority
from schemas.webhooks import WebhookRequest

MAX_DURATION_S = 600.0
MIN_DURATION_S = 1.0

LANGUAGE = Matches(
    f"^{WHITESPACE}*(?:[A-Za-z]{{2,3}}(?:-[A-Za-z0-9]{{2,8}})?|{any_case('unknown')}){WHITESPACE}*$",
    "vocal_language must be an ISO 639 code such as 'en', 'zh', 'ja', or 'unknown'",
)
"""An ISO 639 language code with an optional subtag, or 'unknown' (any letter case; stored lower-case)."""
TIME_SIGNATURE = OneOf((2, 3, 4, 6), "time_signature must be 2, 3, 4 or 6 (beats per bar)")


class TaskType(StrEnum):
    """ACE-Step 1.5 task types."""

    TEXT2MUSIC = "text2music"
    COVER = "cover"
    REPAINT = "repaint"
    EXTEND = "extend"
    EXTRACT = "extract"
    LEGO = "lego"
    COMPLETE = "complete"


STEM_TASKS: frozenset[TaskType] = frozenset({TaskType.EXTRACT, TaskType.LEGO, TaskType.COMPLETE})
"""Tasks that ACE-Step 1.5 base/SFT checkpoints do and turbo checkpoints do not."""


class AudioFormat(StrEnum):
    """Encodings for stored results."""

    WAV = "wav"
    FLAC = "flac"
    MP3 = "mp3"
    OPUS = "opus"
    """Opus in an Ogg container (`.opus`)."""
    AAC = "aac"
    """AAC-LC in an MPEG-4 container (`.m4a`)."""
    OGG = "ogg"
    """Vorbis in an Ogg container (`.ogg`)."""


CONTENT_TYPES: dict[AudioFormat, str] = {
    AudioFormat.WAV: "audio/wav",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.OPUS: "audio/ogg; codecs=opus",
    AudioFormat.AAC: "audio/mp4",
    AudioFormat.OGG: "audio/ogg",
}
"""The media type each stored format is served with."""

FILE_EXTENSIONS: dict[AudioFormat, str] = {fmt: fmt.value for fmt in AudioFormat} | {AudioFormat.AAC: "m4a"}
"""The file extension of each stored format (`aac` files are `.m4a`)."""

MAX_LORAS = 4
"""Most LoRAs one job may blend."""


class LoraWeight(StrictNumbers):
    """One trained LoRA applied to a job, at a strength."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lora_id: Annotated[str, Field(pattern=LORA_ID_PATTERN, description="A trained LoRA's id.")]
    scale: Annotated[float, Field(ge=0.0, le=2.0, description="Strength (0 = no effect).")] = 1.0


TASKS_NEEDING_SOURCE = frozenset(
    {TaskType.REPAINT, TaskType.EXTEND, TaskType.EXTRACT, TaskType.LEGO, TaskType.COMPLETE}
)


class GenerationParams(LmOptions):
    """Everything the model needs for one generation job, except inline audio bytes.

    The LM fields (`LmOptions`: `thinking`, `use_cot_*`, `lm_*`, `audio_codes`) come first.

    Audio inputs travel as storage keys (`src_audio_key`, `reference_audio_key`) so events stay
    small; the gateway stores inline base64 audio before publishing.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=False)

    prompt: Annotated[str, Field(min_length=1, max_length=2000, description="Caption: genre, mood, instruments.")]
    duration: Annotated[
        float,
        Field(ge=MIN_DURATION_S, le=MAX_DURATION_S, description="Length of the result in seconds."),
    ]
    lyrics: Annotated[str, Field(max_length=10_000, description="Lyrics with [verse]/[chorus] tags.")] = ""
    style: Annotated[
        str | None,
        Field(max_length=500, description="Style tags, appended to the caption as ', style: <style>'."),
    ] = None
    instrumental: Annotated[bool, Field(description="No vocals: lyrics are replaced by '[instrumental]'.")] = False
    bpm: Annotated[int | None, Field(ge=30, le=300, description="Tempo in beats per minute.")] = None
    key: Annotated[Annotated[str, KEY_NAME] | None, Field(description="Key and scale, e.g. 'C major', 'F# minor'.")] = (
        None
    )
    time_signature: Annotated[
        Annotated[int, TIME_SIGNATURE] | None, Field(description="Beats per bar: 2, 3, 4 or 6.")
    ] = None
    vocal_language: Annotated[
        str, LANGUAGE, Field(description="ISO 639 language code of the lyrics, or 'unknown'.")
    ] = "en"
    seed: Annotated[
        int | None,
        Field(ge=0, le=2**32 - 1, description="Random seed; same seed and request give the same audio."),
    ] = None
    inference_steps: Annotated[int, Field(ge=1, le=200, description="Diffusion steps (turbo: 8).")] = 8
    guidance_scale: Annotated[
        float, Field(ge=0.0, le=30.0, description="Classifier-free guidance (ignored by turbo checkpoints).")
    ] = 7.0
    shift: Annotated[float, Field(ge=1.0, le=10.0, description="Timestep schedule shift.")] = 3.0
    batch_size: Annotated[int, Field(ge=1, le=8, description="Takes per job; each is stored.")] = 1
    audio_format: Annotated[AudioFormat, Field(description="wav, flac, mp3, opus, aac (.m4a) or ogg (Vorbis).")] = (
        AudioFormat.WAV
    )
    task_type: Annotated[TaskType, Field(description="What to do with the inputs.")] = TaskType.TEXT2MUSIC
    src_audio_key: Annotated[str | None, Field(description="Storage key of the source audio.")] = None
    reference_audio_key: Annotated[str | None, Field(description="Storage key of the timbre reference.")] = None
    repaint_start: Annotated[float | None, Field(ge=0.0, description="Repaint/extend window start (s).")] = None
    repaint_end: Annotated[float | None, Field(ge=0.0, description="Repaint/extend window end (s).")] = None
    cover_strength: Annotated[float, Field(ge=0.0, le=1.0, description="How closely a cover follows the source.")] = 1.0
    track_name: Annotated[
        str | None, Field(max_length=64, description="Stem for extract/lego, e.g. 'vocals', 'drums'.")
    ] = None
    complete_track_classes: Annotated[
        list[str] | None, Field(max_length=16, description="Stems to add for 'complete'.")
    ] = None
    lora_id: Annotated[
        str | None,
        Field(
            pattern=LORA_ID_PATTERN,
            validation_alias=AliasChoices("lora_id", "style_id"),
            description="Trained LoRA style to apply (alias: style_id).",
        ),
    ] = None
    lora_scale: Annotated[float, Field(ge=0.0, le=2.0, description="Strength of the LoRA (0 = base model).")] = 1.0
    model: Annotated[
        str | None,
        Field(
            pattern=MODEL_NAME_PATTERN,
            description="The model to run on, e.g. 'turbo', 'base', 'sft' (GET /models lists them); "
            "default: the farm's default model, or for a task it cannot do, a model that can.",
        ),
    ] = None
    loras: Annotated[
        list[LoraWeight],
        Field(
            max_length=MAX_LORAS,
            description=f"Up to {MAX_LORAS} LoRAs blended at their scales (all 0 = base model); "
            "`lora_id` + `lora_scale` is the one-LoRA shorthand and is normalised into this list.",
        ),
    ] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _strip_key(cls, value: str | None) -> str | None:
        return value.strip() if value else value

    @field_validator("vocal_language")
    @classmethod
    def _normalise_language(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_task_inputs(self) -> Self:
        self._check_audio_for_task(self.src_audio_key is not None, self.reference_audio_key is not None)
        return self

    @model_validator(mode="after")
    def _normalise_loras(self) -> Self:
        """`lora_id` + `lora_scale` become the one entry of `loras`; ids in `loras` are unique."""
        if self.lora_id is not None:
            single = [LoraWeight(lora_id=self.lora_id, scale=self.lora_scale)]
            if self.loras and self.loras != single:
                raise cross_field("give either lora_id (with lora_scale) or loras, not both")
            self.loras = single
        ids = [lora.lora_id for lora in self.loras]
        if len(set(ids)) != len(ids):
            raise cross_field(f"loras names a LoRA more than once: {ids}")
        return self

    def _check_audio_for_task(self, has_src: bool, has_ref: bool) -> None:
        task = self.task_type
        if task in TASKS_NEEDING_SOURCE and not has_src:
            raise cross_field(f"task_type '{task.value}' needs source audio (src_audio)")
        if task is TaskType.COVER and not (has_src or has_ref):
            raise cross_field("task_type 'cover' needs src_audio or reference_audio")
        if task is TaskType.REPAINT and (self.repaint_start is None or self.repaint_end is None):
            raise cross_field("task_type 'repaint' needs repaint_start and repaint_end (seconds)")
        start, end = self.repaint_start, self.repaint_end
        if start is not None and end is not None and end <= start:
            raise cross_field("repaint_end must be greater than repaint_start")
        if task in (TaskType.EXTRACT, TaskType.LEGO) and not self.track_name:
            raise cross_field(f"task_type '{task.value}' needs track_name (e.g. 'vocals', 'drums')")
        if task is TaskType.COMPLETE and not self.complete_track_classes:
            raise cross_field("task_type 'complete' needs complete_track_classes (e.g. ['drums', 'bass'])")

    def caption(self) -> str:
        """The text prompt given to the model: `prompt`, plus `style` when set."""
        return f"{self.prompt}, style: {self.style}" if self.style else self.prompt

    def lyrics_for_model(self) -> str:
        """Lyrics as given to the model; '[instrumental]' when instrumental or empty."""
        if self.instrumental or not self.lyrics.strip():
            return "[instrumental]"
        return self.lyrics


class GenerateRequest(GenerationParams, WebhookRequest):
    """Body of `POST /generate`: generation parameters, optional inline base64 audio and an optional webhook."""

    reference_audio: Annotated[
        Base64Audio | None, Field(description="Base64 audio (wav/flac/mp3/ogg) used as a timbre reference.")
    ] = None
    src_audio: Annotated[
        Base64Audio | None,
        Field(description="Base64 source audio for cover, repaint, extend, extract, lego, complete."),
    ] = None
    priority: Annotated[
        Priority, Field(description="Queue priority: high, normal or batch; the API key must allow it (403).")
    ] = Priority.NORMAL

    @model_validator(mode="after")
    def _check_task_inputs(self) -> Self:
        for role in ("src", "reference"):
            if getattr(self, f"{role}_audio") is not None and getattr(self, f"{role}_audio_key") is not None:
                raise cross_field(f"give either {role}_audio (base64) or {role}_audio_key, not both")
        self._check_audio_for_task(
            self.src_audio_key is not None or self.src_audio is not None,
            self.reference_audio_key is not None or self.reference_audio is not None,
        )
        return self

    def to_params(self, *, src_audio_key: str | None, reference_audio_key: str | None) -> GenerationParams:
        """The event-ready parameters, with inline audio replaced by storage keys.

        Built from this request's values without validating them again: every field passed the same rules
        here (`GenerationParams`' validators included), and a key replaces inline audio the request checked.
        """
        values = {name: getattr(self, name) for name in GenerationParams.__pydantic_fields__}
        values["src_audio_key"] = src_audio_key or self.src_audio_key
        values["reference_audio_key"] = reference_audio_key or self.reference_audio_key
        return GenerationParams.model_construct(**values)
