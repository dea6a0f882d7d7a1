"""The one way from a job's worker thread to the event loop, and to storage through it.

Storage clients live on the event loop (aiobotocore sessions, aiofiles); a worker thread (the engine,
the training loop) reaches them through a `ThreadPortal`, which runs a coroutine on the loop and
blocks the thread until it is done. Closing the portal (the job was abandoned) cancels the calls in
flight and makes further ones raise `PortalClosed`, so an abandoned thread cannot keep writing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from acefarm.infra.storage import ObjectInfo, Storage

P = ParamSpec("P")
T = TypeVar("T")


class PortalClosed(RuntimeError):
    """The job that owned the portal is over (abandoned, or the loop has stopped)."""


class ThreadPortal:
    """Runs coroutines on the event loop it was created on, for code running in other threads."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on the loop and return its result; blocks this (worker) thread.

        Raises `PortalClosed` once the portal is closed or the loop is gone, and `RuntimeError` when
        called on the loop's own thread (that would deadlock: await the coroutine there instead).
        """
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("ThreadPortal.call is for worker threads; on the event loop, await the call")
        coroutine = fn(*args, **kwargs)
        with self._lock:
            if self._closed:
                coroutine.close()
                raise PortalClosed("the job is over")
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            except RuntimeError:  # the loop is closed
                coroutine.close()
                raise PortalClosed("the event loop has stopped") from None
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise PortalClosed("the job is over") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def close(self) -> None:
        """Cancel the calls in flight; later calls raise `PortalClosed`. Idempotent, any thread."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, set()
        for future in pending:
            future.cancel()


class BlockingStorage:
    """Synchronous storage calls for worker threads, each run on the loop through a `ThreadPortal`."""

    def __init__(self, storage: Storage, portal: ThreadPortal) -> None:
        self._storage = storage
        self._portal = portal

    def put_bytes(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        """Store `data` under `key` (see `Storage.put_bytes`)."""
        return self._portal.call(self._storage.put_bytes, key, data, content_type)

    def download_file(self, key: str, dest: Path) -> None:
        """Copy the object to `dest`; `FileNotFoundError` if absent."""
        self._portal.call(self._storage.download_file, key, dest)

    def stat(self, key: str) -> ObjectInfo | None:
        """Metadata, or None if absent."""
        return self._portal.call(self._storage.stat, key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`."""
        return self._portal.call(self._storage.list, prefix)
