"""acefarm.infra.audio: decoding and validating user audio, encoding results (no torch)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from acefarm.infra.audio import (
    MAX_DECODED_BYTES,
    SAMPLE_RATE,
    AudioInputError,
    decode_audio,
    encode_audio,
    probe,
    probe_duration,
)
from schemas.generation import AudioFormat
from tests.support.decode import decode_result


def _encode(frames: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, frames, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _sine(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_U8", 44_100, 1),
        ("WAV", "PCM_16", 22_050, 2),
        ("WAV", "PCM_24", 48_000, 2),
        ("WAV", "FLOAT", 16_000, 1),
        ("FLAC", "PCM_24", 96_000, 2),
        ("OGG", "VORBIS", 44_100, 2),
        ("MP3", "MPEG_LAYER_III", 44_100, 1),
        ("WAV", "PCM_16", 48_000, 6),
    ],
)
def test_inputs_become_48k_stereo_float(fmt: str, subtype: str, rate: int, channels: int) -> None:
    data = _encode(_sine(1.5, rate, channels), rate, fmt, subtype)
    audio, info = decode_audio(data, max_bytes=10**7, max_seconds=60)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert audio.dtype == np.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] / SAMPLE_RATE - 1.5) < 0.06
    assert 0.3 < np.abs(audio).max() <= 1.0
    assert np.allclose(audio[0], audio[1], atol=1e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not audio at all" * 10, "not a readable audio file"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(20), "not a readable audio file"),
    ],
)
def test_garbage_is_rejected_with_a_message(data: bytes, message: str) -> None:
    with pytest.raises(AudioInputError, match=message):
        decode_audio(data)


def test_too_long_is_rejected_from_the_header() -> None:
    data = _encode(np.zeros(44_100 * 180, dtype=np.int16), 44_100, "WAV", "PCM_16")  # 3 minutes, mono
    assert probe_duration(data) == pytest.approx(180.0)
    with pytest.raises(AudioInputError, match=r"lasts 180\.0 s; the limit is 120 s"):
        decode_audio(data, max_seconds=120)


def test_too_big_is_rejected_before_decoding() -> None:
    data = _encode(_sine(2.0, 48_000), 48_000, "WAV")
    with pytest.raises(AudioInputError, match="the limit is 10000 bytes"):
        decode_audio(data, max_bytes=10_000)


def test_no_samples_and_non_finite_samples_are_rejected() -> None:
    with pytest.raises(AudioInputError, match="no samples"):
        decode_audio(_encode(np.zeros((0, 2), dtype=np.float32), 48_000, "WAV", "FLOAT"))
    bad = np.zeros(4800, dtype=np.float32)
    bad[10] = np.nan
    with pytest.raises(AudioInputError, match="NaN"):
        decode_audio(_encode(bad, 48_000, "WAV", "FLOAT"))


def _wav_claiming_rate(rate: int) -> bytes:
    """One second of 48 kHz 16-bit mono whose header claims `rate` (the fmt chunk's rate and byte rate)."""
    data = bytearray(_encode(np.zeros(48_000, dtype=np.int16), 48_000, "WAV", "PCM_16"))
    struct.pack_into("<II", data, 24, rate, rate * 2)
    return bytes(data)


def _flac_claiming_frames(frames: int) -> bytes:
    """One second of 44.1 kHz FLAC whose STREAMINFO claims `frames` samples (the 36 low bits of bytes 18..25)."""
    data = bytearray(_encode(_sine(1.0, 44_100), 44_100, "FLAC"))
    fields = int.from_bytes(data[18:26], "big")
    data[18:26] = ((fields & ~((1 << 36) - 1)) | frames).to_bytes(8, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_wav_claiming_rate(50_000_000), "sample rate is 50000000 Hz; it must be 8000 to 192000 Hz"),
        (_encode(_sine(1.0, 4_000), 4_000, "WAV"), "sample rate is 4000 Hz"),
        (_encode(np.zeros((4800, 16), dtype=np.int16), 48_000, "WAV", "PCM_16"), "16 channels; at most 8"),
        (_encode(_sine(0.5, 48_000), 48_000, "AIFF"), "the AIFF container; send WAV, FLAC, MP3 or OGG"),
        (_encode(_sine(0.5, 48_000), 48_000, "CAF"), "the CAF container"),
        (_encode(_sine(0.5, 48_000), 48_000, "NIST"), "the NIST container"),
    ],
)
def test_unusable_headers_are_rejected_before_decoding(data: bytes, message: str) -> None:
    with pytest.raises(AudioInputError, match=message):
        probe(data)
    with pytest.raises(AudioInputError, match=message):
        decode_audio(data)


def test_a_header_claiming_more_samples_than_the_cap_is_rejected_before_reading() -> None:
    data = _flac_claiming_frames((1 << 36) - 1)  # ~1.5 million seconds: ~550 GB as float32 stereo at 48 kHz
    with pytest.raises(AudioInputError, match=r"decodes to .* the limit is 512\.0 MB"):
        decode_audio(data)


