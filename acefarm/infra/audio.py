"""Audio I/O without torch: decode and validate user audio, encode results (numpy, soundfile, soxr).

The gateway uses `decode_audio` to validate uploads, so nothing here may import torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from schemas.generation import AudioFormat

SAMPLE_RATE = 48_000
"""ACE-Step 1.5 works at 48 kHz stereo."""

_WRITE_FORMATS: dict[AudioFormat, tuple[str, str]] = {
    AudioFormat.WAV: ("WAV", "PCM_16"),
    AudioFormat.FLAC: ("FLAC", "PCM_16"),
    AudioFormat.MP3: ("MP3", "MPEG_LAYER_III"),
}
_READABLE = "WAV, FLAC, MP3 or OGG"


class AudioInputError(ValueError):
    """Input audio is unusable; the message says why in words a user can act on."""


@dataclass(frozen=True)
class AudioInfo:
    """What the decoder found in the input (before conversion)."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        """Length of the input in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def mp3_supported() -> bool:
    """Whether the linked libsndfile can write MP3 (needs libsndfile >= 1.1)."""
    return "MP3" in sf.available_formats()


def _open(data: bytes) -> sf.SoundFile:
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioInputError(f"not a readable audio file ({_READABLE} expected): {error}") from None


def probe(data: bytes) -> AudioInfo:
    """Read only the header of `data`; `AudioInputError` if it is not audio."""
    if not data:
        raise AudioInputError("the audio is empty (0 bytes)")
    with _open(data) as f:
        return AudioInfo(f.format, f.subtype, int(f.samplerate), int(f.channels), int(f.frames))


def probe_duration(data: bytes) -> float:
    """Duration of encoded audio in seconds, from its header; `AudioInputError` if not audio."""
    return probe(data).duration_s


def decode_audio(
    data: bytes, *, max_bytes: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode wav/flac/mp3/ogg bytes to float32 [2, samples] at 48 kHz, checking the limits.

    Mono is duplicated to stereo, more than two channels are averaged down to two, any sample rate is
    resampled with soxr. Raises `AudioInputError` for empty, oversized, too long, silent-length or
    undecodable input.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioInputError(f"the audio is {_mb(len(data))}; the limit is {_mb(max_bytes)}")
    info = probe(data)
    if max_seconds is not None and info.duration_s > max_seconds:
        raise AudioInputError(f"the audio lasts {info.duration_s:.1f} s; the limit is {max_seconds:g} s")
    try:
        with _open(data) as f:
            frames = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioInputError(f"the audio could not be decoded: {error}") from None
    if frames.shape[0] == 0:
        raise AudioInputError("the audio contains no samples")
    seconds = frames.shape[0] / info.sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioInputError(f"the audio lasts {seconds:.1f} s; the limit is {max_seconds:g} s")
    if not np.isfinite(frames).all():
        raise AudioInputError("the audio contains invalid (NaN or infinite) samples")
    return to_model_audio(frames, info.sample_rate), info


def to_model_audio(frames: np.ndarray, sample_rate: int) -> np.ndarray:
    """Convert [samples, channels] float audio at any rate to float32 [2, samples] at 48 kHz."""
    if frames.ndim == 1:
        frames = frames[:, np.newaxis]
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 2, axis=1)
    elif frames.shape[1] > 2:
        frames = np.stack([frames[:, 0::2].mean(axis=1), frames[:, 1::2].mean(axis=1)], axis=1)
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        frames = soxr.resample(frames, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(np.clip(frames.T, -1.0, 1.0))


def encode_audio(audio: np.ndarray, sample_rate: int, fmt: AudioFormat | str) -> bytes:
    """Encode float audio [channels, samples] (or 1-D mono) as wav (16-bit), flac (16-bit) or mp3."""
    fmt = AudioFormat(fmt)
    container, subtype = _WRITE_FORMATS[fmt]
    if fmt is AudioFormat.MP3 and not mp3_supported():
        raise RuntimeError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write MP3; it needs >= 1.1")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[np.newaxis, :]
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"audio must be [channels, samples] with samples > 0, got shape {samples.shape}")
    samples = np.nan_to_num(np.clip(samples, -1.0, 1.0))
    buffer = io.BytesIO()
    sf.write(buffer, samples.T, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size} bytes"
