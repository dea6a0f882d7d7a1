"""The planning stage as real processes on the embedded broker: a planner on the tiny random 5 Hz LM
forwarding to a GPU consumer (the tone engine), and the LM-only jobs (sample, format, understand)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acefarm.model.lm.fields import KEYS, LANGUAGES
from acefarm.model.lm.tiny import make_tiny_lm
from acefarm.model.tiny import make_tiny
from schemas import topics
from schemas.events import PlanningRequested
from schemas.generation import GenerationParams
from schemas.planning import FormatInput, PlanMode, SampleInput, UnderstandInput
from streams.fold import apply
from tests.consumer.conftest import Client, EventRecorder, consumer_env, wait_for_log
from tests.support.ids import new_task_id
from tests.support.processes import Service, start_service

pytestmark = pytest.mark.timeout(240)
PLANNER_ARGS = ["-m", "acefarm", "planner"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DiT checkpoint with an audio tokenizer, 5 Hz LM), both tiny and random."""
    root = tmp_path_factory.mktemp("tiny-models")
    return make_tiny(root / "dit"), make_tiny_lm(root / "lm")


def _planner_env(kafka_env: dict[str, str], output: Path, models: tuple[Path, Path]) -> dict[str, str]:
    dit, lm = models
    return consumer_env(kafka_env, output, MODEL_PATH=str(dit), LM_MODEL_PATH=str(lm), LM_LYRICS_MAX_TOKENS="24")


