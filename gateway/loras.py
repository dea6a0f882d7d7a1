"""LoRA styles: `POST /train/lora` (check the dataset zip, store it, queue training), `GET/PATCH/DELETE /loras`,
and the check that a `lora_id` passed to `POST /generate` names a finished LoRA the caller may use.

A LoRA belongs to whoever trained it and is private until its owner publishes it (`PATCH /loras/{id}`
with `{"public": true}`). Others see a public LoRA without its tracks' lyrics and captions, and
someone else's private LoRA answers exactly like an unknown one. Only the owner or an admin changes or
deletes one.

Nothing is queued until the zip has passed every check in `acefarm.model.datasets`; each failure is a 4xx
naming the file and why. A LoRA is usable once its trainer has stored its manifest, so an unknown or
unfinished id is rejected before anything reaches a GPU.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, Response, Router, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_422_UNPROCESSABLE_ENTITY
from pydantic import BaseModel, ConfigDict, ValidationError

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import TASKS_SUBMITTED
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage
from acefarm.model.datasets import DatasetError
from acefarm.model.loras import (
    delete_lora,
    list_manifests,
    new_lora_id,
    read_manifest,
    write_manifest,
)
from gateway.allow import allow_route
from gateway.auth import Principal
from gateway.errors import FieldError, error_responses
from gateway.inputs import check_webhook, webhook_form_fields
from gateway.limits import training_cost
from gateway.state import GatewayState
from schemas import topics
from schemas.events import TrainingRequested
from schemas.status import TaskAccepted, TaskKind, TaskState
from schemas.storage_keys import dataset_key
from schemas.training import LoraManifest, TrainingOptions

log = get_logger(__name__)

_CHUNK = 1 << 20
LORA_PATH = "/loras/{lora_id:str}"


@dataclass
class DatasetUpload:
    """The fixed fields of the `POST /train/lora` form: the dataset zip and the style's name."""

    file: UploadFile
    """A zip of 3-50 tracks (wav, flac, mp3, ogg), optional `<track>.txt` lyrics and metadata.csv/json."""
    style_name: str
    webhook: str | None = None
    """URL called with signed POSTs as the training job moves (see docs/webhooks.md)."""
    webhook_events: str | None = None
    """Comma-separated events to deliver: start, progress, completed (default: completed)."""


if TYPE_CHECKING:  # type checkers see the fixed fields; `training_options` reads the options by name
    TrainLoraForm = DatasetUpload
else:
    TrainLoraForm = make_dataclass(
        "TrainLoraForm",
        [(name, info.annotation | None, field(default=None)) for name, info in TrainingOptions.model_fields.items()],
        bases=(DatasetUpload,),
        namespace={"__module__": __name__},
    )
    TrainLoraForm.__doc__ = (
        "Multipart form of `POST /train/lora`: `DatasetUpload` plus every `TrainingOptions` field, optional; "
        "empty options take the trainer's defaults (see docs/lora.md)."
    )


def max_upload_bytes(settings: Settings) -> int:
    """Largest `POST /train/lora` body: the zip limit plus room for the form fields."""
    return settings.lora_max_zip_bytes + 1024 * 1024


def training_options(form: DatasetUpload) -> TrainingOptions:
    """The options given in the form; `FieldError` naming the first bad one."""
    given = {name: getattr(form, name, None) for name in TrainingOptions.model_fields}
    given = {k: v for k, v in given.items() if v is not None and v != ""}
    try:
        return TrainingOptions(**given)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "options"
        raise FieldError(loc, first["msg"]) from None


