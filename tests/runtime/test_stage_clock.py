"""A job's stage clock, the stage histogram it feeds, and the timings a generation job reports from it."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from acefarm.runtime.stage_clock import StageClock
from gpu_consumer.worker import stage_timings
from schemas.status import Stage

ROUNDING = 0.00005  # each reported figure is rounded to 0.1 ms on its own


def test_each_stage_lasts_until_the_next_begins() -> None:
    clock = StageClock()
    clock.enter(Stage.ENCODING)
    time.sleep(0.02)
    clock.enter(Stage.DIFFUSION)
    clock.enter(Stage.DIFFUSION)  # a repeated report changes nothing
    time.sleep(0.03)
    clock.enter(Stage.DECODING)
    clock.enter(Stage.UPLOADING)
    measured = clock.stop()
    timings = stage_timings(measured, queue_s=1.5)
    assert timings.encode_s is not None and timings.encode_s >= 0.02
    assert timings.diffusion_s is not None and timings.diffusion_s >= 0.03
    assert timings.decode_s is not None and timings.upload_s is not None
    assert timings.inputs_s is None, "no input audio was loaded"
    assert timings.queue_s == 1.5
    parts = timings.encode_s + timings.diffusion_s + timings.decode_s + timings.upload_s
    assert timings.total_s is not None and timings.total_s >= parts - 4 * ROUNDING


def test_a_negative_queue_wait_from_clock_skew_is_zero() -> None:
    assert stage_timings(StageClock().stop(), queue_s=-0.2).queue_s == 0.0


def test_inputs_fetched_ahead_count_in_the_stage_and_the_total() -> None:
    clock = StageClock()
    clock.record(Stage.LOADING, 0.5)  # fetched while the previous job held the engine
    clock.enter(Stage.DIFFUSION)
    time.sleep(0.01)
    measured = clock.stop()
    timings = stage_timings(measured)
    assert timings.inputs_s == 0.5
    assert timings.diffusion_s is not None and timings.diffusion_s >= 0.01
    assert timings.total_s is not None and timings.total_s >= 0.5 + timings.diffusion_s - 3 * ROUNDING


def _observed(stage: Stage) -> float:
    return REGISTRY.get_sample_value("acefarm_stage_seconds_count", {"stage": stage.value}) or 0.0


def test_an_observing_clock_feeds_the_stage_histogram_when_each_stage_ends() -> None:
    before = _observed(Stage.TRAINING), _observed(Stage.CHECKPOINTING)
    clock = StageClock(observe=True)
    clock.enter(Stage.TRAINING)
    clock.enter(Stage.CHECKPOINTING)
    assert (_observed(Stage.TRAINING), _observed(Stage.CHECKPOINTING)) == (before[0] + 1, before[1])
    clock.stop()
    assert (_observed(Stage.TRAINING), _observed(Stage.CHECKPOINTING)) == (before[0] + 1, before[1] + 1)
    assert StageClock().stop().by_stage == {}, "a clock without observe counts nothing"
