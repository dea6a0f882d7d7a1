"""Checking a dataset zip in a child process with memory and time limits (no torch).

Within the declared limits a hostile zip can still cost much memory or time (many tracks to decode,
a codec that misbehaves). Run in a child, the check cannot take its caller down: the child's address
space is capped (`RLIMIT_AS`), it is killed when the time is up, and it is killed when the awaiting
task is cancelled (a client that went away). Children are forked from a `forkserver` that has the
decoding modules loaded, so a check starts in milliseconds and shares nothing with the caller. The
child reports in JSON (never pickle: a child subverted by its input must not run code in the caller).
As with every `multiprocessing` start method but fork, the caller's `__main__` must be safe to import
(the usual `if __name__ == "__main__":` guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import resource
import shutil
import tempfile
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from acefarm.model.datasets import DatasetError, DatasetLimits, extract_dataset
from schemas.training import TrackInfo

_CONTEXT = multiprocessing.get_context("forkserver")
_PRELOAD = ["acefarm.model.datasets"]
_MAX_REPORT_BYTES = 16 * 1024 * 1024
"""Room for the largest valid report: 50 tracks with 64 KB of lyrics each."""


async def validate_dataset_zip_isolated(
    zip_path: Path, limits: DatasetLimits, *, timeout_s: float, memory_bytes: int
) -> list[TrackInfo]:
    """`validate_dataset_zip` in a child process limited to `memory_bytes` of address space and `timeout_s`.

    Returns the same tracks and raises the same `DatasetError`; running out of memory or time (or the
    child dying) raises a `DatasetError` saying the dataset is too large to check. An unexpected error
    in the check raises `RuntimeError` with the child's traceback. Cancelling the awaiting task kills
    the child. The unpacked files are removed in every case.
    """
    work = Path(tempfile.mkdtemp(prefix="acefarm-dataset-"))
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(
        target=_check, args=(sender, zip_path, work, limits, memory_bytes), name="dataset-check", daemon=True
    )
    _CONTEXT.set_forkserver_preload(_PRELOAD)
    starting = asyncio.ensure_future(asyncio.to_thread(child.start))  # the first start launches the forkserver
    try:
        await asyncio.shield(starting)
        sender.close()
        ended = await _wait_readable(receiver, child.sentinel, timeout_s)
        report = receiver.recv_bytes(_MAX_REPORT_BYTES) if ended and receiver.poll() else None
    except (EOFError, OSError):  # the child died while sending, or sent too much
        report = None
    finally:
        sender.close()
        with contextlib.suppress(Exception):
            await starting  # a cancelled caller still waits for the start, so the child is never left running
        if child.is_alive():
            child.kill()
        if child.pid is not None:
            await asyncio.to_thread(child.join)
        receiver.close()
        await asyncio.to_thread(shutil.rmtree, work, True)
    if not ended:
        raise DatasetError(None, f"checking the dataset took longer than {timeout_s:g} s; send fewer or shorter tracks")
    return _outcome(report, memory_bytes)


async def _wait_readable(receiver: Connection, sentinel: int, timeout_s: float) -> bool:
    """Wait until the child sends or exits; False when `timeout_s` passes first."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    fds = (receiver.fileno(), sentinel)
    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        return False
    finally:
        for fd in fds:
            loop.remove_reader(fd)
    return True


def _outcome(report: bytes | None, memory_bytes: int) -> list[TrackInfo]:
    """The child's report as tracks, or the error it stands for."""
    message: dict[str, Any] = json.loads(report) if report else {}
    if "tracks" in message:
        return [TrackInfo.model_validate(track) for track in message["tracks"]]
    if "invalid" in message:
        file, reason = message["invalid"]
        raise DatasetError(None if file is None else str(file), str(reason))
    if "error" in message:
        raise RuntimeError(f"the dataset check failed in its child process:\n{message['error']}")
    raise DatasetError(
        None,
        f"the dataset is too large to check within {memory_bytes / 2**20:.0f} MB of memory; "
        "send fewer, shorter or smaller tracks",
    )


def _check(sender: Connection, zip_path: Path, work: Path, limits: DatasetLimits, memory_bytes: int) -> None:
    """The child: cap the address space, check the zip, report the tracks or what went wrong in JSON."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    message: dict[str, Any]
    try:
        message = {"tracks": [track.info().model_dump() for track in extract_dataset(zip_path, work, limits).tracks]}
    except DatasetError as error:
        message = {"invalid": [error.file, error.reason]}
    except MemoryError:
        message = {"memory": True}
    except Exception:
        message = {"error": traceback.format_exc()}
    sender.send_bytes(json.dumps(message).encode())
    sender.close()
