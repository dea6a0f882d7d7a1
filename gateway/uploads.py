"""`POST /uploads`: one input audio file, read in chunks under its own body limit, checked, stored for the caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from litestar import Controller, Router, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from pydantic import BaseModel

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from gateway.auth import Principal
from gateway.errors import FieldError, error_responses
from gateway.inputs import check_audio, store_input, upload_prefix
from gateway.state import GatewayState

log = get_logger(__name__)

_CHUNK = 256 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room in the `POST /uploads` body for the multipart framing around the file."""


@dataclass
class UploadForm:
    """Multipart form of `POST /uploads`: `file` is the audio file (wav, flac, mp3 or ogg)."""

    file: UploadFile


class UploadResult(BaseModel):
    """Body of a successful `POST /uploads`: pass `key` as `src_audio_key` or `reference_audio_key`."""

    key: str
    content_type: str
    size_bytes: int
    duration_s: float


def upload_body_bytes(settings: Settings) -> int:
    """Largest `POST /uploads` body: one file of `MAX_INPUT_AUDIO_BYTES` plus the multipart framing."""
    return settings.max_input_audio_bytes + FORM_OVERHEAD_BYTES


async def read_capped(upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, read in chunks; 413 as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise FieldError(
                "file",
                f"the audio is larger than the limit of {limit} bytes (MAX_INPUT_AUDIO_BYTES); shorten or compress it",
                HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        chunks.append(chunk)
    return b"".join(chunks)


class UploadController(Controller):
    """`POST /uploads`."""

    tags = ("generation",)

    @post(
        "/uploads",
        status_code=201,
        summary="Upload input audio for a later job",
        responses=error_responses(400, 401, 403, 413, 415, 422, 429),
    )
    async def upload(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> UploadResult:
        """Store one audio file (checked like inline audio) under the caller's upload prefix; returns its key.

        Pass the key as `src_audio_key` or `reference_audio_key` in `POST /generate`; only its uploader
        (or an admin) may. A body larger than the file limit is refused (413) before it is read. Counts
        against the key's request rate (429 with `Retry-After` when spent).
        """
        gateway.admission.admit_request(principal)
        raw = await read_capped(data.file, gateway.settings.max_input_audio_bytes)
        audio = await check_audio("file", raw, gateway.settings)
        info = await store_input(gateway.storage, f"{upload_prefix(principal.owner)}{uuid.uuid4().hex}", audio)
        log.info("gateway.uploaded", key=info.key, size=info.size, owner=principal.owner)
        return UploadResult(
            key=info.key, content_type=audio.content_type, size_bytes=info.size, duration_s=audio.duration_s
        )


def upload_routes(settings: Settings) -> Router:
    """`UploadController` under its own body limit (`upload_body_bytes`), checked before the body is read."""
    return Router(path="/", route_handlers=[UploadController], request_max_body_size=upload_body_bytes(settings))