def test_the_decoded_size_counts_channels_and_resampling() -> None:
    info = probe(_encode(np.zeros((8000, 8), dtype=np.int16), 8_000, "WAV", "PCM_U8"))  # 64 kB of 8-bit PCM
    assert info.decoded_bytes() == 4 * 48_000 * 2  # one second resampled to 48 kHz stereo float32
    info = probe(_encode(np.zeros((48_000, 8), dtype=np.int16), 48_000, "WAV", "PCM_16"))
    assert info.decoded_bytes() == 4 * 48_000 * 8  # read as 8 channels of float32
    pcm_u8 = _encode(np.zeros(48_000 * 6, dtype=np.int16), 48_000, "WAV", "PCM_U8")  # 6 s mono, 288 kB
    with pytest.raises(AudioInputError, match=r"decodes to 2\.2 MB \(1 channels at 48000 Hz for 6\.0 s\)"):
        decode_audio(pcm_u8, max_decoded_bytes=2 * 1024 * 1024)
    assert MAX_DECODED_BYTES >= 4 * 48_000 * 2 * 600, "ten minutes of 48 kHz stereo must fit"


def test_the_container_gives_the_extension_and_content_type() -> None:
    cases = {("WAV", None): "wav", ("FLAC", None): "flac", ("OGG", "VORBIS"): "ogg", ("MP3", "MPEG_LAYER_III"): "mp3"}
    for (fmt, subtype), ext in cases.items():
        info = probe(_encode(_sine(0.5, 44_100), 44_100, fmt, subtype))
        assert info.extension == ext and info.content_type.startswith("audio/")
    wavex = probe(_encode(np.zeros((4800, 6), dtype=np.int16), 48_000, "WAVEX", "PCM_16"))
    assert (wavex.format, wavex.extension) == ("WAVEX", "wav")


def test_errors_do_not_show_object_reprs() -> None:
    with pytest.raises(AudioInputError) as caught:
        decode_audio(b"this is not audio at all" * 10)
    assert "<_io.BytesIO" not in str(caught.value) and " at 0x" not in str(caught.value)


def test_audio_input_error_is_a_value_error() -> None:
    assert issubclass(AudioInputError, ValueError)


@pytest.mark.parametrize("fmt", [*AudioFormat, "wav"])
def test_encode_round_trips(fmt: AudioFormat | str) -> None:
    audio = np.stack([_sine(0.7, SAMPLE_RATE), -_sine(0.7, SAMPLE_RATE)]).astype(np.float32)
    data = encode_audio(audio, SAMPLE_RATE, fmt)
    decoded, rate = decode_result(data)
    assert rate == SAMPLE_RATE and decoded.shape[0] == 2
    assert abs(decoded.shape[1] - audio.shape[1]) <= 0.1 * SAMPLE_RATE
    if AudioFormat(fmt) in (AudioFormat.WAV, AudioFormat.FLAC):
        assert np.allclose(decoded, audio, atol=1e-3)
    else:  # lossy: the same loudness, the channels still opposite
        loudness = float(np.sqrt(np.mean(audio**2)))
        assert abs(float(np.sqrt(np.mean(decoded**2))) - loudness) < 0.1 * loudness
        assert float(np.mean(decoded[0] * decoded[1])) < -0.5 * loudness**2


@pytest.mark.parametrize(
    ("fmt", "magic"), [(AudioFormat.OPUS, b"OpusHead"), (AudioFormat.OGG, b"vorbis"), (AudioFormat.AAC, b"ftypM4A")]
)
def test_compressed_formats_use_their_codec(fmt: AudioFormat, magic: bytes) -> None:
    data = encode_audio(_sine(1.0, SAMPLE_RATE), SAMPLE_RATE, fmt)
    assert magic in data[:200]


def test_opus_resamples_rates_it_cannot_encode() -> None:
    decoded, rate = decode_result(encode_audio(_sine(1.0, 44_100), 44_100, AudioFormat.OPUS))
    assert rate == SAMPLE_RATE and abs(decoded.shape[1] - SAMPLE_RATE) <= 0.02 * SAMPLE_RATE


def test_encode_clips_and_accepts_mono_vectors() -> None:
    loud = np.full(4800, 3.0, dtype=np.float32)
    decoded, info = decode_audio(encode_audio(loud, SAMPLE_RATE, AudioFormat.FLAC))
    assert info.channels == 1 and np.abs(decoded).max() <= 1.0
    with pytest.raises(ValueError, match="channels, samples"):
        encode_audio(np.zeros((2, 0), dtype=np.float32), SAMPLE_RATE, "wav")


def test_module_does_not_import_torch() -> None:
    code = "import sys, acefarm.infra.audio; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
