"""A TCP proxy that cuts chosen answers short: a connection that drops mid-response, for real clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from types import TracebackType

Cut = Callable[[bytes], int | None]
"""Given the answer's bytes so far, where to cut it (None: not yet)."""


class CuttingProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` from a thread of its own. The first `times`
    requests matching `request` lose the rest of their answer: once `cut(answer so far)` names a position,
    the client gets the bytes up to it and the connection closes. Every request's bytes are kept in `requests`."""

    def __init__(self, upstream_port: int, request: re.Pattern[bytes], cut: Cut, times: int = 1) -> None:
        self._upstream_port = upstream_port
        self._request = request
        self._cut = cut
        self._left = times
        self.cuts = 0
        """How many answers were cut."""
        self.requests: list[bytes] = []
        """The bytes clients sent, one entry per connection."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cutting-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop)
        self._server = server.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.requests)
        self.requests.append(b"")
        armed = asyncio.Event()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return

        async def upstream() -> None:
            while data := await reader.read(65536):
                self.requests[index] += data
                if self._left > 0 and not armed.is_set() and self._request.search(self.requests[index]):
                    self._left -= 1
                    armed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            answer, sent = b"", 0
            while data := await up_reader.read(65536):
                if armed.is_set():
                    answer += data
                    at = self._cut(answer)
                    if at is not None:
                        writer.write(answer[sent:at])
                        await writer.drain()
                        self.cuts += 1
                        return
                    sent = len(answer)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for closing in (writer, up_writer):
            closing.close()
            with contextlib.suppress(ConnectionError):
                await closing.wait_closed()


def at_once(_answer: bytes) -> int:
    """Cut before the first byte: the request was handled, its answer is lost."""
    return 0


def after_events(count: int) -> Cut:
    """Cut an event stream just after the `count`-th complete event (a `data:` line and the blank line after it)."""
    pattern = re.compile(rb"data: [^\n]*\n\r?\n")

    def cut(answer: bytes) -> int | None:
        ends = [m.end() for m in pattern.finditer(answer)]
        return ends[count - 1] if len(ends) >= count else None

    return cut
