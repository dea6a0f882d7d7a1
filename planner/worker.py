"""The planner: ACE-Step's 5 Hz LM, loaded once, jobs from the `lm-planners` group (`PLANNER`).

A `generate` job (and a `sample` job that asks for the song) ends by forwarding an enriched
`GenerationRequested` (same task id) to the DiT's topic; the DiT worker publishes the final event.
`format`, `understand` and plain `sample` jobs end with `TaskSucceeded` carrying their `result`.

Exactly-once reporting: the forward is stored before it is published and a redelivered job
republishes the stored forward (same event id, same codes) instead of planning again. A planner
killed between the forward's acknowledgement and the commit therefore makes the DiT run the same
request twice at most; the status fold reports the task once (the first final event wins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from acefarm.infra.audio import AudioInputError, decode_audio
from acefarm.infra.logging import get_logger
from acefarm.infra.pools import pool_key
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage
from acefarm.model.lm.audio_codes import AudioCoder, NoAudioTokenizer
from acefarm.model.lm.decode import DecodeCancelled, Hooks
from acefarm.model.lm.loading import LmInfo, load_lm
from acefarm.model.lm.planner import FiveHzLm, LmOutcome
from acefarm.runtime.events import read_stored_event
from acefarm.runtime.lifecycle import Cancelled, Failed, Forward, Interrupted, JobContext, JobWorker, Outcome, Verdict
from acefarm.runtime.progress import Eta, ProgressEta, Report
from acefarm.runtime.service import WorkerKind
from planner.plans import (
    forward_event_id,
    given_of_format,
    given_of_sample,
    plan_input,
    planned_params,
    result_of,
    sampled_params,
    sampling_of,
)
from schemas import topics
from schemas.events import GenerationRequested, PlanningRequested, SubmittedRequest
from schemas.generation import GenerationParams
from schemas.planning import LmResult, PlanMode
from schemas.status import Stage
from schemas.storage_keys import audio_codes_key, forward_key

log = get_logger(__name__)

LmWork = Callable[[Hooks], LmOutcome]
"""A blocking LM job, given its hooks."""


class PlanStopped(Exception):
    """Shutdown asked the running LM job to stop: left uncommitted, redone by the next planner."""


class BadInput(Exception):
    """The job's input cannot be used (shown to the user)."""


@dataclass(frozen=True)
class LoadedLm:
    """What a planner process loads once: the LM, where it came from, and the audio coder for `understand`."""

    lm: FiveHzLm
    info: LmInfo
    coder: AudioCoder


