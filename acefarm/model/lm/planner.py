"""The 5 Hz LM's jobs: plan a song (metadata, caption, audio codes), sample, format, understand.

Each job builds its prompt with `protocol`, lays its output out as decode segments (constrained:
user-given values forced, others drawn from the valid values) and runs it on an `LmBackend`.
Planning has two phases like ACE-Step's: the `<think>` block, then the audio codes conditioned on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from acefarm.model.lm.decode import (
    Choice,
    Codes,
    Forced,
    FreeLine,
    FreeText,
    Hooks,
    LmBackend,
    LmCall,
    Sampling,
    Segment,
)
from acefarm.model.lm.fields import CHOICES, DURATION_RANGE
from acefarm.model.lm.protocol import (
    CODES_PER_SECOND,
    THINK_CLOSE,
    THINK_KEYS,
    THINK_OPEN,
    Instruction,
    Metas,
    caption_and_lyrics,
    chat,
    parse_output,
    think_block,
)

CAPTION_MAX_TOKENS = 256
THINK_MAX_TOKENS = 512
"""Unconstrained decoding: the longest `<think>` block read."""


@dataclass(frozen=True)
class PlanInput:
    """What planning a generation starts from: the user's caption, lyrics and metadata (duration known)."""

    caption: str
    lyrics: str
    given: Metas
    decide: frozenset[str]
    """The `<think>` keys the LM decides (those not given)."""
    codes: bool
    """Also write the audio codes (`thinking`)."""
    negative_prompt: str | None = None


@dataclass
class LmOutcome:
    """An LM job's result: the final metadata, which keys the LM decided, lyrics and codes, timings."""

    metas: Metas
    decided: list[str] = field(default_factory=list)
    lyrics: str | None = None
    codes: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    tokens_per_second: float | None = None


