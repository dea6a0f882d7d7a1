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
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
MAX_DECODED_BYTES = 512 * 1024 * 1024
"""Default cap on the float32 samples one decode holds (input as read, or the 48 kHz stereo result)."""
CONTAINERS: dict[str, tuple[str, str]] = {
    "WAV": ("wav", "audio/wav"),
    "WAVEX": ("wav", "audio/wav"),
    "FLAC": ("flac", "audio/flac"),
    "MP3": ("mp3", "audio/mpeg"),
    "OGG": ("ogg", "audio/ogg"),
}
"""The containers accepted as input (libsndfile's format name) -> (file extension, content type)."""

_WRITE_FORMATS: dict[AudioFormat, tuple[str, str]] = {
    AudioFormat.WAV: ("WAV", "PCM_16"),
    AudioFormat.FLAC: ("FLAC", "PCM_16"),
    AudioFormat.MP3: ("MP3", "MPEG_LAYER_III"),
    AudioFormat.OPUS: ("OGG", "OPUS"),
    AudioFormat.OGG: ("OGG", "VORBIS"),
}
"""libsndfile (container, subtype) per output format; AAC goes through PyAV (`acefarm.infra.m4a`)."""
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
"""The sample rates Opus encodes; other rates are resampled to 48 kHz first."""
_READABLE = "WAV, FLAC, MP3 or OGG"
_FLOAT32_BYTES = 4


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

    @property
    def extension(self) -> str:
        """The file extension of the container (`wav`, `flac`, `mp3`, `ogg`)."""
        return CONTAINERS[self.format][0]

    @property
    def content_type(self) -> str:
        """The media type of the container."""
        return CONTAINERS[self.format][1]

    def decoded_bytes(self) -> int:
        """Bytes of float32 samples a decode holds at its largest: as read, or resampled to 48 kHz stereo."""
        resampled = -(-self.frames * SAMPLE_RATE // max(self.sample_rate, 1))
        return _FLOAT32_BYTES * max(self.frames * self.channels, resampled * 2)


def mp3_supported() -> bool:
    """Whether the linked libsndfile can write MP3 (needs libsndfile >= 1.1)."""
    return "MP3" in sf.available_formats()


def _open(data: bytes) -> sf.SoundFile:
    try:
        return sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as error:
        raise AudioInputError(f"not a readable audio file ({_READABLE} expected): {error.error_string}") from None
    except (RuntimeError, TypeError) as error:
        raise AudioInputError(f"not a readable audio file ({_READABLE} expected): {error}") from None


def probe(data: bytes) -> AudioInfo:
    """Read only the header of `data`; `AudioInputError` if it is not audio in an accepted container
    (wav, flac, mp3, ogg) with 1 to `MAX_CHANNELS` channels at `MIN_SAMPLE_RATE` to `MAX_SAMPLE_RATE`."""
    if not data:
        raise AudioInputError("the audio is empty (0 bytes)")
    with _open(data) as f:
        info = AudioInfo(f.format, f.subtype, int(f.samplerate), int(f.channels), int(f.frames))
    if info.format not in CONTAINERS:
        raise AudioInputError(f"the audio is in the {info.format} container; send {_READABLE}")
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            f"the audio's sample rate is {info.sample_rate} Hz; it must be {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz "
            f"(48000 Hz is best)"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioInputError(
            f"the audio has {info.channels} channels; at most {MAX_CHANNELS} are accepted (send stereo)"
        )
    return info


def probe_duration(data: bytes) -> float:
    """Duration of encoded audio in seconds, from its header; `AudioInputError` if not audio."""
    return probe(data).duration_s


def decode_audio(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode wav/flac/mp3/ogg bytes to float32 [2, samples] at 48 kHz, checking the limits.

    Mono is duplicated to stereo, more than two channels are averaged down to two, any sample rate is
    resampled with soxr. The header is checked (container, sample rate, channels, duration and the
    decoded size, see `AudioInfo.decoded_bytes`) before any sample is read. Raises `AudioInputError`
    for empty, oversized, too long, silent-length or undecodable input.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioInputError(f"the audio is {_mb(len(data))}; the limit is {_mb(max_bytes)}")
    info = probe(data)
    if max_seconds is not None and info.duration_s > max_seconds:
        raise AudioInputError(f"the audio lasts {info.duration_s:.1f} s; the limit is {max_seconds:g} s")
    if info.decoded_bytes() > max_decoded_bytes:
        raise AudioInputError(
            f"the audio decodes to {_mb(info.decoded_bytes())} ({info.channels} channels at {info.sample_rate} Hz "
            f"for {info.duration_s:.1f} s); the limit is {_mb(max_decoded_bytes)}, so send it shorter, "
            "in stereo, at 48 kHz"
        )
    try:
        with _open(data) as f:
            frames = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        raise AudioInputError(f"the audio could not be decoded: {error.error_string}") from None
    except RuntimeError as error:
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
    """Encode float audio [channels, samples] (or 1-D mono) as wav (16-bit), flac (16-bit), mp3,
    opus (Ogg), aac (`.m4a`, mono or stereo) or ogg (Vorbis)."""
    fmt = AudioFormat(fmt)
    if fmt is AudioFormat.MP3 and not mp3_supported():
        raise RuntimeError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write MP3; it needs >= 1.1")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[np.newaxis, :]
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"audio must be [channels, samples] with samples > 0, got shape {samples.shape}")
    samples = np.nan_to_num(np.clip(samples, -1.0, 1.0))
    if fmt is AudioFormat.AAC:
        from acefarm.infra.m4a import encode_m4a

        return encode_m4a(samples, sample_rate)
    if fmt is AudioFormat.OPUS and sample_rate not in OPUS_RATES:
        samples = soxr.resample(samples.T, sample_rate, SAMPLE_RATE, quality="HQ").T.astype(np.float32)
        sample_rate = SAMPLE_RATE
    container, subtype = _WRITE_FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, samples.T, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size} bytes"
