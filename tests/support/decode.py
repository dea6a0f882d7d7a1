"""Decode any stored result format in tests: libsndfile for wav/flac/mp3/ogg/opus, PyAV for `.m4a`."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from acefarm.infra.m4a import decode_m4a


def decode_result(data: bytes) -> tuple[np.ndarray, int]:
    """float32 [channels, samples] and the sample rate of an encoded result file."""
    if data[4:8] == b"ftyp":  # an MPEG-4 container
        return decode_m4a(data)
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio.T), int(rate)
