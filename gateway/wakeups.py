"""Shared wake-ups for many waiters: one timer per timer wheel for all of them, one future per waiter.

Each SSE stream waits for its task to change, for its keep-alive to come due and, while its job is
pending, for a new queue snapshot. With a per-waiter `asyncio.wait_for`, 10 000 idle streams hold 10 000
tasks and timers; here a waiter is one plain future, woken by `TaskWakeups.wake` when its task changes,
by a shared `Signal` future, or by a `Deadlines` wheel whose single timer ticks while anyone waits (and
not at all when nobody does).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

RESOLUTION = 8
"""A wheel's tick is at most 1/RESOLUTION of the timeouts it serves: a waiter wakes after
timeout × [1, 1 + 1/RESOLUTION)."""

MIN_TICK_S = 2.0**-10
"""The finest tick (about 1 ms), for very short timeouts."""


def tick_for(timeout_s: float) -> float:
    """The tick of the wheel serving `timeout_s`: the largest power of two at most `timeout_s / RESOLUTION`
    (so any mix of timeouts needs only a few wheels)."""
    if timeout_s / RESOLUTION <= MIN_TICK_S:
        return MIN_TICK_S
    return 2.0 ** math.floor(math.log2(timeout_s / RESOLUTION))


def _resolve(waiters: set[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


class Deadlines:
    """Wakes futures once their timeout has passed, rounded up to a `tick_s` slot, from one repeating timer."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._slots: dict[int, set[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, future: asyncio.Future[None], timeout_s: float) -> int:
        """Wake `future` once `timeout_s` has passed; returns its slot for `discard`."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + timeout_s) / self.tick_s)
        self._slots.setdefault(slot, set()).add(future)
        if self._timer is None:
            self._timer = loop.call_at(slot * self.tick_s, self._tick)
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
        due = math.floor(loop.time() / self.tick_s + 1e-9)
        for slot in [s for s in self._slots if s <= due]:
            _resolve(self._slots.pop(slot))
        self._timer = None
        if self._slots:
            self._timer = loop.call_at(min(self._slots) * self.tick_s, self._tick)


class Signal:
    """A change many wait for: `next()` is one future shared by everyone waiting, done at the next `fire()`."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def next(self) -> asyncio.Future[None]:
        """The future done at the next `fire()` (the same one for every caller until then)."""
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def fire(self) -> None:
        """Wake everyone waiting for the next change."""
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None


class TaskWakeups:
    """Per-key waiters (task ids) woken together on change, each with a shared-timer deadline."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._wheels: dict[float, Deadlines] = {}

    def wake(self, key: str) -> None:
        """Wake everyone waiting on `key`."""
        waiters = self._waiters.pop(key, None)
        if waiters:
            _resolve(waiters)

    async def wait(self, key: str, timeout_s: float, *also: asyncio.Future[Any]) -> None:
        """Return when `key` is woken, when any of `also` (e.g. `Signal.next()`, shared, or a disconnect) is
        done, or after about `timeout_s` (see RESOLUTION), whichever comes first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tick_s = tick_for(timeout_s)
        wheel = self._wheels.get(tick_s)
        if wheel is None:
            wheel = self._wheels[tick_s] = Deadlines(tick_s)
        slot = wheel.add(future, timeout_s)
        self._waiters.setdefault(key, set()).add(future)

        def woken(_: asyncio.Future[Any]) -> None:
            _resolve({future})

        for other in also:
            other.add_done_callback(woken)
        try:
            await future
        finally:
            for other in also:
                other.remove_done_callback(woken)
            wheel.discard(future, slot)
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[key]

    def waiting(self, key: str) -> int:
        """How many wait on `key` right now."""
        return len(self._waiters.get(key, ()))
