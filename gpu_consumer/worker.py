"""The GPU consumer: the engine loaded once, generation jobs from the `gpu-workers` group (`GPU_CONSUMER`).

The runtime (`acefarm.runtime`) runs each job's lifecycle; this module says what a generation job
does: fetch the inputs, run the engine in a worker thread, store the takes.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from acefarm.infra.logging import get_logger
from acefarm.infra.pools import worker_pool
from acefarm.infra.settings import Settings
from acefarm.runtime.lifecycle import FAILURE_REASONS, Cancelled, Failed, FinalEvent, JobContext, JobWorker, Verdict
from acefarm.runtime.progress import Eta, ProgressEta, Report
from acefarm.runtime.service import Capabilities, WorkerKind
from gpu_consumer.audio_io import load_inputs, store_takes
from gpu_consumer.engine.base import Engine, EngineError, Job, JobCancelled, UnsupportedTask
from gpu_consumer.stage_clock import StageClock
from schemas import topics
from schemas.events import GenerationRequested, utcnow
from schemas.generation import GenerationParams
from schemas.results import GenerationResult, ModelUsed, used_metadata
from schemas.status import Stage

log = get_logger(__name__)


class GenerationWorker(JobWorker[GenerationRequested]):
    """Runs a `GenerationRequested` on the engine and stores its takes."""

    request_type = GenerationRequested

    def __init__(self, engine: Engine, model: ModelUsed) -> None:
        self._engine = engine
        self._model = model

    async def run(self, request: GenerationRequested, ctx: JobContext) -> FinalEvent:
        """Fetch the inputs, generate in a worker thread, store the takes; `TaskSucceeded` lists them with
        what the job used (`GenerationResult`: seeds, metadata, model, LoRAs, stage timings)."""
        queue_s = (utcnow() - request.occurred_at).total_seconds()
        clock = StageClock()
        params = with_seed(request.params)
        if params.model is not None and params.model != self._model.name:
            raise UnsupportedTask(
                f"the job asks for the model '{params.model}' but reached the pool '{self._model.name}'; "
                f"publish it to {topics.generation_requests_for(params.model)} (or send it through the gateway)"
            )
        if params.src_audio_key or params.reference_audio_key:
            clock.enter(Stage.LOADING)
            ctx.report_now(_report(Stage.LOADING, 0.0))
        src, ref = await load_inputs(ctx.storage, params, ctx.settings)

        def report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> None:
            clock.enter(stage)
            ctx.report(_report(stage, share, step, total))

        job = Job(
            task_id=request.task_id,
            params=params,
            src_audio=src,
            reference_audio=ref,
            report=report,
            is_cancelled=ctx.is_cancelled,
            storage=ctx.blocking_storage,
        )
        takes = await ctx.in_thread(lambda: self._engine.generate(job), name="engine")
        if ctx.is_cancelled():
            raise JobCancelled
        clock.enter(Stage.UPLOADING)
        ctx.report_now(_report(Stage.UPLOADING, 1.0))
        files = await store_takes(ctx.storage, request.task_id, takes, params.audio_format)
        seed = params.seed or 0
        result = GenerationResult(
            seeds=[seed + index for index in range(len(takes))],
            metadata=used_metadata(params),
            model=self._model,
            loras=params.loras,
            timings=clock.stop(queue_s),
        )
        return ctx.succeeded(files=files, result=result)

    def classify(self, error: Exception) -> Verdict | None:
        """`JobCancelled` → cancelled; `EngineError` → failed with its reason (unknown ones: `engine_error`)."""
        if isinstance(error, JobCancelled):
            return Cancelled()
        if isinstance(error, EngineError):
            reason = error.reason if error.reason in FAILURE_REASONS else "engine_error"
            return Failed(reason, str(error).strip() or type(error).__name__)
        return None

    def progress_eta(self) -> Eta:
        """Time left from the diffusion steps' pace."""
        return ProgressEta(Stage.DIFFUSION)


def with_seed(params: GenerationParams) -> GenerationParams:
    """`params` with a random seed when none was given: take i of a job uses seed + i, reported in its result."""
    if params.seed is not None:
        return params
    return params.model_copy(update={"seed": secrets.randbelow(2**32)})


def model_used(engine: Engine, settings: Settings) -> ModelUsed:
    """The model a consumer serves: its pool (`MODEL_NAME`), engine, and `MODEL_PATH`'s name or `MODEL_ID`."""
    if settings.model_path is not None:
        return ModelUsed(name=worker_pool(settings), engine=engine.name, id=Path(settings.model_path).name)
    return ModelUsed(
        name=worker_pool(settings), engine=engine.name, id=settings.model_id, revision=settings.model_revision
    )


def engine_capabilities(engine: Engine) -> Capabilities:
    """The task types the loaded checkpoint runs and its device."""
    device = engine.info().get("device")
    return Capabilities(
        task_types=tuple(sorted(task.value for task in engine.supported_tasks)),
        device=str(device) if device else None,
    )


def load_engine_timed(settings: Settings) -> Engine:
    """Load the engine chosen by `ENGINE` and log how long it took."""
    from gpu_consumer.engine.loader import load_engine

    started = time.monotonic()
    engine = load_engine(settings)
    log.info(
        "engine.loaded",
        engine=getattr(engine, "name", type(engine).__name__),
        seconds=round(time.monotonic() - started, 3),
        device=settings.device,
    )
    return engine


def _report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> Report:
    message = f"{stage.value} step {step}/{total}" if step is not None and total else stage.value
    return Report(stage, share, step, total, message=message)


GPU_CONSUMER = WorkerKind(
    name="consumer",
    service="gpu-consumer",
    topic=topics.GENERATION_REQUESTS,
    group_id=topics.GPU_WORKERS_GROUP,
    load=load_engine_timed,
    make_job=lambda engine, settings: GenerationWorker(engine, model_used(engine, settings)),
    grace_s=30.0,
    pooled=True,
    capabilities=engine_capabilities,
)
"""`acefarm gpu-consumer`: one process per GPU, one job at a time, serving one model pool (docs/consumer.md)."""
