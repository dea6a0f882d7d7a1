"""`ThreadPortal` and `BlockingStorage`: a worker thread's way to the event loop and to storage."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from acefarm.infra.storage import LocalStorage
from acefarm.runtime.portal import BlockingStorage, PortalClosed, ThreadPortal


async def test_a_thread_uses_storage_through_the_loop(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    portal = ThreadPortal()
    blocking = BlockingStorage(storage, portal)

    def work() -> tuple[int, list[str], bool]:
        info = blocking.put_bytes("loras/x/a.bin", b"abc", "application/octet-stream")
        blocking.download_file("loras/x/a.bin", tmp_path / "copy.bin")
        with pytest.raises(FileNotFoundError):
            blocking.download_file("loras/x/missing.bin", tmp_path / "missing.bin")
        return info.size, [i.key for i in blocking.list("loras/x/")], blocking.stat("loras/x/nope") is None

    assert await asyncio.to_thread(work) == (3, ["loras/x/a.bin"], True)
    assert (tmp_path / "copy.bin").read_bytes() == b"abc"
    await storage.close()


async def test_closing_cancels_the_call_in_flight_and_refuses_later_ones() -> None:
    portal = ThreadPortal()
    entered, cancelled = threading.Event(), asyncio.Event()

    async def forever() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def work() -> list[str]:
        outcomes = []
        for _ in range(2):
            try:
                portal.call(forever)
            except PortalClosed:
                outcomes.append("closed")
        return outcomes

    thread = asyncio.ensure_future(asyncio.to_thread(work))
    await asyncio.to_thread(entered.wait, 5)
    portal.close()
    assert await asyncio.wait_for(thread, 5) == ["closed", "closed"]
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_calling_from_the_loop_itself_is_refused() -> None:
    portal = ThreadPortal()

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="worker threads"):
        portal.call(nothing)
