"""The GPU consumer: the engine loaded once, generation jobs from the `gpu-workers` group (`GPU_CONSUMER`).

The runtime (`acefarm.runtime`) runs each job's lifecycle; this module says what a generation job
does: fetch the inputs, run the engine in a worker thread, store the takes.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import AUDIO_SECONDS, TAKES
from acefarm.infra.pools import pool_key, worker_pool
from acefarm.infra.settings import Settings
from acefarm.runtime.identity import Capabilities
from acefarm.runtime.lifecycle import FAILURE_REASONS, Cancelled, Failed, FinalEvent, JobContext, JobWorker, Verdict
from acefarm.runtime.progress import Eta, ProgressEta, Report
from acefarm.runtime.service import WorkerKind
from acefarm.runtime.stage_clock import StageSeconds
from acefarm.runtime.watchdog import job_deadline_s
from gpu_consumer.audio_io import load_inputs, store_takes
from gpu_consumer.engine.base import Engine, EngineError, Job, JobCancelled, Take, UnsupportedTask, batch_call
from gpu_consumer.gpu_metrics import register_gpu_metrics
from schemas import topics
from schemas.events import GenerationRequested, utcnow
from schemas.generation import GenerationParams
from schemas.planning import LmOptions
from schemas.results import GenerationUsed, ModelUsed, StageTimings, lm_fields, used_metadata
from schemas.status import Stage

log = get_logger(__name__)


class GenerationWorker(JobWorker[GenerationRequested]):
    """Runs a `GenerationRequested` on the engine and stores its takes."""

    request_type = GenerationRequested
    prepares_ahead = True

    def __init__(self, engine: Engine, model: ModelUsed) -> None:
        self._engine = engine
        self._model = model
        self._generate_batch = batch_call(engine)

    def batch_key(self, request: GenerationRequested, settings: Settings) -> Hashable | None:
        """Jobs without input audio or audio codes batch when every setting the engine call shares is equal
        (model, LoRAs, task type, steps, guidance, metadata, ...) and their durations fall in the same
        `BATCH_DURATION_BUCKET_S` bucket; what each job has of its own (prompt, lyrics, language, seed, takes,
        format, LM options) may differ. None (never batched) otherwise."""
        params = request.params
        if params.src_audio_key or params.reference_audio_key or params.audio_codes is not None:
            return None
        shared = params.model_dump(mode="json", exclude=set(PER_JOB_FIELDS))
        bucket = math.ceil(params.duration / settings.batch_duration_bucket_s)
        return bucket, json.dumps(shared, sort_keys=True)

    async def prepare(self, request: GenerationRequested, ctx: JobContext) -> Inputs:
        """Refuse a job for another model pool, then fetch and decode the source and reference audio (while the
        previous job computes)."""
        params = request.params
        if params.model is not None and params.model != self._model.name:
            raise UnsupportedTask(
                f"the job asks for the model '{params.model}' but reached the pool '{self._model.name}'; "
                f"publish it to {topics.generation_requests(pool_key(params.model, ctx.settings))} "
                "(or send it through the gateway)"
            )
        if not (params.src_audio_key or params.reference_audio_key):
            return Inputs(None, None, None)
        started = time.monotonic()
        src, ref = await load_inputs(ctx.storage, params, ctx.settings)
        return Inputs(src, ref, time.monotonic() - started)

    async def run(self, request: GenerationRequested, ctx: JobContext) -> FinalEvent:
        """Generate in a worker thread (the next job is prepared meanwhile), store the takes; `TaskSucceeded`
        lists them with what the job used (`used`: seeds, metadata with sources, model, LoRAs, stage timings)
        and, for a planned job, what the LM decided (`result`)."""
        queue_s = (utcnow() - request.occurred_at).total_seconds()
        params = with_seed(request.params)
        inputs: Inputs = ctx.prepared
        if inputs.seconds is not None:
            ctx.stages.record(Stage.LOADING, inputs.seconds)
        src, ref = inputs.src, inputs.ref

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
        takes: list[Take] = await ctx.compute_shared(job, self._generate)
        if ctx.is_cancelled():
            raise JobCancelled
        ctx.report_now(_report(Stage.UPLOADING, 1.0))
        files = await store_takes(ctx.storage, request.task_id, takes, params.audio_format)
        TAKES.inc(len(files))
        AUDIO_SECONDS.inc(sum(f.duration_s or 0.0 for f in files))
        seed = params.seed or 0
        used = GenerationUsed(
            seeds=[seed + index for index in range(len(takes))],
            metadata=used_metadata(params, lm_fields(request.plan)),
            model=self._model,
            loras=params.loras,
            timings=stage_timings(ctx.stages.stop(), queue_s),
        )
        return ctx.succeeded(files=files, result=request.plan, used=used)

    def _generate(self, jobs: list[Job]) -> list[list[Take]]:
        """The engine call for one job, or one batch of jobs (logged with their task ids)."""
        if len(jobs) == 1:
            return [self._engine.generate(jobs[0])]
        log.info("engine.batch", jobs=len(jobs), tasks=[job.task_id for job in jobs])
        return self._generate_batch(jobs)

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


PER_JOB_FIELDS: frozenset[str] = frozenset(
    {"prompt", "style", "lyrics", "instrumental", "vocal_language", "seed", "batch_size", "audio_format", "duration"}
    | (set(LmOptions.model_fields) - {"audio_codes"})
)
"""What each member of a batch has of its own; every other parameter must be equal to share an engine call."""


@dataclass(frozen=True)
class Inputs:
    """A job's decoded source and reference audio, and how long fetching them took (None: none to fetch)."""

    src: np.ndarray | None
    ref: np.ndarray | None
    seconds: float | None


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
    """Load the engine chosen by `ENGINE` and log how long it took; GPU gauges are exported when CUDA is available."""
    from gpu_consumer.engine.loader import load_engine

    started = time.monotonic()
    engine = load_engine(settings)
    register_gpu_metrics()
    log.info(
        "engine.loaded",
        engine=getattr(engine, "name", type(engine).__name__),
        seconds=round(time.monotonic() - started, 3),
        device=settings.device,
    )
    return engine


