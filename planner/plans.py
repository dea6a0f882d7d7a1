"""Between the contract and the LM: what to plan for a request and what the LM's outcome becomes (the
planner's storage keys are in `schemas.storage_keys`)."""

from __future__ import annotations

import hashlib

from acefarm.model.lm.decode import Sampling
from acefarm.model.lm.planner import LmOutcome, PlanInput
from acefarm.model.lm.protocol import Metas, count_codes
from schemas.generation import GenerationParams
from schemas.planning import FormatInput, LmResult, LmSampling, SampleInput


def forward_event_id(task_id: str) -> str:
    """The forwarded request's event id: the same for every forward of a task, so duplicates are recognisable."""
    return hashlib.sha256(f"{task_id}/planned".encode()).hexdigest()[:32]


def sampling_of(options: LmSampling, seed: int | None) -> Sampling:
    """The decoder's sampling settings from the request's `lm_*` fields."""
    top_p = options.lm_top_p if options.lm_top_p is not None and options.lm_top_p < 1 else None
    return Sampling(
        temperature=options.lm_temperature,
        top_k=options.lm_top_k or None,
        top_p=top_p,
        cfg_scale=options.lm_cfg_scale,
        seed=seed,
    )


def plan_input(params: GenerationParams) -> PlanInput:
    """What the LM decides for a generation: metas (`use_cot_metas`), caption, language; codes when `thinking`."""
    decide: set[str] = set()
    if params.cot("metas"):
        decide |= {"bpm", "keyscale", "timesignature"}
    if params.cot("caption"):
        decide.add("caption")
    if params.cot("language"):
        decide.add("language")
    given = Metas(
        bpm=params.bpm,
        duration=max(1, round(params.duration)),
        keyscale=params.key,
        language=None if "language" in decide else params.vocal_language,
        timesignature=params.time_signature,
    )
    return PlanInput(
        caption=params.caption(),
        lyrics=params.lyrics_for_model(),
        given=given,
        decide=frozenset(decide),
        codes=params.thinking,
        negative_prompt=params.lm_negative_prompt,
    )


def planned_params(params: GenerationParams, outcome: LmOutcome) -> GenerationParams:
    """The generation the DiT runs: the LM's metadata (and caption) filled in, its codes attached."""
    metas = outcome.metas
    update: dict[str, object] = {
        "bpm": metas.bpm,
        "key": metas.keyscale,
        "time_signature": metas.timesignature,
        "vocal_language": metas.language or params.vocal_language,
    }
    if "caption" in outcome.decided and metas.caption:
        update |= {"prompt": metas.caption, "style": None}
    if outcome.codes:
        update["audio_codes"] = outcome.codes
    return GenerationParams.model_validate(params.model_dump() | update)


def result_of(outcome: LmOutcome, *, duration: float | None = None, codes_key: str | None = None) -> LmResult:
    """The contract's `result` from an LM outcome (`duration` overrides the LM's whole seconds)."""
    metas = outcome.metas
    names = {"keyscale": "key", "timesignature": "time_signature", "language": "vocal_language"}
    return LmResult(
        caption=metas.caption,
        lyrics=outcome.lyrics,
        bpm=metas.bpm,
        key=metas.keyscale,
        time_signature=metas.timesignature,
        vocal_language=metas.language,
        duration=duration if duration is not None else metas.duration,
        decided_by_lm=[names.get(key, key) for key in outcome.decided],
        audio_codes_key=codes_key,
        audio_codes_count=count_codes(outcome.codes) if outcome.codes else None,
        lm_seconds=outcome.seconds,
    )


def given_of_format(job: FormatInput) -> Metas:
    """The metadata a format job keeps as given."""
    return Metas(
        bpm=job.bpm,
        duration=round(job.duration) if job.duration is not None else None,
        keyscale=job.key,
        language=job.vocal_language,
        timesignature=job.time_signature,
    )


def given_of_sample(job: SampleInput) -> Metas:
    """The metadata a sample job keeps as given."""
    return Metas(duration=round(job.duration) if job.duration is not None else None, language=job.vocal_language)


def sampled_params(job: SampleInput, outcome: LmOutcome) -> GenerationParams:
    """The song a sample job asks for: the LM's caption, lyrics and metadata as a generation (LM-planned codes
    follow when `thinking`)."""
    metas = outcome.metas
    return GenerationParams(
        prompt=metas.caption or job.query,
        lyrics=outcome.lyrics or "",
        instrumental=job.instrumental,
        duration=float(job.duration or metas.duration or 30),
        bpm=metas.bpm,
        key=metas.keyscale,
        time_signature=metas.timesignature,
        vocal_language=metas.language or job.vocal_language or "unknown",
        seed=job.seed,
        thinking=job.thinking,
        **job.model_dump(include=set(LmSampling.model_fields)),
    )
