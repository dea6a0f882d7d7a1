"""Run blocking engine work in a daemon thread and await it from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_in_daemon_thread(fn: Callable[[], T], name: str = "engine") -> asyncio.Future[T]:
    """Start `fn` in a new daemon thread; the returned future resolves with its result or exception.

    A daemon thread (not the default executor) so that a process abandoning a job on shutdown can
    exit without waiting for the engine. The caller's context variables (structlog's `task_id`)
    are carried into the thread.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = context.run(fn)
        except BaseException as error:  # handed to the awaiting coroutine
            _call_soon(loop, settle, None, error)
        else:
            _call_soon(loop, settle, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(fn, *args)
