"""Consumer process lifecycle: graceful stop, abandoned job on grace expiry, SIGKILL mid-job, S3 storage."""

from __future__ import annotations

import io
import signal
import time
import uuid
from pathlib import Path

import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer, TopicPartition

from acefarm.infra.storage import S3Storage
from schemas import topics
from tests.consumer.conftest import CONSUMER_ARGS, Client, EventRecorder, consumer_env, wait_for_log
from tests.support.processes import Service, start_service

pytestmark = pytest.mark.timeout(240)


def new_task_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def committed_offset(bootstrap: str, partition: int) -> int | None:
    # An unsubscribed member of the group only fetches offsets; it never joins.
    # (aiokafka's admin list_consumer_group_offsets cannot decode Tansu's answer.)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.GPU_WORKERS_GROUP, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(topics.GENERATION_READY, partition))
    finally:
        await reader.stop()


def start_consumer(name: str, env: dict[str, str], logs: Path, *args: str) -> Service:
    service = start_service(name, [*CONSUMER_ARGS, *args], env, logs)
    wait_for_log(service, "kafka.group_joined")
    return service


async def test_sigterm_lets_the_running_job_finish_then_leaves(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    service = start_consumer("c-term", consumer_env(kafka_env, tmp_path / "data"), tmp_path / "logs")
    try:
        task_id = new_task_id()
        meta = await client.submit(task_id, prompt="step_s=0.2", inference_steps=10)
        await recorder.wait_for(lambda: "task.started" in recorder.types(task_id), 30, "start")
        service.process.send_signal(signal.SIGTERM)
        assert (await recorder.final(task_id, timeout_s=30)).type == "task.succeeded"
        assert service.process.wait(timeout=20) == 0
        assert "consumer.stopped" in service.log()
        assert await committed_offset(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], meta.partition) == meta.offset + 1
    finally:
        service.kill()


async def test_grace_expiry_leaves_the_job_uncommitted_and_sigkill_mid_job_is_redone_once(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data")
    logs = tmp_path / "logs"
    bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
    task_id = new_task_id()
    # 1) graceful stop with a 1 s grace: the 6 s job is abandoned, nothing final, offset not committed.
    first = start_consumer("c-grace", env, logs, "--grace", "1")
    try:
        meta = await client.submit(task_id, prompt="redo me step_s=0.3", inference_steps=20)
        await recorder.wait_for(lambda: "task.started" in recorder.types(task_id), 30, "first start")
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=15) == 0
        assert "consumer.job_abandoned" in first.log()
    finally:
        first.kill()
    assert recorder.types(task_id).count("task.started") == 1
    assert not any(t in recorder.types(task_id) for t in ("task.succeeded", "task.failed", "task.cancelled"))
    assert (await committed_offset(bootstrap, meta.partition) or 0) <= meta.offset

    # 2) the next consumer gets it again; SIGKILL it mid-job, as a crash would.
    second = start_service("c-killed", CONSUMER_ARGS, env, logs)
    try:
        await recorder.wait_for(lambda: recorder.types(task_id).count("task.started") == 2, 60, "second start")
        second.kill()
    finally:
        second.kill()

    # 3) a fresh consumer redoes it: one success, three attempts, the offset moves past it.
    started = time.monotonic()
    third = start_service("c-fresh", CONSUMER_ARGS, env, logs)
    try:
        final = await recorder.final(task_id, timeout_s=90)
        redo_s = time.monotonic() - started
        assert final.type == "task.succeeded", recorder.by_task[task_id]
        events = recorder.by_task[task_id]
        attempts = [e.attempt for e in events if e.type == "task.started"]
        assert len(attempts) == 3 and len(set(attempts)) == 3
        assert final.attempt == attempts[-1]
        assert recorder.types(task_id).count("task.succeeded") == 1
        assert await committed_offset(bootstrap, meta.partition) == meta.offset + 1
        print(f"redo after SIGKILL: {redo_s:.1f}s from fresh consumer start to success")
    finally:
        third.stop()


async def test_s3_backend_stores_results_and_reads_inputs(
    topics_ready: None,
    kafka_env: dict[str, str],
    s3_endpoint: str,
    tmp_path: Path,
    client: Client,
    recorder: EventRecorder,
) -> None:
    bucket = f"consumer-{uuid.uuid4().hex[:8]}"
    env = consumer_env(
        kafka_env,
        tmp_path / "unused",
        STORAGE_BACKEND="s3",
        STORAGE_BUCKET=bucket,
        S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    storage = S3Storage(bucket, endpoint_url=s3_endpoint)
    service = start_consumer("c-s3", env, tmp_path / "logs")
    try:
        source = io.BytesIO()
        sf.write(source, [[0.1, -0.1]] * 48_000, 48_000, format="FLAC")
        plain, cover = new_task_id(), new_task_id()
        await storage.put_bytes(f"inputs/{cover}/src.flac", source.getvalue(), "audio/flac")
        await client.submit(plain, duration=2.0)
        await client.submit(cover, duration=1.0, task_type="cover", src_audio_key=f"inputs/{cover}/src.flac")
        final = await recorder.final(plain)
        assert final.type == "task.succeeded", recorder.by_task[plain]
        (stored,) = final.files
        info = await storage.stat(stored.key)
        assert info is not None and info.content_type == "audio/wav" and info.size == stored.size_bytes
        audio, rate = sf.read(io.BytesIO(await storage.get_bytes(stored.key)))
        assert rate == 48_000 and abs(len(audio) / rate - 2.0) < 0.01
        assert (await recorder.final(cover)).type == "task.succeeded", recorder.by_task[cover]
    finally:
        service.stop()
        await storage.close()
