"""`POST /generate`: check everything, store input audio, publish the job with its owner."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter, JSONBody
from litestar.status_codes import (
    HTTP_202_ACCEPTED,
    HTTP_409_CONFLICT,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
)
from pydantic import BaseModel

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import TASKS_SUBMITTED
from gateway.access import tasks_not_current
from gateway.auth import Principal
from gateway.errors import error_responses
from gateway.fast_submit import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY, Accepted, fast_submit
from gateway.inputs import check_audio, check_input_key, check_webhook, decode_base64, store_input
from gateway.limits import generation_cost
from gateway.loras import check_lora_id
from gateway.models import farm_pools
from gateway.routing import route
from gateway.state import GatewayState, provide_gateway
from gateway.task_types import choose_pool
from gateway.workers import provide_workers
from schemas import storage_keys
from schemas.generation import GenerateRequest
from schemas.status import TaskAccepted, TaskKind, TaskState, TaskStatus

log = get_logger(__name__)


async def require_json(request: Request[Any, Any, Any]) -> None:
    """`before_request` hook: 415 unless the body is declared as JSON."""
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type must be application/json, not {media_type or 'missing'!r}; "
            "send the request fields as a JSON object (large audio: POST /uploads, then *_audio_key)",
        )


def task_id_for(owner: str, idempotency_key: str | None) -> str:
    """A fresh random task id, or the same id every time for the same owner and `Idempotency-Key`
    (two owners using the same key get different tasks)."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return "idem-" + hashlib.sha256(f"{owner}\n{idempotency_key}".encode()).hexdigest()[:40]


def request_hash(data: BaseModel) -> str:
    """SHA-256 of the request's canonical JSON (defaults filled in, keys sorted): equal for equal requests."""
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_replay(known: TaskStatus, body_hash: str, idempotency_key: str) -> None:
    """422 naming the key when a retry under `idempotency_key` carries a different body than the original."""
    if known.request_hash is not None and known.request_hash != body_hash:
        raise HTTPException(
            status_code=HTTP_422_UNPROCESSABLE_ENTITY,
            detail=f"the {IDEMPOTENCY_HEADER} {idempotency_key!r} was already used with a different request body; "
            "send the same body to get the original task back, or use a new key for a new request",
        )


async def _stored_inputs(
    gateway: GatewayState, principal: Principal, data: GenerateRequest, task_id: str
) -> dict[str, str | None]:
    """Check every audio input (keys: the caller's own uploads) and store the inline ones; the storage keys by role."""
    settings, storage = gateway.settings, gateway.storage
    keys: dict[str, str | None] = {"src": None, "reference": None}
    for role, inline, key_field, key in (
        ("src", data.src_audio, "src_audio_key", data.src_audio_key),
        ("reference", data.reference_audio, "reference_audio_key", data.reference_audio_key),
    ):
        field = f"{role}_audio"
        if key is not None:
            keys[role] = await check_input_key(key_field, key, storage, principal)
        elif inline is not None:
            raw = decode_base64(field, inline, settings.max_input_audio_bytes)
            audio = await check_audio(field, raw, settings)
            keys[role] = (await store_input(storage, storage_keys.input_stem(task_id, role), audio)).key
    return keys


