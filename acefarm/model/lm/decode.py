"""What one LM call decodes: a prompt, then a list of segments, each forced, constrained or free.

The planner describes an output's layout (e.g. `<think>`, `bpm: ` + a value from 30-300, `caption: `
+ one line of free text, ..., `</think>`, then exactly N audio codes) and a backend (`LmBackend`)
decodes it. Constraining the layout this way is acefarm's own constrained decoding: structure and
user-given values are forced, metadata values can only be valid ones, codes can only be codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from acefarm.model.lm.fields import FieldChoice


@dataclass(frozen=True)
class Forced:
    """Text fed to the model as if it had written it (no sampling)."""

    text: str


@dataclass(frozen=True)
class Choice:
    """One value of `field`, then a newline; only tokens that keep the text a prefix of a value are allowed."""

    field: FieldChoice


@dataclass(frozen=True)
class FreeLine:
    """Free text up to a newline not followed by an indented continuation line (YAML style); no codes."""

    max_tokens: int = 256


@dataclass(frozen=True)
class FreeText:
    """Free text until end of sequence, `stop` (included) or `max_tokens`; no codes."""

    max_tokens: int
    stop: str | None = None


@dataclass(frozen=True)
class Codes:
    """Exactly `count` audio code tokens (nothing else is allowed)."""

    count: int


Segment = Forced | Choice | FreeLine | FreeText | Codes


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn (names as in ACE-Step's API: `lm_temperature`, `lm_top_k`, ...)."""

    temperature: float = 0.85
    top_k: int | None = None
    top_p: float | None = 0.9
    cfg_scale: float = 1.0
    """Above 1: classifier-free guidance against the call's unconditional prompt."""
    seed: int | None = None


@dataclass
class Hooks:
    """Called by a backend while it decodes: after each sampled token, and to ask whether to stop."""

    on_token: Callable[[], None] = field(default=lambda: None)
    cancelled: Callable[[], bool] = field(default=lambda: False)


class DecodeCancelled(Exception):
    """`Hooks.cancelled` turned true while decoding."""


@dataclass(frozen=True)
class LmCall:
    """One LM call: the chat-formatted prompt, its unconditional twin for CFG, and the output layout."""

    prompt: str
    segments: tuple[Segment, ...]
    unconditional: str | None = None


class LmBackend(Protocol):
    """Decodes `LmCall`s; the transformers backend is the reference, faster ones (vLLM) may plug in."""

    name: str
    device: str

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        """`messages` through the model's chat template, as text."""
        ...

    def run(self, call: LmCall, sampling: Sampling, hooks: Hooks) -> list[str]:
        """The text of each segment of `call` (forced ones included), in order."""
        ...

    def tokens_per_second(self) -> float | None:
        """Sampled tokens per second over the backend's last call (None before any)."""
        ...
