"""One engine call shared by the members of a batch (docs/consumer.md, "Batching").

Each member of a batch runs its own lifecycle (attempt, `TaskStarted`, progress, cancel checks, deadline,
final event); at its engine call it hands its input to the batch's `SharedCompute` through its `Seat`. The
call runs once every member has handed its input in or left (ended before its engine call), in one worker
thread, holding the batch's claim on the engine; each member gets its own result back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acefarm.infra.logging import get_logger
from acefarm.runtime.group_loop import run_in_daemon_thread
from acefarm.runtime.pipeline import Claim

log = get_logger(__name__)

BatchCall = Callable[[list[Any]], list[Any]]
"""Blocking: the members' inputs → one result per input, in order."""


@dataclass
class _Entry:
    item: Any
    alone: bool
    result: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SharedCompute:
    """The engine call of a batch of `members` jobs holding `claim`.

    Members with `alone` (a retried attempt, which may be what crashed the batch before) run after the
    shared call, one call each; a shared call that raises is retried member by member, so one bad
    request fails only itself.
    """

    def __init__(self, members: int, claim: Claim, name: str = "engine") -> None:
        self._expected = members
        self._claim = claim
        self._name = name
        self._entries: dict[int, _Entry] = {}
        self._seats = 0
        self._call: BatchCall | None = None
        self._task: asyncio.Task[None] | None = None

    def seat(self) -> Seat:
        """The next member's place in the batch (the call gets the members' inputs in the order of their seats)."""
        self._seats += 1
        return Seat(self, self._seats)

    def _arrive(self, index: int, entry: _Entry | None, call: BatchCall | None) -> None:
        self._expected -= 1
        if entry is not None:
            self._entries[index] = entry
            self._call = call
        if self._expected == 0 and self._entries and self._task is None:
            self._task = asyncio.create_task(self._run(), name="batch-compute")

    async def _run(self) -> None:
        assert self._call is not None
        call = self._call
        entries = [self._entries[index] for index in sorted(self._entries)]
        together = [entry for entry in entries if not entry.alone]
        apart = [entry for entry in entries if entry.alone]
        self._claim.computing()
        try:
            if len(together) > 1:
                items = [entry.item for entry in together]
                try:
                    results = await run_in_daemon_thread(lambda: call(items), name=self._name)
                except Exception as error:
                    log.warning("batch.failed_retrying_alone", members=len(together), error=repr(error))
                    apart = together + apart
                else:
                    for entry, result in zip(together, results, strict=True):
                        _settle(entry, result, None)
            else:
                apart = together + apart
            for entry in apart:
                if entry.result.done():  # its job gave up (deadline, shutdown)
                    continue
                try:
                    result = (await run_in_daemon_thread(functools.partial(call, [entry.item]), name=self._name))[0]
                except Exception as error:
                    _settle(entry, None, error)
                else:
                    _settle(entry, result, None)
        finally:
            for entry in entries:  # never leave a member waiting (a wrong count of results)
                _settle(entry, None, RuntimeError("the batched engine call returned no result for this job"))
            self._claim.release()


def _settle(entry: _Entry, result: Any, error: BaseException | None) -> None:
    if entry.result.done():
        return
    if error is not None:
        entry.result.set_exception(error)
    else:
        entry.result.set_result(result)


class Seat:
    """A member's place in a `SharedCompute`: it hands its input in once (`compute`) or leaves."""

    def __init__(self, shared: SharedCompute, index: int) -> None:
        self._shared = shared
        self._index = index
        self._arrived = False

    async def compute(self, item: Any, call: BatchCall, *, alone: bool) -> Any:
        """Hand `item` in and wait for its result (or the call's exception)."""
        if self._arrived:
            raise RuntimeError("a batch member computes once")
        self._arrived = True
        entry = _Entry(item, alone)
        self._shared._arrive(self._index, entry, call)
        return await entry.result

    def leave(self) -> None:
        """The member is over (or ended before its engine call); idempotent."""
        if not self._arrived:
            self._arrived = True
            self._shared._arrive(self._index, None, None)
