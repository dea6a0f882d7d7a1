"""Stage timings from the stages a job reports."""

from __future__ import annotations

import time

from gpu_consumer.stage_clock import StageClock
from schemas.status import Stage


def test_each_stage_lasts_until_the_next_begins() -> None:
    clock = StageClock()
    clock.enter(Stage.ENCODING)
    time.sleep(0.02)
    clock.enter(Stage.DIFFUSION)
    clock.enter(Stage.DIFFUSION)  # a repeated report changes nothing
    time.sleep(0.03)
    clock.enter(Stage.DECODING)
    clock.enter(Stage.UPLOADING)
    timings = clock.stop(queue_s=1.5)
    assert timings.encode_s is not None and timings.encode_s >= 0.02
    assert timings.diffusion_s is not None and timings.diffusion_s >= 0.03
    assert timings.decode_s is not None and timings.upload_s is not None
    assert timings.inputs_s is None, "no input audio was loaded"
    assert timings.queue_s == 1.5
    parts = timings.encode_s + timings.diffusion_s + timings.decode_s + timings.upload_s
    rounding = 4 * 0.00005  # each figure is rounded to 0.1 ms on its own
    assert timings.total_s is not None and timings.total_s >= parts - rounding


def test_a_negative_queue_wait_from_clock_skew_is_zero() -> None:
    assert StageClock().stop(queue_s=-0.2).queue_s == 0.0


def test_inputs_fetched_ahead_count_in_the_stage_and_the_total() -> None:
    clock = StageClock()
    clock.record(Stage.LOADING, 0.5)  # fetched while the previous job held the engine
    clock.enter(Stage.DIFFUSION)
    time.sleep(0.01)
    timings = clock.stop()
    assert timings.inputs_s == 0.5
    assert timings.diffusion_s is not None and timings.diffusion_s >= 0.01
    assert timings.total_s is not None and timings.total_s >= 0.5 + timings.diffusion_s - 3 * 0.00005
