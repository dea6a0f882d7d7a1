"""Job audio in and out of storage: input keys to arrays, takes to stored files."""

from __future__ import annotations

import asyncio

import numpy as np

from acefarm.infra.audio import AudioInputError, decode_audio, encode_audio
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage
from gpu_consumer.engine.base import InvalidInput, Take
from schemas.generation import CONTENT_TYPES, FILE_EXTENSIONS, AudioFormat, GenerationParams
from schemas.status import StoredFile
from schemas.storage_keys import output_key


async def load_input(storage: Storage, key: str | None, role: str, settings: Settings) -> np.ndarray | None:
    """Fetch and decode one input audio key to float32 [2, samples] at 48 kHz; `InvalidInput` if unusable."""
    if key is None:
        return None
    try:
        data = await storage.get_bytes(key)
    except FileNotFoundError:
        raise InvalidInput(f"{role} audio not found in storage (key {key!r})") from None
    try:
        audio, _ = await asyncio.to_thread(
            decode_audio,
            data,
            max_bytes=settings.max_input_audio_bytes,
            max_seconds=settings.max_input_audio_seconds,
        )
    except AudioInputError as error:
        raise InvalidInput(f"{role} audio is unusable: {error}") from error
    return audio


async def load_inputs(
    storage: Storage, params: GenerationParams, settings: Settings
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The job's (source, reference) audio, each None when not given."""
    src = await load_input(storage, params.src_audio_key, "source", settings)
    ref = await load_input(storage, params.reference_audio_key, "reference", settings)
    return src, ref


async def store_takes(storage: Storage, task_id: str, takes: list[Take], fmt: AudioFormat) -> list[StoredFile]:
    """Encode each take in `fmt` (a take that cannot change is encoded once: `_encoded`), store it under
    `output_key`, and describe the stored files."""
    files: list[StoredFile] = []
    content_type = CONTENT_TYPES[fmt]
    for n, take in enumerate(takes):
        audio = np.asarray(take.audio, dtype=np.float32)
        data = _encoded.get(audio, take.sample_rate, fmt)
        if data is None:
            data = await asyncio.to_thread(encode_audio, audio, take.sample_rate, fmt)
            _encoded.keep(audio, take.sample_rate, fmt, data)
        if audio.ndim == 1:
            audio = audio[np.newaxis, :]
        info = await storage.put_bytes(output_key(task_id, n, FILE_EXTENSIONS[fmt]), data, content_type)
        files.append(
            StoredFile(
                key=info.key,
                content_type=content_type,
                size_bytes=info.size,
                duration_s=round(audio.shape[-1] / take.sample_rate, 6),
                sample_rate=take.sample_rate,
                channels=int(audio.shape[0]),
            )
        )
    return files


class _LastEncoding:
    """The last encoding of an array that cannot change (read-only and owning its data, like the null engine's
    shared tone): the same array stored again in the same format reuses the bytes instead of encoding again.
    Arrays an engine can still write to (every real model's output) are never kept."""

    def __init__(self) -> None:
        self._last: tuple[np.ndarray, int, AudioFormat, bytes] | None = None

    def get(self, audio: np.ndarray, sample_rate: int, fmt: AudioFormat) -> bytes | None:
        """The bytes kept for this very array, rate and format, else None."""
        last = self._last
        if last is not None and last[0] is audio and last[1:3] == (sample_rate, fmt):
            return last[3]
        return None

    def keep(self, audio: np.ndarray, sample_rate: int, fmt: AudioFormat, data: bytes) -> None:
        """Remember `data` as the encoding of `audio` when the array cannot change."""
        if not audio.flags.writeable and audio.flags.owndata:
            self._last = (audio, sample_rate, fmt, data)


_encoded = _LastEncoding()
