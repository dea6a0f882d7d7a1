"""Deadlines: how long a job may take, and a watchdog on the event loop that gives up on it after that.

The watchdog runs the work as a task of its own and waits on it with a timeout, so it fires whatever
the work is stuck in: a worker thread (a native call that cannot be interrupted), an awaited storage
call, or a coroutine that swallows its cancellation. It cancels the work, gives it a moment to unwind
and then leaves it behind; what is left behind is why the process must exit afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from acefarm.infra.settings import Settings

T = TypeVar("T")

UNWIND_S = 2.0
"""How long cancelled work gets to unwind before it is left behind."""


class DeadlinePassed(Exception):
    """The work did not finish within its deadline (it was cancelled, and possibly left behind)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not done within {seconds:g} s")
        self.seconds = seconds


def job_deadline_s(settings: Settings, units: float = 0.0, per_unit_s: float = 0.0) -> float:
    """`JOB_DEADLINE_BASE_S` plus `units` of the job's size at `per_unit_s` seconds each."""
    return settings.job_deadline_base_s + max(units, 0.0) * per_unit_s


async def within_deadline(work: Coroutine[Any, Any, T], seconds: float, *, name: str) -> T:
    """Run `work` as its own task and return its result; raise `DeadlinePassed` after `seconds`.

    On expiry the task is cancelled and given `UNWIND_S` to finish unwinding; if it does not, it is
    left behind. Cancelling the caller cancels the task too (with the same bounded wait).
    """
    task = asyncio.create_task(work, name=name)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        await _cancel(task)
        raise
    if task in done:
        return task.result()
    await _cancel(task)
    raise DeadlinePassed(seconds)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait({task}, timeout=UNWIND_S)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