@pytest.fixture(scope="module")
def planner(
    consumer_service: Service,
    kafka_env: dict[str, str],
    consumer_output: Path,
    tiny_models: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """One `python -m acefarm planner` for the module (the DiT side is the module's GPU consumer), and the
    scheduler that admits its forwarded requests from the intake topic to the consumer's ready topic."""
    env = _planner_env(kafka_env, consumer_output, tiny_models)
    logs = tmp_path_factory.mktemp("planner-logs")
    scheduler = start_service("scheduler", ["-m", "acefarm", "scheduler"], env, logs)
    service = start_service("planner", PLANNER_ARGS, env, logs)
    try:
        wait_for_log(service, "kafka.group_joined", timeout_s=120)
        yield service
    finally:
        service.stop()
        scheduler.stop()


async def _plan(client: Client, event: PlanningRequested) -> None:
    key = event.task_id.encode()
    await client.producer.send_and_wait(topics.PLANNING_REQUESTS, event.to_bytes(), key=key)


def _folded(request: PlanningRequested, events: list[object]) -> object:
    status = apply(None, request)
    finals = 0
    for event in events:
        new = apply(status, event)  # type: ignore[arg-type]
        if new is not None and new.status.is_final and not (status and status.status.is_final):
            finals += 1
        status = new or status
    assert finals == 1
    return status


async def test_thinking_plans_then_forwards_to_the_dit_which_reports_the_result(
    planner: Service, client: Client, recorder: EventRecorder, consumer_output: Path
) -> None:
    task_id = new_task_id("p")
    params = GenerationParams(prompt="calm piano step_s=0", duration=4.0, thinking=True, seed=7)
    request = PlanningRequested(task_id=task_id, mode=PlanMode.GENERATE, params=params)
    await _plan(client, request)
    final = await recorder.final(task_id, timeout_s=120)
    events = recorder.by_task[task_id]
    assert final.type == "task.succeeded", events
    started = [e for e in events if e.type == "task.started"]
    assert len(started) == 2 and started[0].attempt != started[1].attempt  # the planner, then the DiT
    assert any(e.type == "task.progress" and e.stage == "planning" for e in events)
    assert final.files and final.attempt == started[1].attempt
    result = final.result
    assert set(result.decided_by_lm) >= {"bpm", "key", "time_signature", "caption", "vocal_language"}
    assert 30 <= result.bpm <= 300 and result.key in KEYS and result.time_signature in (2, 3, 4, 6)
    assert result.vocal_language in LANGUAGES and result.duration == 4.0
    codes = (consumer_output / result.audio_codes_key).read_text()
    assert codes.count("<|audio_code_") == result.audio_codes_count == 20
    used = final.used
    sources = used.metadata.source
    assert (sources.bpm, sources.key, sources.time_signature, sources.language) == ("lm",) * 4
    assert sources.duration == "user" and (used.metadata.bpm, used.metadata.key) == (result.bpm, result.key)
    folded = _folded(request, events)
    assert folded.status == "success" and folded.result == result  # type: ignore[attr-defined]
    assert folded.used == used  # type: ignore[attr-defined]


async def test_sample_format_and_understand_succeed_with_a_valid_result(
    planner: Service, client: Client, recorder: EventRecorder, consumer_output: Path
) -> None:
    sample = PlanningRequested(
        task_id=new_task_id("p"), mode=PlanMode.SAMPLE, sample=SampleInput(query="a soft love song", seed=1)
    )
    fmt = PlanningRequested(
        task_id=new_task_id("p"),
        mode=PlanMode.FORMAT,
        format=FormatInput(prompt="rock", lyrics="[verse]\nla la", bpm=128, seed=2),
    )
    tone = np.sin(np.linspace(0, 2000, 48_000 * 2, dtype=np.float32))
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone, tone], axis=1) * 0.3, 48_000, format="WAV")
    audio_key = "inputs/uploads/understand-test.wav"
    (consumer_output / audio_key).parent.mkdir(parents=True, exist_ok=True)
    (consumer_output / audio_key).write_bytes(buffer.getvalue())
    understand = PlanningRequested(
        task_id=new_task_id("p"), mode=PlanMode.UNDERSTAND, understand=UnderstandInput(audio_key=audio_key, seed=3)
    )
    for event in (sample, fmt, understand):
        await _plan(client, event)
    for event in (sample, fmt, understand):
        final = await recorder.final(event.task_id, timeout_s=120)
        assert final.type == "task.succeeded", recorder.by_task[event.task_id]
        result = final.result
        assert result.caption and 30 <= result.bpm <= 300 and result.key in KEYS, result
        assert result.vocal_language in LANGUAGES and result.time_signature in (2, 3, 4, 6)
        assert not final.files
    fmt_result = (await recorder.final(fmt.task_id)).result
    assert fmt_result.bpm == 128 and "bpm" not in fmt_result.decided_by_lm
    und = (await recorder.final(understand.task_id)).result
    assert und.audio_codes_count == 10  # 2 s at 5 codes per second
    assert (consumer_output / und.audio_codes_key).read_text().count("<|audio_code_") == 10


async def test_a_planner_killed_mid_job_is_redone_by_the_next_and_reported_once(
    planner: Service,
    client: Client,
    recorder: EventRecorder,
    kafka_env: dict[str, str],
    consumer_output: Path,
    tiny_models: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    task_id = new_task_id("p")
    params = GenerationParams(prompt="long plan step_s=0", duration=200.0, thinking=True, seed=3)
    request = PlanningRequested(task_id=task_id, mode=PlanMode.GENERATE, params=params)
    await _plan(client, request)
    await recorder.wait_for(lambda: "task.progress" in recorder.types(task_id), 120, "planning progress")
    planner.kill()  # SIGKILL mid-plan: nothing forwarded, nothing committed
    env = _planner_env(kafka_env, consumer_output, tiny_models)
    second = start_service("planner-2", PLANNER_ARGS, env, tmp_path_factory.mktemp("planner-2-logs"))
    try:
        final = await recorder.final(task_id, timeout_s=200)
    finally:
        second.stop()
    events = recorder.by_task[task_id]
    assert final.type == "task.succeeded", events
    assert [e.type for e in events].count("task.succeeded") == 1
    assert len({e.attempt for e in events if e.type == "task.started"}) == 3  # killed plan, redone plan, DiT
    assert _folded(request, events).status == "success"  # type: ignore[attr-defined]
