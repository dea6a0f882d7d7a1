"""AAC-LC in an MPEG-4 container (`.m4a`), through PyAV (FFmpeg's native AAC encoder); no torch."""

from __future__ import annotations

import io

import numpy as np

AAC_BITRATE = 192_000
"""Bits per second for stereo AAC-LC: transparent for most music."""


def encode_m4a(audio: np.ndarray, sample_rate: int, bitrate: int = AAC_BITRATE) -> bytes:
    """Encode float32 [channels, samples] audio (1 or 2 channels, in [-1, 1]) as an AAC `.m4a` file."""
    import av

    channels = audio.shape[0]
    if channels not in (1, 2):
        raise ValueError(f"AAC output takes mono or stereo audio, got {channels} channels")
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ipod") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def decode_m4a(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an `.m4a` file to float32 [channels, samples] and its sample rate (for checks and tests)."""
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = int(stream.codec_context.sample_rate)
    return np.concatenate(frames, axis=1).astype(np.float32, copy=False), rate
