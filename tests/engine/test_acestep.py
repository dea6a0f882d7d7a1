"""AceStepEngine through the real AceStepPipeline on the tiny random checkpoint (its audio is noise)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from acefarm.infra.audio import SAMPLE_RATE, decode_audio, encode_audio
from acefarm.infra.settings import Settings
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import EngineError, InvalidInput, Job, JobCancelled, Take, UnsupportedTask
from schemas.generation import AudioFormat, TaskType
from tests.engine.conftest import Recorder, build_job
from tests.support.decode import decode_result

MakeJob = Callable[..., Job]


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((2, round(seconds * SAMPLE_RATE)))).astype(np.float32)


def _check_take(take: Take, seconds: float) -> None:
    assert take.sample_rate == SAMPLE_RATE
    assert take.audio.dtype == np.float32 and take.audio.shape[0] == 2
    assert abs(take.audio.shape[1] / SAMPLE_RATE - seconds) <= 0.1
    assert np.isfinite(take.audio).all() and np.abs(take.audio).max() <= 1.0
    assert np.abs(take.audio).max() > 0


@pytest.fixture(scope="module")
def base_take(engine: AceStepEngine) -> Take:
    (take,) = engine.generate(build_job(duration=1.3))
    return take


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_output_is_48k_stereo_of_the_requested_duration_in_each_format(base_take: Take, fmt: AudioFormat) -> None:
    _check_take(base_take, 1.3)
    data = encode_audio(base_take.audio, base_take.sample_rate, fmt)
    decoded, rate = decode_result(data)
    assert rate == SAMPLE_RATE and decoded.shape[0] == 2
    assert abs(decoded.shape[1] / SAMPLE_RATE - 1.3) <= 0.1


def test_same_seed_same_audio_different_seed_different(engine: AceStepEngine, make_job: MakeJob) -> None:
    first = engine.generate(make_job(seed=11))[0].audio
    again = engine.generate(make_job(seed=11))[0].audio
    other = engine.generate(make_job(seed=12))[0].audio
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("seconds", [1.1, 2.24, 4.36])
def test_durations_that_trip_diffusers_latent_rounding(
    engine: AceStepEngine, make_job: MakeJob, seconds: float
) -> None:
    (take,) = engine.generate(make_job(duration=seconds, inference_steps=1))
    _check_take(take, seconds)


def test_same_seed_same_audio_for_source_tasks(engine: AceStepEngine, make_job: MakeJob) -> None:
    src = _noise(1.0)
    runs = [
        engine.generate(make_job(task_type=TaskType.REPAINT, src=src, repaint_start=0.2, repaint_end=0.7))
        for _ in range(2)
    ]
    assert np.array_equal(runs[0][0].audio, runs[1][0].audio)


def test_batch_of_two_gives_two_different_takes(engine: AceStepEngine, make_job: MakeJob) -> None:
    takes = engine.generate(make_job(batch_size=2, duration=1.1))
    assert len(takes) == 2
    for take in takes:
        _check_take(take, 1.1)
    assert not np.allclose(takes[0].audio, takes[1].audio)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "death metal, blast beats"},
        {"style": "synthwave"},
        {"lyrics": "[verse]\nhello world"},
        {"lyrics": "[verse]\nhello world", "instrumental": True},
        {"bpm": 90},
        {"key": "F# minor"},
        {"time_signature": 3},
        {"vocal_language": "ja"},
        {"inference_steps": 4},
        {"guidance_scale": 3.0},
        {"shift": 1.0},
    ],
    ids=lambda change: "+".join(change),
)
def test_every_field_reaches_the_model(engine: AceStepEngine, make_job: MakeJob, change: dict[str, object]) -> None:
    base = {"lyrics": "[verse]\nhello world"} if change.get("instrumental") else {}
    reference = engine.generate(make_job(duration=1.0, **base))[0].audio
    changed = engine.generate(make_job(duration=1.0, **{**base, **change}))[0].audio
    assert not np.allclose(reference, changed), f"{change} did not change the audio"


def test_pipeline_arguments_carry_the_request(engine: AceStepEngine, make_job: MakeJob) -> None:
    job = make_job(
        prompt="jazz",
        style="bebop",
        bpm=140,
        key="Bb major",
        time_signature=6,
        vocal_language="fr",
        guidance_scale=4.5,
        shift=2.0,
        inference_steps=5,
        batch_size=2,
        seed=100,
    )
    kwargs = engine.pipeline_kwargs(job.params, None, None, seed=100)
    assert kwargs["prompt"] == ["jazz, style: bebop"] * 2 and kwargs["lyrics"] == ["[instrumental]"] * 2
    assert (kwargs["bpm"], kwargs["keyscale"], kwargs["timesignature"]) == (140, "Bb major", "6")
    assert (kwargs["vocal_language"], kwargs["guidance_scale"], kwargs["shift"]) == ("fr", 4.5, 2.0)
    assert kwargs["num_inference_steps"] == 5 and kwargs["audio_duration"] == 1.2
    frames = kwargs["latents"].shape[1]
    assert kwargs["latents"].shape[0] == 2 and frames == 30  # 1.2 s at 25 latent frames/s
    expected = torch.randn(frames, kwargs["latents"].shape[2], generator=torch.Generator().manual_seed(101))
    assert torch.equal(kwargs["latents"][1].cpu().float(), expected.to(kwargs["latents"].dtype).float())


def test_take_i_uses_seed_plus_i(engine: AceStepEngine, make_job: MakeJob) -> None:
    pair = engine.generate(make_job(batch_size=2, seed=20, duration=1.0))
    second_alone = engine.generate(make_job(seed=21, duration=1.0))[0]
    # Same noise, same prompt: equal up to batched-kernel rounding.
    assert np.allclose(pair[1].audio, second_alone.audio, atol=1e-3)


@pytest.mark.parametrize(
    ("task", "fields"),
    [
        (TaskType.COVER, {"cover_strength": 0.6}),
        (TaskType.REPAINT, {"repaint_start": 0.3, "repaint_end": 0.9}),
        (TaskType.EXTEND, {}),
        (TaskType.EXTRACT, {"track_name": "vocals"}),
        (TaskType.LEGO, {"track_name": "drums", "repaint_start": 0.2, "repaint_end": 1.0}),
        (TaskType.COMPLETE, {"complete_track_classes": ["drums", "bass"]}),
    ],
)
def test_source_audio_tasks(engine: AceStepEngine, make_job: MakeJob, task: TaskType, fields: dict[str, Any]) -> None:
    src = _noise(0.8 if task is TaskType.EXTEND else 1.5)
    (take,) = engine.generate(make_job(task_type=task, src=src, duration=1.4, **fields))
    _check_take(take, 1.4)


def test_cover_strength_reaches_the_model(engine: AceStepEngine, make_job: MakeJob) -> None:
    # (The tiny model's random 5 Hz audio tokenizer maps every source to nearly the same codes, so the
    # source's own influence on a cover cannot be asserted here; it can on real weights.)
    src = _noise(1.0)
    full = engine.generate(make_job(task_type=TaskType.COVER, src=src, duration=1.0))[0].audio
    half = engine.generate(make_job(task_type=TaskType.COVER, src=src, duration=1.0, cover_strength=0.5))[0].audio
    assert not np.allclose(full, half)


def test_cover_from_a_reference_only(engine: AceStepEngine, make_job: MakeJob) -> None:
    (take,) = engine.generate(make_job(task_type=TaskType.COVER, reference=_noise(0.5), duration=1.0))
    _check_take(take, 1.0)


def test_extend_window_defaults_to_the_end_of_the_source(engine: AceStepEngine, make_job: MakeJob) -> None:
    job = make_job(task_type=TaskType.EXTEND, src=_noise(0.8), duration=2.0)
    kwargs = engine.pipeline_kwargs(job.params, job.src_audio, None, seed=1)
    assert kwargs["task_type"] == "repaint"
    assert (kwargs["repainting_start"], kwargs["repainting_end"]) == pytest.approx((0.8, 2.0))
    assert kwargs["src_audio"].shape == (2, 2 * SAMPLE_RATE)


def test_extend_shorter_than_the_source_is_invalid(engine: AceStepEngine, make_job: MakeJob) -> None:
    with pytest.raises(InvalidInput, match="duration must be longer than the source"):
        engine.generate(make_job(task_type=TaskType.EXTEND, src=_noise(1.5), duration=1.0))


def test_a_decoded_mono_8bit_44k_input_works_as_source(engine: AceStepEngine, make_job: MakeJob) -> None:
    buffer = io.BytesIO()
    t = np.arange(44_100) / 44_100
    sf.write(buffer, 0.5 * np.sin(2 * np.pi * 330 * t), 44_100, format="WAV", subtype="PCM_U8")
    src, info = decode_audio(buffer.getvalue(), max_bytes=10**6, max_seconds=60)
    assert (info.channels, info.sample_rate, src.shape) == (1, 44_100, (2, SAMPLE_RATE))
    (take,) = engine.generate(make_job(task_type=TaskType.REPAINT, src=src, repaint_start=0.2, repaint_end=0.6))
    _check_take(take, 1.2)


def test_turbo_checkpoint_rejects_stem_tasks_and_cover_from_source(tiny_turbo_dir: Path, make_job: MakeJob) -> None:
    turbo = AceStepEngine(Settings(model_path=tiny_turbo_dir, _env_file=None))
    assert TaskType.EXTRACT not in turbo.supported_tasks and TaskType.TEXT2MUSIC in turbo.supported_tasks
    stem_jobs: list[tuple[TaskType, dict[str, Any]]] = [
        (TaskType.EXTRACT, {"track_name": "vocals"}),
        (TaskType.LEGO, {"track_name": "bass"}),
        (TaskType.COMPLETE, {"complete_track_classes": ["drums"]}),
    ]
    for task, fields in stem_jobs:
        with pytest.raises(UnsupportedTask, match="turbo"):
            turbo.generate(make_job(task_type=task, src=_noise(1.0), **fields))
    with pytest.raises(UnsupportedTask, match="audio tokenizer"):
        turbo.generate(make_job(task_type=TaskType.COVER, src=_noise(1.0)))
    (take,) = turbo.generate(make_job(guidance_scale=9.0))  # turbo ignores guidance
    _check_take(take, 1.2)


def test_progress_events_arrive_in_order(engine: AceStepEngine, make_job: MakeJob) -> None:
    recorder = Recorder()
    engine.generate(make_job(inference_steps=4, report=recorder))
    stages = [event[0] for event in recorder.events]
    assert stages == ["encoding"] + ["diffusion"] * 5 + ["decoding"]
    steps = [(step, total) for stage, _, step, total in recorder.events if stage == "diffusion"]
    assert steps == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)], "step 0 when the transformer first runs"
    progress = [event[1] for event in recorder.events]
    assert progress == sorted(progress)


def test_cancel_during_a_run_stops_at_the_next_step(engine: AceStepEngine, make_job: MakeJob) -> None:
    recorder = Recorder()

    def cancelled() -> bool:
        return sum(1 for event in recorder.events if event[0] == "diffusion" and event[2]) >= 2

    with pytest.raises(JobCancelled):
        engine.generate(make_job(inference_steps=8, report=recorder, cancelled=cancelled))
    assert [e[2] for e in recorder.events if e[0] == "diffusion"] == [0, 1, 2]
    assert "decoding" not in [e[0] for e in recorder.events]
    assert engine.generate(make_job())  # the engine is fine afterwards


def test_a_cancelled_job_does_not_start(engine: AceStepEngine, make_job: MakeJob) -> None:
    recorder = Recorder()
    with pytest.raises(JobCancelled):
        engine.generate(make_job(report=recorder, cancelled=lambda: True))
    assert recorder.events == []


def test_a_pipeline_exception_becomes_an_engine_error(engine: AceStepEngine, make_job: MakeJob) -> None:
    job = make_job()
    job.params = job.params.model_copy(update={"shift": -1.0})  # a foreign event skipping validation
    with pytest.raises(EngineError, match="shift"):
        engine.generate(job)
    assert engine.generate(make_job())


def test_info_says_what_is_loaded_where(engine: AceStepEngine, tiny_model_dir: Path) -> None:
    info = engine.info()
    assert info["engine"] == "acestep" and info["source"] == str(tiny_model_dir) and info["local"] is True
    assert info["device"] in ("cpu", "cuda") and info["dtype"] in ("float32", "bfloat16")
    assert info["components"]["transformer"] == "AceStepTransformer1DModel"
    assert set(info["tasks"]["supported_tasks"]) == {t.value for t in TaskType}


@pytest.mark.parametrize("duration", [2.0, 2.3])
def test_audio_codes_condition_the_dit_and_takes_keep_the_requested_length(
    engine: AceStepEngine, make_job: Callable[..., Job], duration: float
) -> None:
    count = round(duration * 5)  # what the planner writes: five codes per second
    codes = "".join(f"<|audio_code_{(n * 4_999) % 64_000}|>" for n in range(count))
    job = make_job(prompt="planned", duration=duration, seed=1, audio_codes=codes)
    assert engine.pipeline_kwargs(job.params, None, None)["latents"].shape[1] == count * 5
    (take,) = engine.generate(job)
    assert take.audio.shape == (2, round(duration * 48_000))
    plain = engine.generate(make_job(prompt="planned", duration=duration, seed=1))
    assert not np.allclose(plain[0].audio, take.audio)


def test_a_batch_gives_each_job_its_takes_at_its_duration_and_its_seeds_audio(
    engine: AceStepEngine, make_job: MakeJob
) -> None:
    recorders = [Recorder() for _ in range(3)]
    jobs = [
        make_job(seed=21, batch_size=2, report=recorders[0]),
        make_job(seed=22, report=recorders[1]),
        make_job(seed=23, duration=1.0, vocal_language="de", report=recorders[2]),
    ]
    calls_before = engine.jobs
    results = engine.generate_batch(jobs)
    assert engine.jobs == calls_before + 3
    assert [len(takes) for takes in results] == [2, 1, 1]
    for takes, seconds in zip(results, (1.2, 1.2, 1.0), strict=True):
        for take in takes:
            _check_take(take, seconds)
    for recorder in recorders:
        steps = [step for stage, _, step, _ in recorder.events if stage == "diffusion"]
        assert steps == [0, 1, 2, 3] and recorder.events[-1][0] == "decoding"
    # The same prompt, lyrics and duration alone: the same audio, up to the float noise of batched kernels.
    for job, takes in zip(jobs[:2], results[:2], strict=True):
        alone = engine.generate(make_job(seed=job.params.seed, batch_size=job.params.batch_size))
        for batched, single in zip(takes, alone, strict=True):
            np.testing.assert_allclose(batched.audio, single.audio, atol=1e-4)
    assert not np.allclose(results[0][0].audio, results[1][0].audio)


def test_a_job_cancelled_mid_batch_gets_no_takes_and_the_batch_stops_only_when_all_are(
    engine: AceStepEngine, make_job: MakeJob
) -> None:
    recorder = Recorder()

    def after_two_steps() -> bool:
        return sum(1 for event in recorder.events if event[0] == "diffusion" and event[2]) >= 2

    kept = Recorder()
    cancelled_one = make_job(inference_steps=5, report=recorder, cancelled=after_two_steps)
    results = engine.generate_batch([cancelled_one, make_job(inference_steps=5, report=kept)])
    assert results[0] == [] and len(results[1]) == 1
    assert [e[2] for e in recorder.events if e[0] == "diffusion"] == [0, 1, 2]
    assert [e[2] for e in kept.events if e[0] == "diffusion"] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(JobCancelled):
        engine.generate_batch([make_job(cancelled=after_two_steps), make_job(cancelled=after_two_steps)])
