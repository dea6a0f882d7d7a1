"""The trainer as a real process on the test broker: a SIGKILL mid-training resumes from the checkpoint; the
tiny 5 Hz LM captions the tracks the dataset leaves undescribed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from acefarm.model.lm.tiny import make_tiny_lm
from acefarm.model.loras import new_lora_id
from schemas import topics
from schemas.events import TrainingRequested
from schemas.storage_keys import dataset_key, manifest_key
from schemas.training import LoraManifest, TrainingOptions
from tests.consumer.conftest import EventRecorder
from tests.lora.conftest import TEST_LIMITS_ENV
from tests.lora.zips import tone_dataset
from tests.support.processes import Service, start_service


@pytest.fixture
async def recorder(kafka_env: dict[str, str]) -> AsyncIterator[EventRecorder]:
    await ensure_topics(Settings(**{k.lower(): v for k, v in kafka_env.items()}))
    events = EventRecorder(kafka_env["KAFKA_BOOTSTRAP_SERVERS"])
    await events.start()
    yield events
    await events.stop()


def start_trainer(name: str, env: dict[str, str], logs: Path) -> Service:
    return start_service(name, ["-m", "acefarm", "trainer", "--device", "cpu"], env, logs)


async def wait_for_file(path: Path, service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(path.exists):
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited:\n{service.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear\n{service.log()[-3000:]}")
        await asyncio.sleep(0.02)


async def test_killed_trainer_resumes_from_its_checkpoint(
    kafka_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path, recorder: EventRecorder
) -> None:
    data = tmp_path / "data"
    lm_dir = make_tiny_lm(tmp_path / "lm")
    env = {
        **kafka_env,
        **TEST_LIMITS_ENV,
        "MODEL_PATH": str(tiny_model_dir),
        "LM_MODEL_PATH": str(lm_dir),
        "OUTPUT_DIR": str(data),
        "VAE_TILING": "false",
        "PROGRESS_MAX_HZ": "4",
    }
    task_id = f"train-{new_lora_id('kill')}"
    request = TrainingRequested(
        task_id=task_id,
        lora_id=new_lora_id("killed style"),
        style_name="killed style",
        dataset_key=dataset_key(task_id),
        options=TrainingOptions(rank=4, steps=80, warmup_steps=5, clip_seconds=5, checkpoint_every=10),
    )
    (data / "datasets").mkdir(parents=True)
    tone_dataset(data / request.dataset_key)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        await producer.send_and_wait(topics.TRAINING_REQUESTS, b"{not json", key=b"garbage")
        await producer.send_and_wait(topics.TRAINING_REQUESTS, request.to_bytes(), key=task_id.encode())
    finally:
        await producer.stop()

    first = start_trainer("trainer-1", env, tmp_path / "logs")
    try:
        await wait_for_file(data / "checkpoints" / task_id / "state.pt", first, timeout_s=180)
        first.kill()
    finally:
        first.kill()
    assert not (data / manifest_key(request.lora_id)).exists(), "training finished before the kill"

    second = start_trainer("trainer-2", env, tmp_path / "logs")
    try:
        final = await recorder.final(task_id, timeout_s=240)
        await asyncio.sleep(1.0)  # anything published after the final event would show up now
    finally:
        second.stop()
    assert final.type == "task.succeeded", second.log()[-3000:]
    assert final.lora_id == request.lora_id and final.loss is not None
    assert [e.type for e in recorder.by_task[task_id]].count("task.succeeded") == 1
    assert not any(e.type in ("task.failed", "task.cancelled") for e in recorder.by_task[task_id])
    started = [e for e in recorder.by_task[task_id] if e.type == "task.started"]
    assert len(started) == 2, "each process started the job once"
    resumed = [e for e in recorder.by_task[task_id] if e.type == "task.progress" and e.attempt == started[1].attempt]
    first_step = min(e.step for e in resumed if e.stage == "training" and e.step is not None)
    assert first_step > 10, "the second attempt resumed from the checkpoint instead of step 0"
    assert '"event": "training.resuming"' in second.log()
    manifest = LoraManifest.model_validate_json((data / manifest_key(request.lora_id)).read_text())
    assert manifest.steps_done == 80 and manifest.tracks[0].name == "tones/tone0.wav"
    sources = [[clip.caption_source for clip in track.clips] for track in manifest.tracks]
    assert sources == [["lm"], ["metadata"], ["lm"]], "tone1 has a metadata row, the others are captioned by the LM"
    assert (data / "loras" / request.lora_id / "pytorch_lora_weights.safetensors").is_file()
    assert not (data / "checkpoints" / task_id / "state.pt").exists(), "training state is removed at the end"
    assert any(d.source_topic == topics.TRAINING_REQUESTS for d in recorder.dead_letters)
