"""Server-sent event frames for task status, encoded once per snapshot and shared by every subscriber.

A status change reaches every subscriber of the task at once; rendering the public view (two HMAC
signatures, a pydantic model, JSON) for each of them would cost the fan-out per subscriber. `FrameCache`
renders a snapshot once per signing owner and queue position (a pending job's place moves without a
new version) and hands the same bytes to all; entries live one second, so signed links and queue
positions in a cached frame are never older than that.

`EventStream` sends a stream's frames from the request's own task: Litestar's `Stream` runs each response
in an anyio task group with a second task listening for the disconnect, which costs several KB per idle
subscriber; here the disconnect is one plain future (`client_gone`) that the stream waits on besides its
task's changes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import HTTPResponseBodyEvent, Receive, Send

from schemas.queues import QueuePosition
from schemas.status import TaskStatus, TaskStatusResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""What every event stream answers with besides its media type (no caching, no proxy buffering)."""

MEDIA_TYPE = "text/event-stream"
KEEPALIVE = b": keep-alive\r\n\r\n"
"""The comment sent while nothing changes."""

_HIDDEN = {"version", "updated_at"}


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded event: `data` (id = version, event = status, data = the public JSON), `visible`, the
    snapshot without its version and time, equal for snapshots that show nothing new, and `queue`, the
    queue position it shows (None unless pending)."""

    visible: str
    data: bytes
    queue: QueuePosition | None


def encode_frame(status: TaskStatus, response: TaskStatusResponse) -> Frame:
    """The event for `status`, showing `response` (compact JSON: one `data:` line)."""
    data = f"id: {status.version}\r\nevent: {status.status.value}\r\ndata: {response.model_dump_json()}\r\n\r\n"
    queue = None if response.queue_position is None else QueuePosition(response.queue_position, response.eta_s)
    return Frame(visible=status.model_dump_json(exclude=_HIDDEN), data=data.encode(), queue=queue)


class FrameCache:
    """Recently encoded frames by (task id, version, signing owner, queue position), each reused for `ttl_s`
    seconds."""

    def __init__(self, max_frames: int = 4096, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._frames: OrderedDict[tuple[str, int, str, QueuePosition | None], tuple[float, Frame]] = OrderedDict()
        self._max_frames = max_frames
        self._ttl_s = ttl_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._frames)

    def frame(
        self,
        status: TaskStatus,
        owner: str,
        render: Callable[[], TaskStatusResponse],
        queue: QueuePosition | None = None,
    ) -> Frame:
        """The frame of `status` as signed for `owner` and showing `queue`: cached, or encoded from `render()` now."""
        key = (status.task_id, status.version, owner, queue)
        now = self._clock()
        cached = self._frames.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        frame = encode_frame(status, render())
        self._frames[key] = (now, frame)
        self._frames.move_to_end(key)
        while len(self._frames) > self._max_frames:
            self._frames.popitem(last=False)
        return frame


Events = Callable[["asyncio.Future[None]"], AsyncIterator[bytes]]
"""A stream's encoded events, given the future done once its client has gone (it should then end)."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def client_gone(receive: Receive) -> asyncio.Future[None]:
    """A future done once the client has disconnected (read from `receive`); cancel it when done streaming."""
    return asyncio.ensure_future(_until_disconnect(receive))


class ASGIEventStream(ASGIResponse):
    """The ASGI side of `EventStream`: sends each event as it comes, from the request's task."""

    __slots__ = ("events",)

    _should_set_content_length = False

    def __init__(self, events: Events, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    async def send_body(self, send: Send, receive: Receive) -> None:
        """Send every event of the stream, then end the body; stops early once the client has gone."""
        gone = client_gone(receive)
        try:
            async with aclosing(self.events(gone)) as events:
                async for chunk in events:
                    await send(_body(chunk, more=True))
            await send(_body(b"", more=False))
        finally:
            gone.cancel()


def _body(chunk: bytes, more: bool) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class EventStream(Stream):
    """A `text/event-stream` response (with `SSE_HEADERS`) of `events(gone)`, without a task per stream for
    the disconnect (see the module docstring); documented like any `Stream`."""

    __slots__ = ("events",)

    def __init__(self, events: Events) -> None:
        super().__init__((), media_type=MEDIA_TYPE, headers=SSE_HEADERS)
        self.events = events

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: Any = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: Any = None,
    ) -> ASGIResponse:
        """The ASGI response sending `events` (Litestar's hook; `headers` and `cookies` from layers are kept)."""
        return ASGIEventStream(
            self.events,
            background=self.background or background,
            cookies=[*self.cookies, *(cookies or ())],
            headers={**(headers or {}), **self.headers},
            is_head_response=is_head_response,
            media_type=MEDIA_TYPE,
            status_code=self.status_code or status_code,
        )