class FiveHzLm:
    """ACE-Step's 5 Hz LM on a backend; `constrained` turns constrained decoding on for every job."""

    def __init__(self, backend: LmBackend, *, lyrics_max_tokens: int = 1024) -> None:
        self.backend = backend
        self.lyrics_max_tokens = lyrics_max_tokens

    # ------------------------------------------------------------------ jobs

    def plan(self, job: PlanInput, sampling: Sampling, hooks: Hooks, *, constrained: bool = True) -> LmOutcome:
        """Phase 1 (`<think>`: the keys in `job.decide`), then phase 2 (codes for `given.duration`) if `job.codes`."""
        outcome = LmOutcome(metas=job.given)
        decide = [key for key in THINK_KEYS if key in job.decide and getattr(job.given, key) is None]
        if decide:
            started = time.monotonic()
            user = caption_and_lyrics(job.caption, job.lyrics)
            uncond = caption_and_lyrics(job.negative_prompt, job.lyrics)
            call = LmCall(
                prompt=self._render(Instruction.CODES, user),
                unconditional=self._render(Instruction.CODES, uncond),
                segments=self._think_segments(job.given, decide, constrained),
            )
            written = self._run_think(call, sampling, hooks, constrained)
            outcome.metas = _keep(written, decide).merged(job.given)
            outcome.decided = [key for key in decide if getattr(outcome.metas, key) is not None]
            outcome.seconds["think"] = round(time.monotonic() - started, 4)
        if job.codes:
            started = time.monotonic()
            outcome.codes = self.codes(job.caption, job.lyrics, outcome.metas, sampling, hooks, job.negative_prompt)
            outcome.seconds["codes"] = round(time.monotonic() - started, 4)
        outcome.tokens_per_second = self.backend.tokens_per_second()
        return outcome

    def codes(
        self,
        caption: str,
        lyrics: str,
        metas: Metas,
        sampling: Sampling,
        hooks: Hooks,
        negative_prompt: str | None = None,
    ) -> str:
        """Audio codes for `metas.duration` seconds (five per second) conditioned on the `<think>` block."""
        duration = metas.duration or DURATION_RANGE[0]
        user = caption_and_lyrics(caption, lyrics)
        uncond_user = caption_and_lyrics(negative_prompt or caption, lyrics)
        call = LmCall(
            prompt=self._render(Instruction.CODES, user, assistant=think_block(metas)),
            unconditional=self._render(Instruction.CODES, uncond_user, assistant=think_block(Metas())),
            segments=(Codes(max(1, round(duration * CODES_PER_SECOND))),),
        )
        return self.backend.run(call, sampling, hooks)[0]

    def sample(
        self,
        query: str,
        instrumental: bool,
        given: Metas,
        sampling: Sampling,
        hooks: Hooks,
        *,
        constrained: bool = True,
    ) -> LmOutcome:
        """A caption, lyrics and metadata from a one-line description (keys in `given` are kept)."""
        user = f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}"
        return self._describe(Instruction.SAMPLE, user, given, sampling, hooks, constrained)

    def format(
        self, caption: str, lyrics: str, given: Metas, sampling: Sampling, hooks: Hooks, *, constrained: bool = True
    ) -> LmOutcome:
        """The user's caption and lyrics rewritten, and the metadata they imply (keys in `given` are kept)."""
        user = caption_and_lyrics(caption, lyrics, trailing_newline=False)
        return self._describe(Instruction.FORMAT, user, given, sampling, hooks, constrained)

    def understand(
        self,
        codes: str,
        sampling: Sampling,
        hooks: Hooks,
        *,
        constrained: bool = True,
        given: Metas | None = None,
        lyrics: bool = True,
    ) -> LmOutcome:
        """Caption, lyrics and metadata of the music that `codes` (audio code tokens) encode; keys in `given`
        are kept (forced when `constrained`); `lyrics=False` stops after the `<think>` block."""
        return self._describe(
            Instruction.UNDERSTAND, codes, given or Metas(), sampling, hooks, constrained, lyrics=lyrics
        )

    # ------------------------------------------------------------------ parts

    def _describe(
        self,
        instruction: Instruction,
        user: str,
        given: Metas,
        sampling: Sampling,
        hooks: Hooks,
        constrained: bool,
        *,
        lyrics: bool = True,
    ) -> LmOutcome:
        started = time.monotonic()
        decide = [key for key in THINK_KEYS if getattr(given, key) is None]
        segments = self._think_segments(given, decide, constrained)
        if lyrics:
            segments = (*segments, FreeText(self.lyrics_max_tokens))
        call = LmCall(
            prompt=self._render(instruction, user), unconditional=self._render(instruction, ""), segments=segments
        )
        texts = self.backend.run(call, sampling, hooks)
        parsed = parse_output("".join(texts))
        metas = _keep(parsed.metas, decide).merged(given)
        return LmOutcome(
            metas=metas,
            decided=[key for key in decide if getattr(metas, key) is not None],
            lyrics=parsed.after_think,
            seconds={"describe": round(time.monotonic() - started, 4)},
            tokens_per_second=self.backend.tokens_per_second(),
        )

    def _render(self, instruction: Instruction, user: str, *, assistant: str | None = None) -> str:
        messages = chat(instruction, user, assistant)
        text = self.backend.render_chat(messages, add_generation_prompt=assistant is None)
        return text if assistant is None or text.endswith("\n") else text + "\n"

    def _think_segments(self, given: Metas, decide: Iterable[str], constrained: bool) -> tuple[Segment, ...]:
        """The `<think>` block: given keys forced, decided keys constrained (or all free when not `constrained`)."""
        if not constrained:
            return (Forced(f"{THINK_OPEN}\n"), FreeText(THINK_MAX_TOKENS, stop=THINK_CLOSE))
        wanted = set(decide)
        segments: list[Segment] = [Forced(f"{THINK_OPEN}\n")]
        for key in THINK_KEYS:
            value = getattr(given, key)
            if value is not None:
                segments.append(Forced(f"{key}: {' '.join(str(value).split())}\n"))
            elif key in wanted:
                segments.append(Forced(f"{key}: "))
                segments.append(FreeLine(CAPTION_MAX_TOKENS) if key == "caption" else Choice(CHOICES[key]))
        segments.append(Forced(THINK_CLOSE))
        return tuple(segments)

    def _run_think(self, call: LmCall, sampling: Sampling, hooks: Hooks, constrained: bool) -> Metas:
        text = "".join(self.backend.run(call, sampling, hooks))
        if not constrained and THINK_CLOSE not in text:
            text += THINK_CLOSE
        return parse_output(text).metas


def _keep(metas: Metas, keys: Iterable[str]) -> Metas:
    """Only `keys` of `metas`, each dropped unless valid (unconstrained output may be anything)."""
    valid: dict[str, object] = {}
    for key in keys:
        value = getattr(metas, key)
        if value is None:
            continue
        if key == "caption":
            text = " ".join(str(value).split())
            if text:
                valid[key] = text[:2000]
        elif str(value) in CHOICES[key].values:
            valid[key] = value
    return Metas(**valid)  # type: ignore[arg-type]
