"""Captions for training clips: from the dataset's sidecars, else the style name and trigger tag.

`Annotator` is the seam for automatic annotation (e.g. ACE-Step's 5 Hz language model writing a
caption, bpm and key per clip): the trainer asks the configured annotator for every clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from acefarm.model.datasets import DatasetTrack


@dataclass(frozen=True)
class Annotation:
    """What the model is told about one clip."""

    caption: str
    lyrics: str = ""
    bpm: int | None = None
    key: str | None = None


class Annotator(Protocol):
    """Gives every training clip a caption (and lyrics, bpm, key when known)."""

    def annotate(self, track: DatasetTrack, clip: np.ndarray, start_s: float) -> Annotation:
        """Describe `clip` (float32 [2, samples], 48 kHz) cut from `track` at `start_s` seconds."""
        ...


class SidecarAnnotator:
    """The track's metadata caption, else the style name; the trigger tag (if any) goes first."""

    def __init__(self, style_name: str, trigger_tag: str | None = None) -> None:
        self.style_name = style_name
        self.trigger_tag = trigger_tag

    def annotate(self, track: DatasetTrack, clip: np.ndarray, start_s: float) -> Annotation:
        """Caption from `metadata.csv/json` or the style name; lyrics from `<track>.txt`."""
        caption = track.caption or self.style_name
        if self.trigger_tag:
            caption = f"{self.trigger_tag}, {caption}"
        return Annotation(caption=caption, lyrics=track.lyrics or "", bpm=track.bpm, key=track.key)
