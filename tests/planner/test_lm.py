"""The 5 Hz LM in-process on the tiny random LM: constrained decoding, prompts, parsing, routing, replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage
from acefarm.model.lm.decode import Hooks, Sampling
from acefarm.model.lm.fields import KEYS, LANGUAGES
from acefarm.model.lm.hf_backend import TransformersBackend
from acefarm.model.lm.planner import FiveHzLm, PlanInput
from acefarm.model.lm.protocol import THINK_CLOSE, THINK_OPEN, Metas, code_token, parse_output, think_block
from acefarm.model.lm.tiny import build_tiny_lm
from gateway.routing import route
from planner.plans import forward_event_id, plan_input, planned_params
from planner.worker import LoadedLm, PlanningWorker
from schemas import topics
from schemas.events import GenerationRequested, PlanningRequested
from schemas.generation import GenerationParams
from schemas.planning import PlanMode
from schemas.storage_keys import forward_key

ALL_KEYS = frozenset({"bpm", "caption", "keyscale", "language", "timesignature"})


@pytest.fixture(scope="module")
def lm() -> FiveHzLm:
    model, tokenizer = build_tiny_lm(seed=0, codes=512)
    return FiveHzLm(TransformersBackend(model, tokenizer, "cpu"), lyrics_max_tokens=16)


@pytest.mark.parametrize("seed", range(3))
def test_constrained_metadata_is_valid_even_from_a_random_lm(lm: FiveHzLm, seed: int) -> None:
    job = PlanInput("calm piano", "[verse]\nla", Metas(duration=3), ALL_KEYS, codes=True)
    sampling = Sampling(temperature=1.5, top_p=None, cfg_scale=2.0, seed=seed)
    out = lm.plan(job, sampling, Hooks())
    metas = out.metas
    assert metas.bpm is not None and 30 <= metas.bpm <= 300
    assert metas.keyscale in KEYS and metas.language in LANGUAGES and metas.timesignature in (2, 3, 4, 6)
    assert metas.caption and "\n" not in metas.caption and metas.duration == 3
    assert sorted(out.decided) == sorted(ALL_KEYS)
    assert parse_output(out.codes).codes == out.codes and out.codes.count("<|audio_code_") == 15


def test_given_values_are_kept_and_the_same_seed_plans_the_same(lm: FiveHzLm) -> None:
    job = PlanInput("rock", "", Metas(duration=2, bpm=99, keyscale="C major"), ALL_KEYS, codes=True)
    first = lm.plan(job, Sampling(seed=5), Hooks())
    again = lm.plan(job, Sampling(seed=5), Hooks())
    assert (first.metas.bpm, first.metas.keyscale) == (99, "C major")
    assert "bpm" not in first.decided and "keyscale" not in first.decided
    assert first.metas == again.metas and first.codes == again.codes


@pytest.mark.parametrize("seed", range(3))
def test_understand_keeps_given_values_and_may_stop_after_the_think_block(lm: FiveHzLm, seed: int) -> None:
    codes = "".join(code_token(i) for i in range(0, 300, 20))
    out = lm.understand(codes, Sampling(seed=seed), Hooks(), given=Metas(bpm=99), lyrics=False)
    metas = out.metas
    assert metas.bpm == 99 and "bpm" not in out.decided and out.lyrics == ""
    assert metas.caption and THINK_CLOSE not in metas.caption and THINK_OPEN not in metas.caption
    assert metas.keyscale in KEYS and metas.language in LANGUAGES and metas.timesignature in (2, 3, 4, 6)


def test_unconstrained_output_keeps_only_valid_values(lm: FiveHzLm) -> None:
    out = lm.plan(
        PlanInput("x", "", Metas(duration=2), ALL_KEYS, codes=False), Sampling(seed=1), Hooks(), constrained=False
    )
    assert out.metas.bpm is None or 30 <= out.metas.bpm <= 300
    assert out.metas.keyscale is None or out.metas.keyscale in KEYS
    assert out.metas.duration == 2 and not out.codes


def test_cancel_stops_decoding(lm: FiveHzLm) -> None:
    from acefarm.model.lm.decode import DecodeCancelled

    with pytest.raises(DecodeCancelled):
        lm.plan(PlanInput("x", "", Metas(duration=2), ALL_KEYS, True), Sampling(), Hooks(cancelled=lambda: True))


def test_think_block_round_trips_through_the_parser() -> None:
    metas = Metas(
        bpm=120, caption="warm  lo-fi\npiano", duration=30, keyscale="F# minor", language="en", timesignature=4
    )
    text = think_block(metas) + "\n\n# Lyric\n[verse]\nhello<|im_end|>"
    parsed = parse_output(text)
    assert parsed.metas == Metas(**{**metas.known(), "caption": "warm lo-fi piano"})  # type: ignore[arg-type]
    assert parsed.after_think.startswith("[verse]")


def test_the_gateway_routes_lm_requests_to_planning_and_given_codes_straight_to_the_dit() -> None:
    settings = Settings()
    plain = GenerationParams(prompt="p", duration=5)
    thinking = GenerationParams(prompt="p", duration=5, thinking=True)
    cot_only = GenerationParams(prompt="p", duration=5, use_cot_caption=True)
    given = GenerationParams(prompt="p", duration=5, thinking=True, audio_codes="<|audio_code_1|><|audio_code_2|>")
    assert route("a", plain, settings)[0] == topics.GENERATION_REQUESTS
    assert route("b", thinking, settings)[0] == topics.PLANNING_REQUESTS
    assert route("c", cot_only, settings)[0] == topics.PLANNING_REQUESTS
    topic, event = route("d", given, settings)
    assert topic == topics.GENERATION_REQUESTS and isinstance(event, GenerationRequested)
    assert plan_input(cot_only).decide == frozenset({"caption"}) and not plan_input(cot_only).codes


def test_a_plan_becomes_the_dits_request(lm: FiveHzLm) -> None:
    params = GenerationParams(prompt="p", style="jazz", duration=2, thinking=True, vocal_language="en")
    outcome = lm.plan(plan_input(params), Sampling(seed=2), Hooks())
    enriched = planned_params(params, outcome)
    assert enriched.audio_codes == outcome.codes and enriched.bpm == outcome.metas.bpm
    assert enriched.prompt == outcome.metas.caption and enriched.style is None
    assert enriched.vocal_language == outcome.metas.language


async def test_a_redelivered_job_republishes_the_stored_forward(tmp_path: Path, lm: FiveHzLm) -> None:
    storage = LocalStorage(tmp_path)
    worker = PlanningWorker(LoadedLm(lm=lm, info=None, coder=None), Settings(_env_file=None))  # type: ignore[arg-type, call-arg]
    params = GenerationParams(prompt="p", duration=2, thinking=True)
    request = PlanningRequested(task_id="t1", mode=PlanMode.GENERATE, params=params)
    assert await worker.replay(request, storage) is None
    stored = GenerationRequested(event_id=forward_event_id("t1"), task_id="t1", params=params)
    await storage.put_bytes(forward_key("t1"), stored.to_bytes(), "application/json")
    again = await worker.replay(request, storage)
    assert again is not None and again.topic == topics.GENERATION_REQUESTS and again.event == stored