class PlanningWorker(JobWorker[PlanningRequested]):
    """Runs one `PlanningRequested` on the 5 Hz LM."""

    request_type = PlanningRequested

    def __init__(self, loaded: LoadedLm, settings: Settings) -> None:
        self._lm = loaded.lm
        self._coder = loaded.coder
        self._settings = settings

    async def run(self, request: PlanningRequested, ctx: JobContext) -> Outcome:
        """Plan, sample, format or understand; forward the planned generation or succeed with the result."""
        ctx.report_now(Report(Stage.PLANNING, 0.0, message=f"planning: {request.mode.value}"))
        if request.mode is PlanMode.GENERATE and request.params is not None:
            return await self._generate(request, request.params, ctx)
        if request.mode is PlanMode.SAMPLE and request.sample is not None:
            job = request.sample
            outcome = await self._in_lm(
                ctx,
                64 + self._lm.lyrics_max_tokens,
                lambda hooks: self._lm.sample(
                    job.query,
                    job.instrumental,
                    given_of_sample(job),
                    sampling_of(job, job.seed),
                    hooks,
                    constrained=job.constrained_decoding,
                ),
            )
            if job.generate:
                return await self._generate(request, sampled_params(job, outcome), ctx, described=outcome)
            return ctx.succeeded(result=result_of(outcome))
        if request.mode is PlanMode.FORMAT and request.format is not None:
            fmt = request.format
            outcome = await self._in_lm(
                ctx,
                64 + self._lm.lyrics_max_tokens,
                lambda hooks: self._lm.format(
                    fmt.prompt,
                    fmt.lyrics,
                    given_of_format(fmt),
                    sampling_of(fmt, fmt.seed),
                    hooks,
                    constrained=fmt.constrained_decoding,
                ),
            )
            return ctx.succeeded(result=result_of(outcome))
        if request.mode is PlanMode.UNDERSTAND and request.understand is not None:
            return await self._understand(request, ctx)
        raise BadInput(f"mode '{request.mode.value}' needs its input")  # pragma: no cover - the schema checks it

    async def _generate(
        self,
        request: PlanningRequested,
        params: GenerationParams,
        ctx: JobContext,
        *,
        described: LmOutcome | None = None,
    ) -> Forward:
        job = plan_input(params)
        sampling = sampling_of(params, params.seed)
        expected = 64 + (round(params.duration * 5) if job.codes else 0)
        outcome = await self._in_lm(
            ctx, expected, lambda hooks: self._lm.plan(job, sampling, hooks, constrained=params.constrained_decoding)
        )
        codes_key = None
        if outcome.codes:
            data = outcome.codes.encode()
            codes_key = (await ctx.storage.put_bytes(audio_codes_key(request.task_id), data, "text/plain")).key
        result = result_of(outcome, duration=params.duration, codes_key=codes_key)
        if described is not None:  # a sample job: report what the LM wrote in the first step too
            first = result_of(described)
            merged = result.model_dump(exclude_none=True) | {
                "caption": first.caption,
                "lyrics": first.lyrics,
                "decided_by_lm": sorted(set(first.decided_by_lm) | set(result.decided_by_lm)),
                "lm_seconds": described.seconds | outcome.seconds,
            }
            result = LmResult.model_validate(merged)
        try:
            enriched = planned_params(params, outcome)
        except ValidationError as error:
            raise BadInput(f"the LM's plan is not a valid generation: {error.errors()[0]['msg']}") from error
        event = GenerationRequested(
            event_id=forward_event_id(request.task_id),
            task_id=request.task_id,
            params=enriched,
            plan=result,
            **request.model_dump(include=set(SubmittedRequest.model_fields)),
        )
        # Stored before it is published: a redelivery republishes this very request (`replay`).
        await ctx.storage.put_bytes(forward_key(request.task_id), event.to_bytes(), "application/json")
        ctx.report_now(Report(Stage.PLANNING, 1.0, message="planned: forwarded to the DiT"))
        return Forward(intake_of(event, ctx.settings), event)

    async def _understand(self, request: PlanningRequested, ctx: JobContext) -> Outcome:
        assert request.understand is not None
        job = request.understand
        try:
            raw = await ctx.storage.get_bytes(job.audio_key)
        except FileNotFoundError:
            raise BadInput(f"audio not found in storage (key {job.audio_key!r})") from None
        settings = ctx.settings
        try:
            audio, _ = await asyncio.to_thread(
                decode_audio,
                raw,
                max_bytes=settings.max_input_audio_bytes,
                max_seconds=settings.max_input_audio_seconds,
            )
        except AudioInputError as error:
            raise BadInput(f"audio is unusable: {error}") from error
        codes = await ctx.in_thread(lambda: self._coder.encode(audio), name="tokenize")
        codes_key = (await ctx.storage.put_bytes(audio_codes_key(request.task_id), codes.encode(), "text/plain")).key
        outcome = await self._in_lm(
            ctx,
            64 + self._lm.lyrics_max_tokens,
            lambda hooks: self._lm.understand(
                codes, sampling_of(job, job.seed), hooks, constrained=job.constrained_decoding
            ),
        )
        outcome.codes = codes
        return ctx.succeeded(result=result_of(outcome, codes_key=codes_key))

    async def _in_lm(self, ctx: JobContext, expected: int, work: LmWork) -> LmOutcome:
        """Run `work` in a thread with progress (tokens drawn / `expected`) and cancel/stop checks."""
        drawn = 0

        def on_token() -> None:
            nonlocal drawn
            drawn += 1
            if drawn % 8 == 0:
                share = min(drawn / max(expected, 1), 0.99)
                ctx.report(Report(Stage.PLANNING, share, drawn, expected, message=f"planning: {drawn} tokens"))

        def cancelled() -> bool:
            if ctx.stop_requested():
                raise PlanStopped
            return ctx.is_cancelled()

        hooks = Hooks(on_token=on_token, cancelled=cancelled)
        return await ctx.in_thread(lambda: work(hooks), name="lm")

    def classify(self, error: Exception) -> Verdict | None:
        """Cancelled while decoding → cancelled; shutdown → interrupted; bad input / no tokenizer → failed."""
        if isinstance(error, DecodeCancelled):
            return Cancelled()
        if isinstance(error, PlanStopped):
            return Interrupted()
        if isinstance(error, BadInput):
            return Failed("invalid_input", str(error))
        if isinstance(error, NoAudioTokenizer):
            return Failed("unsupported", str(error))
        return None

    def progress_eta(self) -> Eta:
        """Time left from the pace of the LM's tokens."""
        return ProgressEta(Stage.PLANNING)

    async def replay(self, request: PlanningRequested, storage: Storage) -> Outcome | None:
        """The forward stored by an earlier delivery of this task, if any (republished unchanged)."""
        event = await read_stored_event(storage, forward_key(request.task_id))
        return Forward(intake_of(event, self._settings), event) if isinstance(event, GenerationRequested) else None


def intake_of(event: GenerationRequested, settings: Settings) -> str:
    """The generation intake a planned request goes to: that of the model pool its `model` names (the gateway
    names a pool whenever it routed to one other than the default)."""
    return topics.generation_requests(pool_key(event.params.model, settings))


def load_planner(settings: Settings) -> LoadedLm:
    """Load the 5 Hz LM (and prepare the audio coder) and log what was loaded."""
    lm, info = load_lm(settings)
    log.info("lm.loaded", source=info.source, device=info.device, dtype=info.dtype, seconds=info.load_s)
    return LoadedLm(lm=lm, info=info, coder=AudioCoder(settings))


PLANNER = WorkerKind(
    name="planner",
    service="planner",
    topic=topics.PLANNING_REQUESTS,
    group_id=topics.PLANNERS_GROUP,
    load=load_planner,
    make_job=PlanningWorker,
    grace_s=20.0,
)
"""`acefarm planner`: one process per LM GPU, one LM job at a time (docs/planner.md)."""
