"""Jobs that hang, kill their worker or waited too long, against real consumer processes and the
embedded broker: a hung engine step and a hung upload end as `timeout` (the process exits with
`EXIT_WEDGED` after committing, and the restarted one runs the next job), a job that kills its worker
every time ends as `poison` after `MAX_ATTEMPTS`, and an old request fails `expired` without running."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import soundfile as sf

from acefarm.infra.storage import S3Storage
from acefarm.runtime.service import EXIT_WEDGED
from schemas import topics
from schemas.events import GenerationRequested, utcnow
from schemas.generation import GenerationParams
from tests.consumer.conftest import CONSUMER_ARGS, Client, EventRecorder, consumer_env, start_consumer
from tests.support.ids import new_task_id
from tests.support.processes import Service, start_service
from tests.support.stall_proxy import StallingProxy
from tests.support.tone_engine import EXIT_PROCESS_CODE

pytestmark = pytest.mark.timeout(300)

DEADLINE_ENV = {"JOB_DEADLINE_BASE_S": "5", "GENERATION_DEADLINE_PER_UNIT_S": "0"}


async def exit_code(service: Service, timeout_s: float) -> int:
    """Wait (without blocking the loop) for the process to exit; its status."""
    deadline = time.monotonic() + timeout_s
    while (code := service.process.poll()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service.name} still running after {timeout_s}s:\n{service.log()[-4000:]}")
        await asyncio.sleep(0.1)
    return code


async def test_a_hung_engine_step_times_out_the_worker_restarts_and_runs_the_next_job(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data", **DEADLINE_ENV)
    logs = tmp_path / "logs"
    hung, after = new_task_id(), new_task_id()
    first = start_consumer("c-hung", env, logs)
    try:
        await client.submit(hung, prompt="hang_forever")
        await recorder.wait_for(lambda: "task.started" in recorder.types(hung), 60, "the hung job to start")
        await client.submit(after)
        final = await recorder.final(hung, timeout_s=60)
        assert (final.type, final.reason) == ("task.failed", "timeout"), recorder.by_task[hung]
        assert "deadline of 5 s" in final.error
        assert await exit_code(first, 30) == EXIT_WEDGED, first.log()[-3000:]
        assert "consumer.exiting_wedged" in first.log()
    finally:
        first.kill()
    second = start_consumer("c-after", env, logs)  # what a supervisor does
    try:
        assert (await recorder.final(after, timeout_s=90)).type == "task.succeeded", recorder.by_task[after]
        assert recorder.types(hung).count("task.started") == 1, "the timed-out job was committed, not redone"
    finally:
        second.stop()


async def test_a_hung_upload_times_out_and_the_next_job_runs(
    topics_ready: None,
    kafka_env: dict[str, str],
    s3_endpoint: str,
    tmp_path: Path,
    client: Client,
    recorder: EventRecorder,
) -> None:
    bucket = f"stall-{uuid.uuid4().hex[:8]}"
    moto = urlsplit(s3_endpoint)
    proxy = StallingProxy(moto.hostname or "127.0.0.1", moto.port or 80, re.compile(rb"PUT /[^ ]*/outputs/"))
    port = await proxy.start()
    s3_env = {
        "STORAGE_BACKEND": "s3",
        "STORAGE_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    env = consumer_env(kafka_env, tmp_path / "unused", **DEADLINE_ENV, **s3_env)
    logs = tmp_path / "logs"
    stuck, after = new_task_id(), new_task_id()
    first = start_consumer("c-stall", {**env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}, logs)
    try:
        await client.submit(stuck)
        final = await recorder.final(stuck, timeout_s=60)
        assert (final.type, final.reason) == ("task.failed", "timeout"), recorder.by_task[stuck]
        assert proxy.stalled >= 1, "the upload itself hung (not the engine)"
        assert await exit_code(first, 30) == EXIT_WEDGED, first.log()[-3000:]
    finally:
        first.kill()
        await proxy.stop()
    # Restarted with storage reachable again: the next job runs and its file is stored.
    second = start_consumer("c-unstalled", {**env, "S3_ENDPOINT_URL": s3_endpoint}, logs)
    storage = S3Storage(bucket, endpoint_url=s3_endpoint)
    try:
        await client.submit(after)
        done = await recorder.final(after, timeout_s=90)
        assert done.type == "task.succeeded", recorder.by_task[after]
        audio, rate = sf.read(io.BytesIO(await storage.get_bytes(done.files[0].key)))
        assert rate == 48_000 and len(audio) > 0
    finally:
        second.stop()
        await storage.close()


async def test_a_job_that_kills_its_worker_every_time_ends_as_poison(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data")  # MAX_ATTEMPTS: the default, 3
    logs = tmp_path / "logs"
    deadly = new_task_id()
    codes: list[int] = []
    service = start_service("c-0", CONSUMER_ARGS, env, logs)
    try:
        await client.submit(deadly, prompt="exit_process")
        deadline = time.monotonic() + 240
        while not any(e.type == "task.failed" for e in recorder.by_task[deadly]):
            assert time.monotonic() < deadline, f"no poison after {codes}: {recorder.types(deadly)}"
            if service.process.poll() is not None:  # restart it, as compose or `acefarm dev` would
                codes.append(service.process.returncode)
                service = start_service(f"c-{len(codes)}", CONSUMER_ARGS, env, logs)
            await asyncio.sleep(0.2)
        final = await recorder.final(deadly)
        assert (final.type, final.reason, final.attempt) == ("task.failed", "poison", None)
        assert codes == [EXIT_PROCESS_CODE] * 3
        starts = [e for e in recorder.by_task[deadly] if e.type == "task.started"]
        assert [e.attempt_number for e in starts] == [1, 2, 3]
        assert service.process.poll() is None, "the worker that refused the job keeps running"
    finally:
        service.stop()


async def test_a_request_older_than_its_queue_lifetime_fails_expired(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data", JOB_QUEUE_TTL_S="3600")
    service = start_consumer("c-ttl", env, tmp_path / "logs")
    try:
        old, fresh = new_task_id(), new_task_id()
        params = GenerationParams(prompt="a calm sine", duration=1.0)
        stale = GenerationRequested(task_id=old, params=params, occurred_at=utcnow() - timedelta(hours=2))
        await client.producer.send_and_wait(topics.GENERATION_READY, stale.to_bytes(), key=old.encode())
        await client.submit(fresh)
        final = await recorder.final(old)
        assert (final.type, final.reason) == ("task.failed", "expired") and recorder.types(old) == ["task.failed"]
        assert (await recorder.final(fresh)).type == "task.succeeded"
    finally:
        service.stop()
