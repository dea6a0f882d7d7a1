"""A TCP proxy that hangs chosen requests: a network path that stalls mid-upload, for real clients."""

from __future__ import annotations

import asyncio
import contextlib
import re


class StallingProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; once a client sends bytes matching `stall` (e.g. the
    request line of an upload), that connection is held open and nothing more is forwarded either way."""

    def __init__(self, upstream_host: str, upstream_port: int, stall: re.Pattern[bytes]) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._stall = stall
        self._server: asyncio.Server | None = None
        self._held = asyncio.Event()  # never set: stalled connections wait on it until the proxy stops
        self._tasks: set[asyncio.Task[None]] = set()
        self.stalled = 0
        """How many connections were stalled."""

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(self._pump(reader, up_writer, watch=True), self._pump(up_reader, writer, watch=False))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, watch: bool) -> None:
        recent = b""
        while data := await src.read(65536):
            if watch:
                recent = (recent + data)[-8192:]
                if self._stall.search(recent):
                    self.stalled += 1
                    await self._held.wait()
            dst.write(data)
            await dst.drain()
        dst.close()
