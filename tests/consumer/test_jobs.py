"""The GPU consumer as a real subprocess on the embedded broker, driven by a raw Kafka producer."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from acefarm.infra.storage import LocalStorage
from schemas.generation import CONTENT_TYPES, AudioFormat
from tests.consumer.conftest import Client, EventRecorder
from tests.support.decode import decode_result
from tests.support.ids import new_task_id
from tests.support.processes import Service

pytestmark = pytest.mark.timeout(180)


async def test_job_emits_started_progress_succeeded_and_stores_the_audio(
    consumer_service: Service, client: Client, recorder: EventRecorder, consumer_output: Path
) -> None:
    task_id = new_task_id()
    await client.submit(task_id, prompt="calm step_s=0.05", duration=2.5, inference_steps=12, audio_format="flac")
    final = await recorder.final(task_id)
    events = recorder.by_task[task_id]
    assert final.type == "task.succeeded", events
    assert events[0].type == "task.started"
    assert events[-1] is final
    progress = [e for e in events if e.type == "task.progress"]
    assert progress, "no progress events"
    assert [p.progress for p in progress] == sorted(p.progress for p in progress)
    assert all(0.0 <= p.progress <= 1.0 for p in progress)
    assert any(p.stage == "diffusion" and p.total_steps == 12 for p in progress)
    span = (progress[-1].occurred_at - progress[0].occurred_at).total_seconds()
    assert len(progress) <= span * 10 + 2, f"{len(progress)} progress events in {span:.2f}s exceed 10/s"
    assert {e.attempt for e in events} == {events[0].attempt}

    (stored,) = final.files
    assert stored.key == f"outputs/{task_id}/take-0.flac"
    assert stored.content_type == "audio/flac"
    assert (stored.sample_rate, stored.channels) == (48_000, 2)
    data = (consumer_output / stored.key).read_bytes()
    assert stored.size_bytes == len(data)
    audio, rate = sf.read(io.BytesIO(data))
    assert rate == 48_000 and audio.shape[1] == 2
    assert abs(len(audio) / rate - 2.5) < 0.01


async def test_success_says_what_the_job_used(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    seeded, unseeded = new_task_id(), new_task_id()
    await client.submit(seeded, prompt="calm step_s=0.02", bpm=100, seed=41, batch_size=2, inference_steps=4)
    await client.submit(unseeded, prompt="calm", key="D minor")
    result = (await recorder.final(seeded)).used
    assert result.seeds == [41, 42]
    assert (result.metadata.bpm, result.metadata.duration, result.metadata.source.bpm) == (100, 1.5, "user")
    assert (result.metadata.source.key, result.metadata.source.language) == ("default", "default")
    assert (result.model.name, result.model.engine, result.loras) == ("default", "tone", [])
    timings = result.timings
    assert timings.queue_s is not None and timings.total_s is not None
    assert timings.diffusion_s >= 0.06 and timings.upload_s is not None and timings.inputs_s is None
    other = (await recorder.final(unseeded)).used
    assert len(other.seeds) == 1 and 0 <= other.seeds[0] < 2**32, "a random seed is reported"
    assert (other.metadata.key, other.metadata.source.key) == ("D minor", "user")


async def test_a_job_for_another_models_pool_fails_saying_where_it_belongs(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    task_id = new_task_id()
    await client.submit(task_id, model="base")
    final = await recorder.final(task_id)
    assert (final.type, final.reason) == ("task.failed", "unsupported")
    assert "reached the pool 'default'" in final.error and "acefarm.generation.requests.base" in final.error


@pytest.mark.parametrize(("fmt", "extension"), [("opus", "opus"), ("aac", "m4a"), ("ogg", "ogg")])
async def test_compressed_formats_are_stored_with_their_type_and_length(
    consumer_service: Service, client: Client, recorder: EventRecorder, consumer_output: Path, fmt: str, extension: str
) -> None:
    task_id = new_task_id()
    await client.submit(task_id, duration=2.0, audio_format=fmt)
    (stored,) = (await recorder.final(task_id)).files
    assert stored.key == f"outputs/{task_id}/take-0.{extension}"
    assert stored.content_type == CONTENT_TYPES[AudioFormat(fmt)]
    audio, rate = decode_result((consumer_output / stored.key).read_bytes())
    assert rate == 48_000 and audio.shape[0] == 2
    assert abs(audio.shape[1] / rate - 2.0) < 0.1  # encoder priming and padding


async def test_a_job_shorter_than_the_progress_interval_sends_no_progress(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    task_id = new_task_id()
    await client.submit(task_id, prompt="instant step_s=0", duration=1.0, inference_steps=2)
    await recorder.final(task_id)
    events = recorder.by_task[task_id]
    assert [e.type for e in events] == ["task.started", "task.succeeded"], [
        (e.type, e.occurred_at.isoformat(), getattr(e, "stage", None)) for e in events
    ]


async def test_batch_of_two_in_mp3_stores_two_takes(
    consumer_service: Service, client: Client, recorder: EventRecorder, consumer_output: Path
) -> None:
    task_id = new_task_id()
    await client.submit(task_id, duration=3.0, batch_size=2, audio_format="mp3", seed=7)
    final = await recorder.final(task_id)
    assert final.type == "task.succeeded", recorder.by_task[task_id]
    assert [f.key for f in final.files] == [f"outputs/{task_id}/take-0.mp3", f"outputs/{task_id}/take-1.mp3"]
    for stored in final.files:
        assert stored.content_type == "audio/mpeg"
        audio, rate = sf.read(io.BytesIO((consumer_output / stored.key).read_bytes()))
        assert abs(len(audio) / rate - 3.0) < 0.1  # mp3 encoder padding


async def test_malformed_records_go_to_dead_letter_and_jobs_keep_flowing(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    bad_json = await client.submit_raw(b"bad-1", b"{not json")
    wrong_type = await client.submit_raw(b"bad-2", b'{"type": "task.cancel_requested", "task_id": "bad-2"}')
    task_id = new_task_id()
    await client.submit(task_id)
    assert (await recorder.final(task_id)).type == "task.succeeded"

    def letters() -> dict[int, Any]:
        return {d.offset: d for d in recorder.dead_letters if d.offset in (bad_json.offset, wrong_type.offset)}

    await recorder.wait_for(lambda: len(letters()) == 2, 20, "two dead letters")
    by_key = {d.key: d for d in letters().values()}
    assert by_key["bad-1"].task_id == "bad-1" and "invalid event" in by_key["bad-1"].error
    assert by_key["bad-1"].value == "{not json" and by_key["bad-1"].partition == bad_json.partition
    assert "expected a generation.requested" in by_key["bad-2"].error


@pytest.mark.parametrize(
    ("prompt", "reason", "says"),
    [
        ("please explode", "engine_error", "exploded on purpose"),
        ("oom now", "out_of_memory", "out of memory"),
        ("crash hard", "internal", "RuntimeError: unexpected bug"),
        ("unsupported thing", "unsupported", "cannot do that"),
    ],
)
async def test_engine_errors_become_failed_and_the_next_job_runs(
    consumer_service: Service, client: Client, recorder: EventRecorder, prompt: str, reason: str, says: str
) -> None:
    failing, healthy = new_task_id(), new_task_id()
    await client.submit(failing, prompt=prompt)
    await client.submit(healthy)
    final = await recorder.final(failing)
    assert final.type == "task.failed", recorder.by_task[failing]
    assert final.reason == reason and says in final.error
    assert final.attempt == recorder.by_task[failing][0].attempt
    assert (await recorder.final(healthy)).type == "task.succeeded"


async def test_input_audio_is_decoded_or_rejected_with_a_reason(
    consumer_service: Service, client: Client, recorder: EventRecorder, consumer_output: Path
) -> None:
    storage = LocalStorage(consumer_output)
    mono = (0.2 * np.sin(np.linspace(0, 2000, 44_100 * 2))).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, mono, 44_100, format="WAV", subtype="PCM_U8")
    good, garbage, missing = new_task_id(), new_task_id(), new_task_id()
    await storage.put_bytes(f"inputs/{good}/src.wav", wav.getvalue(), "audio/wav")
    await storage.put_bytes(f"inputs/{garbage}/src.wav", b"RIFF this is not audio at all", "audio/wav")
    await client.submit(good, task_type="cover", src_audio_key=f"inputs/{good}/src.wav")
    await client.submit(garbage, task_type="cover", src_audio_key=f"inputs/{garbage}/src.wav")
    await client.submit(missing, task_type="cover", reference_audio_key=f"inputs/{missing}/ref.wav")
    assert (await recorder.final(good)).type == "task.succeeded", recorder.by_task[good]
    bad = await recorder.final(garbage)
    assert (bad.type, bad.reason) == ("task.failed", "invalid_input"), bad
    assert "source audio" in bad.error
    absent = await recorder.final(missing)
    assert (absent.type, absent.reason) == ("task.failed", "invalid_input")
    assert "not found" in absent.error


async def test_cancel_skips_a_queued_job_and_stops_a_running_one(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    running, queued = new_task_id(), new_task_id()
    await client.submit(running, prompt="long step_s=0.3", inference_steps=40)
    await recorder.wait_for(lambda: "task.started" in recorder.types(running), 30, "the running job to start")
    await client.submit(queued)
    await client.cancel(queued)
    await recorder.wait_for(lambda: "task.progress" in recorder.types(running), 10, "progress")
    await client.cancel(running)
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    stopped = await recorder.final(running, timeout_s=20)
    assert stopped.type == "task.cancelled" and stopped.attempt
    assert loop.time() - cancelled_at < 3.0, "the running job did not stop at the next step"
    steps = [e.step for e in recorder.by_task[running] if e.type == "task.progress" and e.step]
    assert max(steps) < 40

    skipped = await recorder.final(queued, timeout_s=20)
    assert skipped.type == "task.cancelled" and skipped.attempt is None
    assert recorder.types(queued) == ["task.cancelled"], "a cancelled queued job must not start"


async def test_job_longer_than_the_session_timeout_completes_without_rebalance(
    consumer_service: Service, client: Client, recorder: EventRecorder
) -> None:
    log_before = len(consumer_service.log())
    task_id = new_task_id()
    # 20 steps x 0.5 s = 10 s: longer than KAFKA_SESSION_TIMEOUT_MS=6000 and the max poll interval.
    await client.submit(task_id, prompt="slow step_s=0.5", inference_steps=20)
    final = await recorder.final(task_id, timeout_s=60)
    assert final.type == "task.succeeded", recorder.by_task[task_id]
    assert recorder.types(task_id).count("task.started") == 1
    later_log = consumer_service.log()[log_before:]
    assert "partitions_revoked" not in later_log and "partitions_assigned" not in later_log, later_log[-3000:]
    next_id = new_task_id()
    await client.submit(next_id)
    assert (await recorder.final(next_id)).type == "task.succeeded"
    assert recorder.types(task_id).count("task.started") == 1, "the long job was redelivered"
