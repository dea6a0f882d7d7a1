"""The 5 Hz LM's text protocol: chat prompts, the `<think>` metadata block, audio code tokens, parsing.

ACE-Step 1.5's language model was fine-tuned on a fixed layout, so the instruction lines, section
headers (`# Caption`, `# Lyric`), the YAML keys inside `<think>...</think>` and the
`<|audio_code_N|>` tokens must match it exactly; everything else here is acefarm's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CODES_PER_SECOND = 5
"""The LM writes five audio codes per second of music."""
CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")


def code_token(index: int) -> str:
    """The token text of audio code `index`."""
    return f"<|audio_code_{index}|>"


class Instruction(StrEnum):
    """The system instruction of each LM task (text the model was trained on)."""

    CODES = "Generate audio semantic tokens based on the given conditions:"
    UNDERSTAND = "Understand the given musical conditions and describe the audio semantics accordingly:"
    SAMPLE = "Expand the user's input into a more detailed and specific musical description:"
    FORMAT = "Format the user's input into a more detailed and specific musical description:"


Message = dict[str, str]


def chat(instruction: Instruction, user: str, assistant: str | None = None) -> list[Message]:
    """The chat messages of one LM call: system instruction, user content, optional assistant prefix."""
    messages = [
        {"role": "system", "content": f"# Instruction\n{instruction.value}\n\n"},
        {"role": "user", "content": user},
    ]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def caption_and_lyrics(caption: str | None, lyrics: str, *, trailing_newline: bool = True) -> str:
    """The user section `# Caption ... # Lyric ...`; no caption section when `caption` is None."""
    end = "\n" if trailing_newline else ""
    if caption is None:
        return f"# Lyric\n{lyrics}{end}"
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}{end}"


@dataclass(frozen=True)
class Metas:
    """Song metadata as the LM writes it (any field may be unknown)."""

    bpm: int | None = None
    caption: str | None = None
    duration: int | None = None
    keyscale: str | None = None
    language: str | None = None
    timesignature: int | None = None

    def merged(self, other: Metas) -> Metas:
        """These values, with the unknown ones taken from `other`."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(self) if getattr(self, f.name) is None})

    def known(self) -> dict[str, Any]:
        """The known fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


THINK_KEYS: tuple[str, ...] = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
"""The keys of the `<think>` block, in the (sorted) order the model learned."""


def think_block(metas: Metas) -> str:
    """`<think>` + one `key: value` line per known field (sorted keys) + `</think>`."""
    lines = [f"{key}: {_one_line(str(value))}" for key, value in metas.known().items()]
    body = "\n".join(sorted(lines))
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}" if body else f"{THINK_OPEN}\n{THINK_CLOSE}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Parsed:
    """What one LM output holds: metadata, the text after `</think>` (lyrics), and audio codes."""

    metas: Metas = field(default_factory=Metas)
    after_think: str = ""
    codes: str = ""


def parse_output(text: str) -> Parsed:
    """Parse LM output text; tolerant of missing blocks and YAML continuation lines."""
    codes = "".join(code_token(int(n)) for n in CODE_RE.findall(text))
    head, close, tail = text.partition(THINK_CLOSE)
    body = head.split(THINK_OPEN, 1)[-1] if close else ""
    values: dict[str, list[str]] = {}
    current: str | None = None
    for line in body.splitlines():
        key, colon, rest = line.partition(":")
        if colon and line[:1].strip() and key.strip().lower() in THINK_KEYS:
            current = key.strip().lower()
            values[current] = [rest.strip()] if rest.strip() else []
        elif current is not None and line[:1] in (" ", "\t") and line.strip():
            values[current].append(line.strip())
    metas = Metas(**{key: _value(key, " ".join(parts)) for key, parts in values.items() if parts})
    lyrics = CODE_RE.sub("", tail).strip()
    lyrics = re.sub(r"^#\s*Lyrics?\s*\n", "", lyrics, flags=re.IGNORECASE).strip()
    return Parsed(metas=metas, after_think=lyrics, codes=codes)


def _value(key: str, raw: str) -> Any:
    raw = raw.strip()
    if key in ("bpm", "duration", "timesignature"):
        match = re.match(r"^(\d+)", raw)
        return int(match.group(1)) if match else None
    return raw or None


def count_codes(codes: str) -> int:
    """How many audio code tokens `codes` holds."""
    return len(CODE_RE.findall(codes))
