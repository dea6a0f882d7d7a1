"""The cancel watcher against the embedded broker: a catch-up sees every cancel published before it was asked,
and callers at the same moment share one end-offsets request."""

from __future__ import annotations

import asyncio
from typing import Any

from acefarm.infra.kafka import ensure_topics, make_producer, publish
from acefarm.runtime.cancels import CancelWatcher
from schemas import topics
from schemas.events import CancelRequested
from tests.support.ids import new_task_id


async def test_callers_at_the_same_moment_share_one_check_and_a_later_caller_gets_its_own(make_settings: Any) -> None:
    settings = make_settings()
    await ensure_topics(settings)
    watcher, producer = CancelWatcher(settings), make_producer(settings)
    await producer.start()
    await watcher.start()
    try:
        assert watcher._probe is not None
        probe, asked = watcher._probe, 0
        end_offsets = probe.end_offsets

        async def counted(partitions: Any) -> Any:
            nonlocal asked
            asked += 1
            return await end_offsets(partitions)

        probe.end_offsets = counted  # type: ignore[method-assign]
        first, second = new_task_id(), new_task_id()
        await publish(producer, topics.TASK_CONTROL, CancelRequested(task_id=first))
        assert await asyncio.gather(*(watcher.catch_up(10) for _ in range(4))) == [True] * 4
        assert asked == 1 and watcher.is_cancelled(first)

        check = asyncio.ensure_future(watcher.catch_up(10))
        await asyncio.sleep(0)  # the check has begun: a cancel published now needs a check of its own
        await publish(producer, topics.TASK_CONTROL, CancelRequested(task_id=second))
        assert await watcher.catch_up(10) and await check
        assert asked == 3 and watcher.is_cancelled(second)
    finally:
        await watcher.stop()
        await producer.stop()
