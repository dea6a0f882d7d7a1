"""The values each metadata field of the `<think>` block may take (what constrained decoding allows)."""

from __future__ import annotations

from dataclasses import dataclass

BPM_RANGE = (30, 300)
DURATION_RANGE = (10, 600)
TIME_SIGNATURES = (2, 3, 4, 6)
KEY_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEY_ACCIDENTALS = ("", "#", "b")
KEY_MODES = ("major", "minor")
KEYS: tuple[str, ...] = tuple(f"{n}{a} {m}" for n in KEY_NOTES for a in KEY_ACCIDENTALS for m in KEY_MODES)
"""Keys the LM may choose: a note, an optional ASCII accidental, major or minor (42)."""
LANGUAGES: tuple[str, ...] = (
    "ar",
    "az",
    "bg",
    "bn",
    "ca",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hr",
    "ht",
    "hu",
    "id",
    "is",
    "it",
    "ja",
    "ko",
    "la",
    "lt",
    "ms",
    "ne",
    "nl",
    "no",
    "pa",
    "pl",
    "pt",
    "ro",
    "ru",
    "sa",
    "sk",
    "sr",
    "sv",
    "sw",
    "ta",
    "te",
    "th",
    "tl",
    "tr",
    "uk",
    "ur",
    "vi",
    "yue",
    "zh",
    "unknown",
)
"""Vocal languages the LM knows (ISO 639 codes), and 'unknown'."""


@dataclass(frozen=True)
class FieldChoice:
    """A field whose value is one of `values` (written as text, ended by a newline)."""

    name: str
    values: tuple[str, ...]

    @property
    def charset(self) -> frozenset[str]:
        """Every character a value (or its closing newline) can contain."""
        return frozenset("".join(self.values) + "\n")


def _numbers(low: int, high: int) -> tuple[str, ...]:
    return tuple(str(n) for n in range(low, high + 1))


CHOICES: dict[str, FieldChoice] = {
    "bpm": FieldChoice("bpm", _numbers(*BPM_RANGE)),
    "duration": FieldChoice("duration", _numbers(*DURATION_RANGE)),
    "keyscale": FieldChoice("keyscale", KEYS),
    "language": FieldChoice("language", LANGUAGES),
    "timesignature": FieldChoice("timesignature", tuple(str(n) for n in TIME_SIGNATURES)),
}
"""The constrained fields; `caption` is free text on one logical line."""
