"""Inputs: decode and check the audio users send, store it, check keys they pass back and webhook targets.

Uploads are stored under `inputs/uploads/{owner hash}/`, so a key names its owner: a user may pass back
only keys under its own prefix (admins: any input key); anyone else's answers like an unknown key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from dataclasses import dataclass

from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_422_UNPROCESSABLE_ENTITY
from pydantic import ValidationError

from acefarm.infra.audio import AudioInputError, decode_audio
from acefarm.infra.settings import Settings
from acefarm.infra.storage import InvalidKey, ObjectInfo, Storage, validate_key
from acefarm.infra.webhook_targets import TargetRefused, check_target
from gateway.auth import Principal
from gateway.errors import FieldError
from schemas import storage_keys
from schemas.webhooks import WebhookRequest

UNUSABLE = HTTP_422_UNPROCESSABLE_ENTITY
"""A schema-valid input that cannot be used (not audio, an unknown key, a refused webhook)."""


@dataclass(frozen=True)
class CheckedAudio:
    """Input audio that decoded within the limits."""

    data: bytes
    ext: str
    content_type: str
    duration_s: float


def decode_base64(field: str, value: str, max_bytes: int) -> bytes:
    """The bytes of a base64 (or data: URL) field; 413 when over `max_bytes`, 422 when not base64 or empty
    (`contentEncoding` only annotates: such a string is schema-valid)."""
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) * 3 // 4 > max_bytes + 3:
        raise FieldError(
            field,
            f"the audio is larger than the limit of {max_bytes} bytes; shorten or compress it",
            HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(field, "is not valid base64; send the audio file's bytes base64-encoded", UNUSABLE) from None
    if not data:
        raise FieldError(field, "is empty; send the audio file's bytes base64-encoded", UNUSABLE)
    return data


async def check_audio(field: str, data: bytes, settings: Settings) -> CheckedAudio:
    """Decode `data` fully (off the event loop) within the configured limits, or raise `FieldError` (422 when
    it is not readable audio or lasts too long, 413 when too large).

    Only wav, flac, mp3 and ogg containers pass; the stored extension is the real container's."""
    if len(data) > settings.max_input_audio_bytes:
        raise FieldError(
            field,
            f"the audio is {len(data)} bytes; the limit is {settings.max_input_audio_bytes} bytes, "
            "so shorten or compress it",
            HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    try:
        _, info = await asyncio.to_thread(
            decode_audio, data, max_bytes=settings.max_input_audio_bytes, max_seconds=settings.max_input_audio_seconds
        )
    except AudioInputError as error:
        raise FieldError(field, str(error), UNUSABLE) from None
    return CheckedAudio(data=data, ext=info.extension, content_type=info.content_type, duration_s=info.duration_s)


async def store_input(storage: Storage, key_stem: str, audio: CheckedAudio) -> ObjectInfo:
    """Store checked audio at `{key_stem}.{ext}`."""
    return await storage.put_bytes(f"{key_stem}.{audio.ext}", audio.data, audio.content_type)


def upload_prefix(owner: str) -> str:
    """Where `owner`'s uploads are stored: under the first 24 hex digits of SHA-256(owner)."""
    return storage_keys.upload_prefix(hashlib.sha256(owner.encode()).hexdigest()[:24])


async def check_input_key(field: str, key: str, storage: Storage, principal: Principal) -> str:
    """A storage key passed as `src_audio_key`/`reference_audio_key`: safe, under inputs/, the caller's
    own upload (any input for an admin), present; `FieldError` (422) when not."""
    try:
        validate_key(key)
    except InvalidKey:
        raise FieldError(
            field, "is not a valid storage key; pass the key returned by POST /uploads", UNUSABLE
        ) from None
    if not key.startswith(storage_keys.INPUTS):
        raise FieldError(field, "must be a key under 'inputs/' as returned by POST /uploads", UNUSABLE)
    mine = principal.is_admin or key.startswith(upload_prefix(principal.owner))
    if not mine or await storage.stat(key) is None:
        raise FieldError(field, f"no uploaded audio has the key {key!r}; upload it first with POST /uploads", UNUSABLE)
    return key


async def check_webhook(url: str | None, settings: Settings) -> None:
    """422 unless `url` is None or a target the farm may call: every address public, unless WEBHOOK_ALLOW_PRIVATE."""
    if url is None:
        return
    try:
        await check_target(url, settings.webhook_allow_private)
    except TargetRefused as refused:
        raise FieldError("webhook", str(refused), UNUSABLE) from None


def webhook_form_fields(webhook: str | None, webhook_events: str | None) -> WebhookRequest:
    """The webhook fields of a multipart form (`webhook_events` comma-separated); `FieldError` when invalid."""
    events = [name.strip() for name in (webhook_events or "").split(",") if name.strip()]
    given: dict[str, object] = {"webhook": webhook or None}
    if events:
        given["webhook_events"] = events
    try:
        return WebhookRequest.model_validate(given)
    except ValidationError as error:
        first = error.errors()[0]
        raise FieldError(str(first["loc"][0]), first["msg"].removeprefix("Value error, ")) from None