async def accept_generation(
    state: State, principal: Principal, data: GenerateRequest, idempotency_key: str | None
) -> Accepted:
    """The submission behind `POST /generate` (the Litestar handler and the fast path, `gateway.fast_submit`):
    idempotency, routing, admission, inline audio, the `acks=all` publish and the pending row; raises the
    route's HTTP errors (see `GenerationController.generate`)."""
    gateway = provide_gateway(state)
    task_id = task_id_for(principal.owner, idempotency_key)
    body_hash = request_hash(data)
    store, admission = gateway.view.store, gateway.admission
    known = store.get(task_id)
    if known is not None and idempotency_key is not None:
        check_replay(known, body_hash, idempotency_key)
        admission.admit_request(principal)
        return Accepted(task_id, known.status, known.lora_id, replayed=True)
    if idempotency_key is not None and not gateway.tasks_current():
        raise tasks_not_current()  # the key's task may have been accepted before this gateway started
    if task_id in gateway.in_flight:
        raise HTTPException(
            status_code=HTTP_409_CONFLICT,
            detail=f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry in a moment",
        )
    settings = gateway.settings
    pool = choose_pool(farm_pools(provide_workers(state), settings), data.model, data.task_type)
    await check_webhook(data.webhook, settings)
    for lora in data.loras:
        await check_lora_id(gateway.storage, lora.lora_id, principal)
    cost = generation_cost(data.duration, data.batch_size, data.inference_steps)
    gateway.in_flight.add(task_id)
    try:
        with admission.admit_job(principal, cost, data.priority):
            keys = await _stored_inputs(gateway, principal, data, task_id)
            params = data.to_params(src_audio_key=keys["src"], reference_audio_key=keys["reference"])
            if pool.key is not None and params.model != pool.name:  # routed by task type: say where
                params = params.model_copy(update={"model": pool.name})
            topic, event = route(
                task_id,
                params,
                settings,
                intake=pool.intake,
                owner=principal.owner,
                priority=data.priority,
                request_hash=body_hash,
                webhook=data.webhook,
                webhook_events=data.webhook_events,
            )
            await publish(gateway.producer, topic, event)
            store.record_submitted(event)
            TASKS_SUBMITTED.labels(TaskKind.GENERATION.value).inc()
    finally:
        gateway.in_flight.discard(task_id)
    log.info(
        "gateway.submitted",
        task_id=task_id,
        owner=principal.owner,
        task_type=params.task_type.value,
        duration=params.duration,
        model=pool.name,
    )
    return Accepted(task_id, TaskState.PENDING, params.lora_id, replayed=False)


GENERATE_RULES = (
    "task_type repaint, extend, extract, lego and complete need source audio (src_audio or src_audio_key), "
    "cover needs source or reference audio; repaint needs repaint_start and repaint_end, and repaint_end must "
    "be greater than repaint_start; extract and lego need track_name, complete needs complete_track_classes; "
    "give an input inline (src_audio, reference_audio) or as a key (src_audio_key, reference_audio_key), not "
    "both; give lora_id (with lora_scale) or loras, not both, and name each LoRA in loras once."
)
"""The cross-field rules of `GenerateRequest` (`schemas.generation`), for the 422's description."""


class GenerationController(Controller):
    """`POST /generate`."""

    tags = ("generation",)

    @post(
        "/generate",
        middleware=[fast_submit(accept_generation)],
        before_request=require_json,
        status_code=HTTP_202_ACCEPTED,
        summary="Submit a generation job",
        responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503, rules=GENERATE_RULES),
    )
    async def generate(
        self,
        principal: NamedDependency[Principal],
        state: State,
        data: JSONBody[GenerateRequest],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name=IDEMPOTENCY_HEADER,
                min_length=1,
                max_length=MAX_IDEMPOTENCY_KEY,
                description="Retry-safe submission: the same key and body always answer with the same task and "
                "queue it once; the same key with another body is refused (422). Keys are per owner.",
            ),
        ] = None,
    ) -> Response[TaskAccepted]:
        """Validate the request, store inline audio under `inputs/{task_id}/`, queue the job; 202 with its id.

        A field the schema refuses answers 400 naming the field and what to fix (413 for audio over the size
        limit). A schema-valid request that cannot be used answers 422 saying what to fix: fields valid one by
        one but not together (`GENERATE_RULES`), inline audio that is not readable audio within the limits,
        an unknown key or LoRA, a `model` nobody serves or a task type its model cannot do (listing what is
        available).
        The job belongs to the caller: only its owner (or an admin) sees, follows or cancels it.
        The key's limits are checked before anything is stored or queued: a `priority` the key does not
        allow is 403, a cost (duration × batch_size × inference_steps) over its ceiling 400, too many
        unfinished jobs or requests 429, a farm queue over `MAX_QUEUED_JOBS` 503 (both with `Retry-After`).
        """
        return (await accept_generation(state, principal, data, idempotency_key)).response()
