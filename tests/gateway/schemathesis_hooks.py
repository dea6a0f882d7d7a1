"""Schemathesis hooks (`SCHEMATHESIS_HOOKS`) for tests/gateway/test_openapi_conformance.py.

The document declares what the file part of each multipart form must be (`encoding.file.contentType`):
audio for `POST /uploads`, a dataset zip for `POST /train/lora`. Schemathesis fills such a part from the
strategy registered for its media type (`schemathesis.openapi.media_type`), so these give it real files:
short sine tones in each accepted container, and a dataset zip of three tones that passes every check.
"""

from __future__ import annotations

import io
import zipfile

import schemathesis
from hypothesis import strategies as st

from tests.lora.zips import tone

AUDIO_CONTAINERS = {"audio/wav": "WAV", "audio/flac": "FLAC", "audio/ogg": "OGG", "audio/mpeg": "MP3"}
SAMPLE_RATE = 8_000
TRACK_SECONDS = 6.0
"""Above the default `LORA_MIN_TRACK_SECONDS` (5 s) of the gateway under test."""


def dataset_zip(freq: float) -> bytes:
    """A dataset of three tones from `freq` (one with lyrics) that passes every dataset check."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.writestr(f"tones/tone{i}.wav", tone(TRACK_SECONDS, freq * (i + 1), SAMPLE_RATE))
        archive.writestr("tones/tone0.txt", "[verse]\nla la la\n")
    return buffer.getvalue()


frequencies = st.sampled_from([220.0, 330.0, 440.0])
for media_type, container in AUDIO_CONTAINERS.items():
    schemathesis.openapi.media_type(
        media_type,
        st.builds(
            lambda seconds, freq, fmt=container: tone(seconds, freq, SAMPLE_RATE, fmt),
            st.sampled_from([0.5, 2.0]),
            frequencies,
        ),
    )
schemathesis.openapi.media_type("application/zip", st.builds(dataset_zip, frequencies))
