"""Storing takes (`store_takes`): a take that cannot change is encoded once, any other take every time."""

from __future__ import annotations

from pathlib import Path

from acefarm.infra.audio import encode_audio
from acefarm.infra.storage import LocalStorage
from gpu_consumer.audio_io import store_takes
from gpu_consumer.engine.base import Take
from gpu_consumer.engine.null import SAMPLE_RATE, NullEngine, quiet_tone
from schemas.generation import AudioFormat
from tests.engine.conftest import build_job


async def test_the_null_engines_takes_are_one_read_only_array_stored_as_a_fresh_encoding(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    engine = NullEngine()
    first, second = (engine.take(build_job(prompt=p, duration=1.0), 0) for p in "ab")
    assert first.audio is second.audio and not first.audio.flags.writeable
    stored = [
        await store_takes(storage, task, [take], AudioFormat.WAV) for task, take in (("t-1", first), ("t-2", second))
    ]
    fresh = encode_audio(quiet_tone(1.0), SAMPLE_RATE, AudioFormat.WAV)
    for files in stored:
        assert await storage.get_bytes(files[0].key) == fresh


async def test_a_take_that_can_change_is_encoded_again(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    audio = quiet_tone(1.0)
    before = await store_takes(storage, "t-1", [Take(audio, SAMPLE_RATE)], AudioFormat.WAV)
    audio *= 0.5  # an engine reusing its output buffer
    after = await store_takes(storage, "t-2", [Take(audio, SAMPLE_RATE)], AudioFormat.WAV)
    assert await storage.get_bytes(after[0].key) == encode_audio(audio, SAMPLE_RATE, AudioFormat.WAV)
    assert await storage.get_bytes(after[0].key) != await storage.get_bytes(before[0].key)
