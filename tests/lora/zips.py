"""Build dataset zips of sine tones for the LoRA tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, freq: float = 440.0, sample_rate: int = 44_100, fmt: str = "WAV") -> bytes:
    """A mono sine tone, encoded."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), sample_rate, format=fmt)
    return buffer.getvalue()


def write_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip holding `files` (name -> bytes)."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def tone_dataset(path: Path, tracks: int = 3, seconds: float = 3.0) -> Path:
    """A valid dataset: `tracks` tones (the first with lyrics) and a metadata.csv captioning the second."""
    files = {f"tones/tone{i}.wav": tone(seconds, 220.0 * (i + 1)) for i in range(tracks)}
    files["tones/tone0.txt"] = b"[verse]\nla la la\n"
    files["tones/metadata.csv"] = b"file,caption,bpm,key\ntone1.wav,pure sine tone,120,A minor\n"
    return write_zip(path, files)