class LoraUpdate(BaseModel):
    """Body of `PATCH /loras/{lora_id}`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    public: bool
    """True: every user may list it and generate with it (its lyrics and captions stay private)."""


def may_use(manifest: LoraManifest, principal: Principal) -> bool:
    """Whether `principal` may see and generate with this LoRA: its own, a public one, or any as admin."""
    return manifest.public or principal.may_access(manifest.owner)


def shown_to(manifest: LoraManifest, principal: Principal) -> LoraManifest:
    """The manifest as `principal` sees it: whole for its owner and admins, without lyrics and captions otherwise."""
    if principal.may_access(manifest.owner):
        return manifest
    tracks = [track.model_copy(update={"lyrics": None, "caption": None, "clips": []}) for track in manifest.tracks]
    return manifest.model_copy(update={"tracks": tracks})


async def check_lora_id(storage: Storage, lora_id: str | None, principal: Principal) -> None:
    """Raise `FieldError` (422) unless `lora_id` is None or names a finished LoRA `principal` may use."""
    if lora_id is None:
        return
    manifest = await read_manifest(storage, lora_id)
    if manifest is None or not may_use(manifest, principal):
        raise FieldError(
            "lora_id",
            f"no finished LoRA has the id {lora_id!r}; list them with GET /loras or wait for its training to succeed",
            HTTP_422_UNPROCESSABLE_ENTITY,
        )


async def _owned(storage: Storage, lora_id: str, principal: Principal) -> LoraManifest:
    """The manifest of a LoRA `principal` owns (any, for an admin); the unknown LoRA's 404 otherwise."""
    manifest = await read_manifest(storage, lora_id)
    if manifest is None or not principal.may_access(manifest.owner):
        raise _unknown_lora(lora_id)
    return manifest


def _unknown_lora(lora_id: str) -> NotFoundException:
    return NotFoundException(detail=f"no finished LoRA has the id {lora_id!r}")


async def _save_upload(upload: UploadFile, dest: Path, limit: int) -> None:
    """Copy the uploaded zip to `dest`, refusing more than `limit` bytes."""
    size = 0
    with dest.open("wb") as out:
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise FieldError(
                    "file",
                    f"the zip is larger than {limit} bytes (LORA_MAX_ZIP_BYTES)",
                    status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                )
            await asyncio.to_thread(out.write, chunk)
    if size == 0:
        raise FieldError("file", "the upload is empty; attach a zip of your tracks")


async def _stored_dataset(
    gateway: GatewayState, upload: UploadFile, task_id: str, request: Request[Any, Any, Any]
) -> tuple[str, int]:
    """Save the uploaded zip, check it completely (in a child process, a few at a time: 503 when busy; the
    check stops when the client leaves) and store it as `datasets/{task_id}.zip`; the key and the number of
    tracks. Every problem is a `FieldError` on `file`."""
    settings, checks = gateway.settings, gateway.dataset_checks
    checks.reserve()
    work = Path(tempfile.mkdtemp(prefix="acefarm-upload-"))
    try:
        zip_path = work / "dataset.zip"
        await _save_upload(upload, zip_path, settings.lora_max_zip_bytes)
        try:
            tracks = await checks.check(zip_path, request)
        except DatasetError as error:
            raise FieldError("file", str(error)) from None
        key = dataset_key(task_id)
        await gateway.storage.put_file(key, zip_path, "application/zip")
    finally:
        checks.release()
        await asyncio.to_thread(shutil.rmtree, work, True)
    return key, len(tracks)


