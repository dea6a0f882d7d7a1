"""`POST /generate` and `POST /uploads`: check everything, store input audio, publish the job."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_415_UNSUPPORTED_MEDIA_TYPE
from pydantic import BaseModel

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.pools import configured_pools
from gateway.errors import FieldError, error_responses
from gateway.inputs import check_audio, check_input_key, decode_base64, store_input
from gateway.loras import check_lora_id
from gateway.state import GatewayState
from gateway.task_types import route
from schemas.events import GenerationRequested
from schemas.generation import GenerateRequest
from schemas.status import TaskAccepted, TaskKind, TaskState

log = get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


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


async def require_json(request: Request[Any, Any, Any]) -> None:
    """`before_request` hook: 415 unless the body is declared as JSON."""
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type must be application/json, not {media_type or 'missing'!r}; "
            "send the request fields as a JSON object (large audio: POST /uploads, then *_audio_key)",
        )


def task_id_for(idempotency_key: str | None) -> str:
    """A fresh random task id, or the same id every time for the same `Idempotency-Key`."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def _accepted(task_id: str, status: TaskState, lora_id: str | None, replayed: bool) -> Response[TaskAccepted]:
    headers = {"Location": f"/status/{task_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        TaskAccepted(task_id=task_id, status=status, lora_id=lora_id), status_code=HTTP_202_ACCEPTED, headers=headers
    )


async def _stored_inputs(gateway: GatewayState, data: GenerateRequest, task_id: str) -> dict[str, str | None]:
    """Check every audio input and store the inline ones; the storage keys by role."""
    settings, storage = gateway.settings, gateway.storage
    keys: dict[str, str | None] = {"src": None, "reference": None}
    for role, inline, key_field, key in (
        ("src", data.src_audio, "src_audio_key", data.src_audio_key),
        ("reference", data.reference_audio, "reference_audio_key", data.reference_audio_key),
    ):
        field = f"{role}_audio"
        if inline is not None and key is not None:
            raise FieldError(field, f"give either {field} (base64) or {key_field}, not both")
        if key is not None:
            keys[role] = await check_input_key(key_field, key, storage)
        elif inline is not None:
            raw = decode_base64(field, inline, settings.max_input_audio_bytes)
            audio = await check_audio(field, raw, settings)
            keys[role] = (await store_input(storage, f"inputs/{task_id}/{role}", audio)).key
    return keys


class GenerationController(Controller):
    """`POST /generate` and `POST /uploads`."""

    tags = ("generation",)

    @post(
        "/generate",
        before_request=require_json,
        status_code=HTTP_202_ACCEPTED,
        summary="Submit a generation job",
        responses=error_responses(400, 409, 413, 415),
    )
    async def generate(
        self,
        gateway: NamedDependency[GatewayState],
        data: JSONBody[GenerateRequest],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name=IDEMPOTENCY_HEADER,
                min_length=1,
                max_length=255,
                description="Retry-safe submission: the same key always answers with the same task and queues it once.",
            ),
        ] = None,
    ) -> Response[TaskAccepted]:
        """Validate the request, store inline audio under `inputs/{task_id}/`, queue the job; 202 with its id.

        Every bad field answers 400 naming the field and what to fix (413 for audio over the size limit); a
        `model` nobody serves, or a task type its model cannot do, answers 400 listing what is available.
        """
        task_id = task_id_for(idempotency_key)
        store = gateway.view.store
        known = store.get(task_id)
        if known is not None:
            return _accepted(task_id, known.status, known.lora_id, replayed=True)
        if task_id in gateway.in_flight:
            raise HTTPException(
                status_code=HTTP_409_CONFLICT,
                detail=f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry in a moment",
            )
        pool = route(configured_pools(gateway.settings), data.model, data.task_type)
        gateway.in_flight.add(task_id)
        try:
            for lora in data.loras:
                await check_lora_id(gateway.storage, lora.lora_id)
            keys = await _stored_inputs(gateway, data, task_id)
            params = data.to_params(src_audio_key=keys["src"], reference_audio_key=keys["reference"])
            event = GenerationRequested(task_id=task_id, params=params)
            await publish(gateway.producer, pool.topic, event)
            store.record_submitted(event, TaskKind.GENERATION, params.lora_id)
        finally:
            gateway.in_flight.discard(task_id)
        log.info(
            "gateway.submitted",
            task_id=task_id,
            task_type=params.task_type.value,
            duration=params.duration,
            model=pool.name,
        )
        return _accepted(task_id, TaskState.PENDING, params.lora_id, replayed=False)

    @post(
        "/uploads",
        status_code=201,
        summary="Upload input audio for a later job",
        responses=error_responses(400, 413, 415),
    )
    async def upload(
        self,
        gateway: NamedDependency[GatewayState],
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> UploadResult:
        """Store one audio file (checked like inline audio) under `inputs/uploads/`; returns its key.

        Pass the key as `src_audio_key` or `reference_audio_key` in `POST /generate`.
        """
        raw = await data.file.read()
        audio = await check_audio("file", raw, gateway.settings)
        info = await store_input(gateway.storage, f"inputs/uploads/{uuid.uuid4().hex}", audio)
        log.info("gateway.uploaded", key=info.key, size=info.size)
        return UploadResult(
            key=info.key, content_type=audio.content_type, size_bytes=info.size, duration_s=audio.duration_s
        )
