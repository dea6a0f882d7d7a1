"""Schemathesis hooks (`SCHEMATHESIS_HOOKS`) for tests/gateway/test_openapi_conformance.py.

The document declares what the file part of each multipart form must be (`encoding.file.contentType`):
audio for `POST /uploads`, a dataset zip for `POST /train/lora`. Schemathesis fills such a part from the
strategy registered for its media type (`schemathesis.openapi.media_type`), so these give it real files:
short sine tones in each accepted container, and a dataset zip of three tones that passes every check.

`filter_case` drops one case schemathesis (4.32) mislabels as schema-valid: its coverage phase's "Multipart
body with custom encoding" fills each required form field that has no registered strategy with "", whatever
the field's schema says (`style_name` requires 1-100 characters), so the gateway's 400 is right there.
"""

from __future__ import annotations

import io
import zipfile

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

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


CUSTOM_ENCODING_CASE = "Multipart body with custom encoding"


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """False for a positive coverage case of `CUSTOM_ENCODING_CASE` that carries an empty form field."""
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return True
    description = getattr(meta.phase.data, "description", None)
    return not (description == CUSTOM_ENCODING_CASE and "" in case.body.values())


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
