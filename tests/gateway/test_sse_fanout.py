"""SSE fan-out parts: shared wake-ups with one timer per wheel, frames encoded once per snapshot."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from gateway import tasks
from gateway.responses import to_response
from gateway.signed_links import LinkSigner
from gateway.sse import Frame, FrameCache
from gateway.status_view import StatusStore
from gateway.wakeups import MIN_TICK_S, Deadlines, Signal, TaskWakeups, tick_for
from schemas.queues import QueuePosition
from schemas.status import StoredFile, TaskState, TaskStatus, TaskStatusResponse

NOW = datetime.now(UTC)


def snap(version: int, state: TaskState = TaskState.RUNNING, owner: str | None = "alice") -> TaskStatus:
    files = [StoredFile(key="outputs/t/0.wav", content_type="audio/wav", size_bytes=10)]
    return TaskStatus(
        task_id="t",
        status=state,
        owner=owner,
        files=files if state is TaskState.SUCCESS else [],
        created_at=NOW,
        updated_at=NOW,
        version=version,
    )


async def test_many_waiters_share_one_timer_and_wake_after_the_timeout() -> None:
    wakeups = TaskWakeups()
    started = time.monotonic()
    waiters = [asyncio.create_task(wakeups.wait(f"task-{i % 3}", 0.2)) for i in range(300)]
    await asyncio.sleep(0.01)
    deadlines = wakeups._wheels[tick_for(0.2)]
    assert len(deadlines) == 300 and deadlines._timer is not None  # one timer, not one per waiter
    await asyncio.gather(*waiters)
    assert time.monotonic() - started >= 0.2  # never before the timeout
    assert len(deadlines) == 0 and deadlines._timer is None  # nothing left ticking while nobody waits
    assert wakeups.waiting("task-0") == 0


async def test_a_change_wakes_only_that_tasks_waiters_and_forgets_their_deadlines() -> None:
    wakeups = TaskWakeups()
    changed = [asyncio.create_task(wakeups.wait("a", 5)) for _ in range(3)]
    other = asyncio.create_task(wakeups.wait("b", 5))
    await asyncio.sleep(0.01)
    assert wakeups.waiting("a") == 3
    wakeups.wake("a")
    await asyncio.wait_for(asyncio.gather(*changed), 1)
    assert not other.done() and len(wakeups._wheels[tick_for(5)]) == 1
    other.cancel()  # a subscriber that goes away leaves nothing behind
    await asyncio.gather(other, return_exceptions=True)
    assert wakeups.waiting("b") == 0 and len(wakeups._wheels[tick_for(5)]) == 0


async def test_deadlines_round_up_to_a_tick() -> None:
    deadlines = Deadlines(tick_for(0.08))
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = asyncio.get_running_loop().time()
    deadlines.add(future, 0.08)
    await future
    assert asyncio.get_running_loop().time() - started >= 0.08


def test_any_mix_of_timeouts_needs_few_wheels() -> None:
    ticks = {tick_for(0.01 + i * 0.0137) for i in range(400)}  # e.g. keep-alives due at any moment (to 5.5 s)
    assert len(ticks) <= 10  # one wheel per power of two, not one per timeout
    assert len({tick_for(4 + i * 0.01) for i in range(400)}) == 1
    assert all(tick <= max(MIN_TICK_S, t / 8) for t in (0.001, 0.2, 5, 15) for tick in [tick_for(t)])


async def test_a_signal_wakes_every_waiter_of_every_key_without_a_task_each() -> None:
    wakeups, signal = TaskWakeups(), Signal()
    waiters = [asyncio.create_task(wakeups.wait(f"task-{i}", 5, signal.next())) for i in range(5)]
    await asyncio.sleep(0.01)
    assert len({id(signal.next())}) == 1 and not any(w.done() for w in waiters)
    signal.fire()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert all(wakeups.waiting(f"task-{i}") == 0 for i in range(5))
    assert len(wakeups._wheels[tick_for(5)]) == 0
    assert not signal.next().done()  # the next change is a new future


def test_frames_are_encoded_once_per_snapshot_and_owner_and_expire() -> None:
    signer = LinkSigner(b"s" * 32, max_ttl_s=3600)
    clock = [100.0]
    frames = FrameCache(ttl_s=1.0, clock=lambda: clock[0])
    renders: list[str] = []

    def frame(status: TaskStatus, viewer: str) -> bytes:
        def render() -> TaskStatusResponse:
            renders.append(viewer)
            return to_response(status, signer, viewer)

        return frames.frame(status, status.owner or viewer, render).data

    done = snap(3, TaskState.SUCCESS)
    first = frame(done, "anyone")
    assert frame(done, "someone else") is first  # signed for the task's owner: the same bytes for all
    assert renders == ["anyone"]
    assert first.startswith(b"id: 3\r\nevent: success\r\ndata: {") and first.endswith(b"}\r\n\r\n")
    assert b"/files/outputs/t/0.wav" in first and b"\n" not in first[first.index(b"data: ") : -4]
    ownerless = snap(4, owner=None)
    assert frame(ownerless, "bob") != frame(ownerless, "carol")  # no owner: each viewer's own links
    clock[0] += 1.5
    frame(done, "anyone")
    assert renders == ["anyone", "bob", "carol", "anyone"]  # re-signed once the cached frame is a second old


def test_frames_tell_apart_snapshots_that_show_something_new() -> None:
    frames = FrameCache()
    signer = LinkSigner(b"s" * 32, max_ttl_s=3600)

    def render(status: TaskStatus) -> Frame:
        return frames.frame(status, "alice", lambda: to_response(status, signer, "alice"))

    pending, again = snap(1, TaskState.PENDING), snap(2, TaskState.PENDING)
    assert render(pending).visible == render(again.model_copy(update={"updated_at": datetime.now(UTC)})).visible
    assert render(pending).visible != render(snap(3)).visible


def test_frames_differ_by_queue_position_and_carry_it() -> None:
    frames = FrameCache()
    signer = LinkSigner(b"s" * 32, max_ttl_s=3600)
    pending = snap(1, TaskState.PENDING)

    def render(queue: QueuePosition | None) -> Frame:
        return frames.frame(pending, "alice", lambda: to_response(pending, signer, "alice", queue=queue), queue)

    third, first = render(QueuePosition(3, 4.0)), render(QueuePosition(1, 2.0))
    assert third.queue == QueuePosition(3, 4.0) and b'"queue_position":3' in third.data
    assert first.queue == QueuePosition(1, 2.0) and b'"queue_position":1' in first.data
    assert render(QueuePosition(3, 4.0)) is third and third.visible == first.visible


async def test_a_pending_stream_wakes_for_queue_snapshots_not_on_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "QUEUE_PUSH_S", 0.1)
    store, changes, frames = StatusStore(), Signal(), FrameCache()
    signer = LinkSigner(b"s" * 32, max_ttl_s=3600)
    queue: list[QueuePosition | None] = [None]
    renders: list[QueuePosition | None] = []

    def render(status: TaskStatus) -> Frame:
        renders.append(queue[0])
        position = queue[0] if status.status is TaskState.PENDING else None
        return frames.frame(status, "alice", lambda: to_response(status, signer, "alice", queue=position), position)

    store.update(snap(1, TaskState.PENDING))
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def follow() -> None:
        async for chunk in tasks.status_events(store, "t", None, 30, render, changes.next, gone):
            await chunks.put(chunk)

    def shown(chunk: bytes) -> tuple[int | None, float | None]:
        body = json.loads(chunk.split(b"data: ", 1)[1])
        return body["queue_position"], body["eta_s"]

    stream = asyncio.create_task(follow())
    assert shown(await asyncio.wait_for(chunks.get(), 1)) == (None, None)
    await asyncio.sleep(0.3)
    assert len(renders) == 2 and chunks.empty()  # idle with nothing to push: no wake-ups until the keep-alive
    queue[0] = QueuePosition(3, 4.0)
    changes.fire()
    assert shown(await asyncio.wait_for(chunks.get(), 1)) == (3, 4.0)  # a move is sent at once
    queue[0] = QueuePosition(3, 3.5)
    changes.fire()
    assert shown(await asyncio.wait_for(chunks.get(), 1)) == (3, 3.5)  # an ETA change after QUEUE_PUSH_S
    store.update(snap(2, TaskState.SUCCESS))
    assert b"event: success" in await asyncio.wait_for(chunks.get(), 1)
    await asyncio.wait_for(stream, 1)
