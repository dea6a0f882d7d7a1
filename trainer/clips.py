"""Decode dataset tracks and cut them into training clips of about `clip_seconds`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acefarm.infra.audio import SAMPLE_RATE, decode_audio
from acefarm.model.datasets import DatasetTrack
from trainer.annotate import Annotation, Annotator


@dataclass
class Clip:
    """One training example: 48 kHz stereo audio and what it is."""

    track: str
    start_s: float
    audio: np.ndarray
    """float32 [2, samples] at 48 kHz."""
    annotation: Annotation

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.audio.shape[1] / SAMPLE_RATE


def clip_bounds(total_samples: int, clip_samples: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) windows of `clip_samples`; a remainder shorter than half a clip joins the
    previous window (a track shorter than one clip is one clip)."""
    if total_samples <= clip_samples:
        return [(0, total_samples)]
    bounds = [(start, min(start + clip_samples, total_samples)) for start in range(0, total_samples, clip_samples)]
    last_start, last_end = bounds[-1]
    if last_end - last_start < clip_samples // 2:
        bounds.pop()
        bounds[-1] = (bounds[-1][0], last_end)
    return bounds


def make_clips(tracks: list[DatasetTrack], clip_seconds: float, annotator: Annotator) -> list[Clip]:
    """Decode every track to 48 kHz stereo, cut it into clips and annotate each clip."""
    clip_samples = round(clip_seconds * SAMPLE_RATE)
    clips: list[Clip] = []
    for track in tracks:
        audio = load_track(track.path)
        for start, end in clip_bounds(audio.shape[1], clip_samples):
            piece = np.ascontiguousarray(audio[:, start:end])
            start_s = start / SAMPLE_RATE
            clips.append(Clip(track.name, start_s, piece, annotator.annotate(track, piece, start_s)))
    return clips


def load_track(path: Path) -> np.ndarray:
    """Decode one unpacked track (already validated) to float32 [2, samples] at 48 kHz."""
    audio, _ = decode_audio(path.read_bytes())
    return audio