_TIMED_STAGES: dict[Stage, str] = {
    Stage.LOADING: "inputs_s",
    Stage.ENCODING: "encode_s",
    Stage.DIFFUSION: "diffusion_s",
    Stage.DECODING: "decode_s",
    Stage.UPLOADING: "upload_s",
}


def stage_timings(measured: StageSeconds, queue_s: float | None = None) -> StageTimings:
    """A generation job's reported timings from its stage clock (to 0.1 ms; a negative queue wait from clock
    skew is 0)."""
    fields = {_TIMED_STAGES[stage]: round(s, 4) for stage, s in measured.by_stage.items() if stage in _TIMED_STAGES}
    queue = None if queue_s is None else round(max(queue_s, 0.0), 4)
    return StageTimings(queue_s=queue, total_s=round(measured.total_s, 4), **fields)


def _report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> Report:
    message = f"{stage.value} step {step}/{total}" if step is not None and total else stage.value
    return Report(stage, share, step, total, message=message)


GPU_CONSUMER = WorkerKind(
    name="consumer",
    service="gpu-consumer",
    topic=topics.GENERATION_READY,
    group_id=topics.GPU_WORKERS_GROUP,
    load=load_engine_timed,
    make_job=lambda engine, settings: GenerationWorker(engine, model_used(engine, settings)),
    grace_s=30.0,
    pool_topics=lambda pool: (topics.generation_ready(pool), topics.gpu_workers_group(pool)),
    capabilities=engine_capabilities,
    batches=True,
)
"""`acefarm gpu-consumer`: one process per GPU, one job (or one batch of compatible jobs) at a time, serving one
model pool (docs/consumer.md)."""
