"""Shared wake-ups for many waiters: one timer per timeout for all of them, one future per waiter.

Each SSE stream waits for its task to change or for its keep-alive to come due. With a per-waiter
`asyncio.wait_for`, 10 000 idle streams hold 10 000 tasks and timers; here a waiter is one plain
future, woken by `TaskWakeups.wake` when its task changes or by a `Deadlines` wheel whose single timer
ticks at a fraction of the timeout while anyone waits (and not at all when nobody does).
"""

from __future__ import annotations

import asyncio
import math

RESOLUTION = 8
"""Deadlines are rounded up to 1/RESOLUTION of the timeout: a waiter wakes after timeout × [1, 1 + 1/RESOLUTION)."""


def _resolve(waiters: set[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


class Deadlines:
    """Wakes futures once `timeout_s` has passed, from one repeating timer for all of them."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._tick_s = timeout_s / RESOLUTION
        self._slots: dict[int, set[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, future: asyncio.Future[None]) -> int:
        """Wake `future` once the timeout has passed; returns its slot for `discard`."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self.timeout_s) / self._tick_s)
        self._slots.setdefault(slot, set()).add(future)
        if self._timer is None:
            self._timer = loop.call_at(slot * self._tick_s, self._tick)
        return slot

    def discard(self, future: asyncio.Future[None], slot: int) -> None:
        """Forget a future woken otherwise (its task changed, or its waiter went away)."""
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._slots[slot]

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._slots.values())

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = math.floor(loop.time() / self._tick_s + 1e-9)
        for slot in [s for s in self._slots if s <= due]:
            _resolve(self._slots.pop(slot))
        self._timer = None
        if self._slots:
            self._timer = loop.call_at(min(self._slots) * self._tick_s, self._tick)


class TaskWakeups:
    """Per-key waiters (task ids) woken together on change, each with a shared-timer deadline."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._deadlines: dict[float, Deadlines] = {}

    def wake(self, key: str) -> None:
        """Wake everyone waiting on `key`."""
        waiters = self._waiters.pop(key, None)
        if waiters:
            _resolve(waiters)

    async def wait(self, key: str, timeout_s: float) -> None:
        """Return when `key` is woken or after about `timeout_s` (see RESOLUTION), whichever comes first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadlines = self._deadlines.get(timeout_s)
        if deadlines is None:
            deadlines = self._deadlines[timeout_s] = Deadlines(timeout_s)
        slot = deadlines.add(future)
        self._waiters.setdefault(key, set()).add(future)
        try:
            await future
        finally:
            deadlines.discard(future, slot)
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[key]

    def waiting(self, key: str) -> int:
        """How many wait on `key` right now."""
        return len(self._waiters.get(key, ()))
