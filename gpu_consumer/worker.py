"""The GPU consumer: the engine loaded once, generation jobs from the `gpu-workers` group (`GPU_CONSUMER`).

The runtime (`acefarm.runtime`) runs each job's lifecycle; this module says what a generation job
does: fetch the inputs, run the engine in a worker thread, store the takes.
"""

from __future__ import annotations

import time
from typing import Any

from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import AUDIO_SECONDS, TAKES
from acefarm.infra.settings import Settings
from acefarm.runtime.lifecycle import FAILURE_REASONS, Cancelled, Failed, FinalEvent, JobContext, JobWorker, Verdict
from acefarm.runtime.progress import Eta, ProgressEta, Report
from acefarm.runtime.service import WorkerKind
from acefarm.runtime.watchdog import job_deadline_s
from gpu_consumer.audio_io import load_inputs, store_takes
from gpu_consumer.engine.base import Engine, EngineError, Job, JobCancelled
from gpu_consumer.gpu_metrics import register_gpu_metrics
from schemas import topics
from schemas.events import GenerationRequested
from schemas.status import Stage

log = get_logger(__name__)


class GenerationWorker(JobWorker[GenerationRequested]):
    """Runs a `GenerationRequested` on the engine and stores its takes."""

    request_type = GenerationRequested

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def prepare(self, request: GenerationRequested, ctx: JobContext) -> tuple[Any, Any]:
        """Fetch and decode the source and reference audio (while the previous job computes)."""
        return await load_inputs(ctx.storage, request.params, ctx.settings)

    async def run(self, request: GenerationRequested, ctx: JobContext) -> FinalEvent:
        """Generate in a worker thread (the next job is prepared meanwhile), store the takes; `TaskSucceeded`
        lists them."""
        params = request.params
        src, ref = ctx.prepared

        def report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> None:
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
        async with ctx.compute():
            takes = await ctx.in_thread(lambda: self._engine.generate(job), name="engine")
        if ctx.is_cancelled():
            raise JobCancelled
        ctx.report_now(_report(Stage.UPLOADING, 1.0))
        files = await store_takes(ctx.storage, request.task_id, takes, params.audio_format)
        TAKES.inc(len(files))
        AUDIO_SECONDS.inc(sum(f.duration_s or 0.0 for f in files))
        return ctx.succeeded(files=files, result=request.plan)

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

    def deadline_s(self, request: GenerationRequested, settings: Settings) -> float:
        """The base deadline plus `GENERATION_DEADLINE_PER_UNIT_S` per second of audio × take × step."""
        params = request.params
        units = params.duration * params.batch_size * params.inference_steps
        return job_deadline_s(settings, units, settings.generation_deadline_per_unit_s)


def load_engine_timed(settings: Settings) -> Engine:
    """Load the engine chosen by `ENGINE` and log how long it took; GPU gauges are exported when CUDA is available."""
    from gpu_consumer.engine.loader import load_engine

    register_gpu_metrics()
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
    topic=topics.GENERATION_READY,
    group_id=topics.GPU_WORKERS_GROUP,
    load=load_engine_timed,
    make_job=lambda engine, settings: GenerationWorker(engine),
    grace_s=30.0,
)
"""`acefarm gpu-consumer`: one process per GPU, one job at a time (docs/consumer.md)."""
