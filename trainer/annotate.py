"""Captions for training clips: from the dataset's metadata, else the style name; the trigger tag goes first.

`Annotator` is the seam for automatic annotation: the trainer asks the configured annotator for every
clip. `SidecarAnnotator` reads the dataset; `trainer.lm_captions.LmAnnotator` has ACE-Step's 5 Hz
language model fill in what the dataset leaves out (caption, bpm, key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from acefarm.model.datasets import DatasetTrack
from schemas.training import CaptionSource, ClipCaption


@dataclass(frozen=True)
class Annotation:
    """What the model is told about one clip, and where its caption came from."""

    caption: str
    lyrics: str = ""
    bpm: int | None = None
    key: str | None = None
    source: CaptionSource = "style name"

    def shown(self, start_s: float) -> ClipCaption:
        """The clip's entry in the LoRA manifest."""
        return ClipCaption(
            start_s=round(start_s, 3), caption=self.caption, caption_source=self.source, bpm=self.bpm, key=self.key
        )


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
        """Caption, bpm and key from `metadata.csv/json` (caption: else the style name); lyrics from `<track>.txt`."""
        source: CaptionSource = "metadata" if track.caption else "style name"
        caption = self.tagged(track.caption or self.style_name)
        return Annotation(caption=caption, lyrics=track.lyrics or "", bpm=track.bpm, key=track.key, source=source)

    def tagged(self, caption: str) -> str:
        """`caption` with the trigger tag in front (when there is one)."""
        return f"{self.trigger_tag}, {caption}" if self.trigger_tag else caption
