"""`POST /sample`, `POST /format`, `POST /understand`: 5 Hz LM jobs, each a normal task (status, SSE).

They go to the planning topic; the result (`result` in the status) is what the LM wrote. `/sample`
with `generate` goes on to the song, like a planned `POST /generate`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from pydantic import BaseModel

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from gateway.auth import Principal
from gateway.errors import error_responses
from gateway.fast_submit import Accepted
from gateway.inputs import check_audio, check_input_key, decode_base64, store_input
from gateway.routing import check_planner
from gateway.state import GatewayState
from gateway.submit import IDEMPOTENCY_HEADER, check_replay, request_hash, require_json, task_id_for
from schemas import storage_keys, topics
from schemas.events import PlanningRequested
from schemas.planning import FormatInput, PlanMode, SampleInput, UnderstandRequest
from schemas.status import TaskAccepted, TaskState

log = get_logger(__name__)

Build = Callable[[str], Awaitable[PlanningRequested]]
"""Builds a job's event for its task id (after the idempotency checks)."""

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=255,
        description="Retry-safe submission: the same key always answers with the same task and queues it once.",
    ),
]


async def _submit(
    gateway: GatewayState,
    principal: Principal,
    mode: PlanMode,
    body: BaseModel,
    idempotency_key: str | None,
    build: Build,
) -> Response[TaskAccepted]:
    """Queue one LM job for `principal` (idempotent per owner and key, like `POST /generate`); 202 with its id."""
    check_planner(gateway.settings, "mode")
    task_id = task_id_for(principal.owner, idempotency_key)
    body_hash = request_hash(body)
    store = gateway.view.store
    known = store.get(task_id)
    if known is not None and idempotency_key is not None:
        check_replay(known, body_hash, idempotency_key)
        return Accepted(task_id, known.status, known.lora_id, replayed=True).response()
    if task_id in gateway.in_flight:
        raise HTTPException(
            status_code=HTTP_409_CONFLICT,
            detail=f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry in a moment",
        )
    gateway.in_flight.add(task_id)
    try:
        event = (await build(task_id)).model_copy(update={"owner": principal.owner, "request_hash": body_hash})
        await publish(gateway.producer, topics.PLANNING_REQUESTS, event)
        store.record_submitted(event)
    finally:
        gateway.in_flight.discard(task_id)
    log.info("gateway.submitted", task_id=task_id, mode=mode.value)
    return Accepted(task_id, TaskState.PENDING, None, replayed=False).response()


class PlanningController(Controller):
    """The 5 Hz LM jobs: sample, format, understand."""

    tags = ("planning",)

    @post(
        "/sample",
        before_request=require_json,
        status_code=HTTP_202_ACCEPTED,
        summary="Describe a song in a line: the LM writes caption, lyrics and metadata (and the song if asked)",
        responses=error_responses(400, 401, 409, 415, 422),
    )
    async def sample(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        data: JSONBody[SampleInput],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAccepted]:
        """Queue a sample job; its status' `result` holds what the LM wrote (with `generate`: and the song's files)."""

        async def build(task_id: str) -> PlanningRequested:
            return PlanningRequested(task_id=task_id, mode=PlanMode.SAMPLE, sample=data)

        return await _submit(gateway, principal, PlanMode.SAMPLE, data, idempotency_key, build)

    @post(
        "/format",
        before_request=require_json,
        status_code=HTTP_202_ACCEPTED,
        summary="Clean up a caption, lyrics and metadata with the LM",
        responses=error_responses(400, 401, 409, 415, 422),
    )
    async def format(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        data: JSONBody[FormatInput],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAccepted]:
        """Queue a format job; its status' `result` holds the rewritten caption, lyrics and metadata."""

        async def build(task_id: str) -> PlanningRequested:
            return PlanningRequested(task_id=task_id, mode=PlanMode.FORMAT, format=data)

        return await _submit(gateway, principal, PlanMode.FORMAT, data, idempotency_key, build)

    @post(
        "/understand",
        before_request=require_json,
        status_code=HTTP_202_ACCEPTED,
        summary="Describe a piece of audio: caption, lyrics, bpm, key, time signature, language",
        responses=error_responses(400, 401, 409, 413, 415, 422),
    )
    async def understand(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        data: JSONBody[UnderstandRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAccepted]:
        """Queue an understand job (audio inline as base64, or a key from `POST /uploads`); the status'
        `result` holds the description and `audio_codes_url` the audio's codes."""

        async def build(task_id: str) -> PlanningRequested:
            settings, storage = gateway.settings, gateway.storage
            if data.audio_key is not None:
                key = await check_input_key("audio_key", data.audio_key, storage, principal)
            else:
                raw = decode_base64("audio", data.audio or "", settings.max_input_audio_bytes)
                audio = await check_audio("audio", raw, settings)
                key = (await store_input(storage, storage_keys.input_stem(task_id, "understand"), audio)).key
            return PlanningRequested(task_id=task_id, mode=PlanMode.UNDERSTAND, understand=data.to_input(key))

        return await _submit(gateway, principal, PlanMode.UNDERSTAND, data, idempotency_key, build)