class LorasController(Controller):
    """`POST /train/lora`, `GET /loras`, `GET/PATCH/DELETE /loras/{lora_id}`."""

    tags = ("lora",)

    @post(
        "/train/lora",
        status_code=HTTP_202_ACCEPTED,
        summary="Train a LoRA style from a zip of tracks",
        responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
    )
    async def train_lora(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        request: Request[Any, Any, Any],
        data: Annotated[TrainLoraForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[TaskAccepted]:
        """Check the dataset zip completely (paths, zip bombs, track count, every track decodes and fits the
        duration limits, sidecars), store it as `datasets/{task_id}.zip` and queue a training job.

        Answers 202 `{task_id, lora_id}`: follow the job at `/status/{task_id}`; once it succeeds, pass
        `lora_id` to `POST /generate`. Every problem answers 400 (413 for size) naming the file and why.
        The check runs in a child process with memory and time limits, a few at a time per gateway (503 with
        `Retry-After` when all are busy), and stops when the client disconnects.
        The LoRA belongs to the caller and stays private until published (`PATCH /loras/{lora_id}`).
        The key's limits are checked before the zip is stored: a cost (steps × `TRAINING_STEP_COST`) over
        its ceiling is 400, too many unfinished jobs or requests 429, a full farm queue 503.
        """
        settings = gateway.settings
        style_name = (data.style_name or "").strip()
        if not style_name or len(data.style_name) > 100:
            raise FieldError("style_name", "give the style a name of 1 to 100 characters")
        if not isinstance(data.file, UploadFile):
            raise FieldError("file", "attach the dataset as a file field named 'file' (a .zip of your tracks)")
        options = training_options(data)
        hook = webhook_form_fields(data.webhook, data.webhook_events)
        await check_webhook(hook.webhook, settings)
        task_id = uuid.uuid4().hex
        lora_id = new_lora_id(style_name)
        with gateway.admission.admit_job(principal, training_cost(options.steps, settings.training_step_cost)):
            key, tracks = await _stored_dataset(gateway, data.file, task_id, request)
            event = TrainingRequested(
                task_id=task_id,
                lora_id=lora_id,
                style_name=style_name,
                dataset_key=key,
                options=options,
                owner=principal.owner,
                webhook=hook.webhook,
                webhook_events=hook.webhook_events,
            )
            await publish(gateway.producer, topics.TRAINING_REQUESTS, event)
            gateway.view.store.record_submitted(event)
            TASKS_SUBMITTED.labels(TaskKind.TRAINING.value).inc()
        log.info("gateway.training_submitted", task_id=task_id, lora_id=lora_id, tracks=tracks, steps=options.steps)
        return Response(
            TaskAccepted(task_id=task_id, status=TaskState.PENDING, lora_id=lora_id),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/status/{task_id}"},
        )

    @get("/loras", summary="List trained LoRA styles", responses=error_responses(401))
    async def list_loras(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal]
    ) -> list[LoraManifest]:
        """The caller's own finished LoRAs and the public ones (admins: all), newest first, with their
        manifests: style, base model, options, tracks, loss. Others' tracks come without lyrics and captions."""
        manifests = await list_manifests(gateway.storage)
        return [shown_to(m, principal) for m in manifests if may_use(m, principal)]

    @get(LORA_PATH, summary="One LoRA style", responses=error_responses(401, 404))
    async def get_lora(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal], lora_id: FromPath[str]
    ) -> LoraManifest:
        """The LoRA's manifest; 404 while it is unknown, still training, or someone else's and private."""
        manifest = await read_manifest(gateway.storage, lora_id)
        if manifest is None or not may_use(manifest, principal):
            raise _unknown_lora(lora_id)
        return shown_to(manifest, principal)

    @patch(LORA_PATH, summary="Publish or unpublish a LoRA style", responses=error_responses(401, 404))
    async def update_lora(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        lora_id: FromPath[str],
        data: JSONBody[LoraUpdate],
    ) -> LoraManifest:
        """`{"public": true}` lets every user list and use the LoRA; `false` makes it private again.

        Only its owner or an admin may change it; anyone else gets the unknown LoRA's 404.
        """
        manifest = await _owned(gateway.storage, lora_id, principal)
        if manifest.public != data.public:
            manifest = manifest.model_copy(update={"public": data.public})
            await write_manifest(gateway.storage, manifest)
            log.info("gateway.lora_published", lora_id=lora_id, public=data.public, by=principal.owner)
        return manifest

    @delete(LORA_PATH, summary="Delete a LoRA style", responses=error_responses(401, 404))
    async def delete_lora_route(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal], lora_id: FromPath[str]
    ) -> None:
        """Remove the adapter and its manifest; later generation requests naming it are rejected.

        Only its owner or an admin may delete it; anyone else gets the unknown LoRA's 404.
        """
        await _owned(gateway.storage, lora_id, principal)
        if not await delete_lora(gateway.storage, lora_id):
            raise _unknown_lora(lora_id)
        log.info("gateway.lora_deleted", lora_id=lora_id, by=principal.owner)


def lora_routes(settings: Settings) -> Router:
    """`LorasController` under the body limit of `POST /train/lora` (`max_upload_bytes`), with an `OPTIONS`
    for `/loras/{lora_id}` that lists its three methods (`gateway.allow`)."""
    return Router(
        path="/",
        route_handlers=[allow_route(LORA_PATH), LorasController],  # first: it replaces the automatic OPTIONS
        request_max_body_size=max_upload_bytes(settings),
    )
