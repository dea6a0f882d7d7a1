"""Build dataset zips of sine tones for the LoRA tests."""

from __future__ import annotations

import io
import struct
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


_EOCD = struct.Struct("<4s4H2LH")


def declare_entries(path: Path, entries: int) -> Path:
    """Rewrite the entry counts in the zip's end record (the zip has no comment)."""
    data = bytearray(path.read_bytes())
    fields = list(_EOCD.unpack_from(data, len(data) - _EOCD.size))
    fields[3] = fields[4] = entries
    _EOCD.pack_into(data, len(data) - _EOCD.size, *fields)
    path.write_bytes(bytes(data))
    return path


def to_zip64(path: Path, entries: int | None = None) -> Path:
    """Give the zip (no comment) a zip64 end record, declaring `entries` (default: the real count)."""
    data = path.read_bytes()
    end = len(data) - _EOCD.size
    _, _, _, _, count, size, offset, _ = _EOCD.unpack_from(data, end)
    count = count if entries is None else entries
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(data[:end] + record + locator + eocd)
    return path
