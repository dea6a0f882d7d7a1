"""`EventStream`: a `text/event-stream` response that costs as little as possible per idle subscriber.

Litestar's `Stream` sends each response from an anyio task group with a second task listening for the
client's disconnect; that task group cost about 4 KB of the ~27 KB the gateway held per idle subscriber
(bench/README.md, "SSE fan-out"). `EventStream` sends from the request's own task; the
disconnect is one future (`client_gone`, a bare asyncio task reading `receive()`) that the stream waits on
together with its task's changes, so a client that goes away ends its stream at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import HTTPResponseBodyEvent, Receive, Send

from gateway.sse import MEDIA_TYPE, SSE_HEADERS

Events = Callable[["asyncio.Future[None]"], AsyncGenerator[bytes, None]]
"""A stream's encoded events, given the future done once its client has gone (they should then end)."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def client_gone(receive: Receive) -> asyncio.Future[None]:
    """A future done once the client has disconnected (read from the ASGI `receive`); cancel it when done
    streaming."""
    return asyncio.ensure_future(_until_disconnect(receive))


class ASGIEventStream(ASGIResponse):
    """The ASGI side of `EventStream`: sends each event as it comes, from the request's task."""

    __slots__ = ("events",)

    _should_set_content_length = False

    def __init__(self, events: Events, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    async def send_body(self, send: Send, receive: Receive) -> None:
        """Send every event of the stream, then end the body; ends early once the client has gone."""
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
    """A `text/event-stream` response (with `SSE_HEADERS`) of `events(gone)`, without a task group per stream
    (see the module docstring); documented like any `Stream`."""

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
        """The ASGI response sending `events` (Litestar's hook; headers and cookies from its layers are kept)."""
        return ASGIEventStream(
            self.events,
            background=self.background or background,
            cookies=[*self.cookies, *(cookies or ())],
            headers={**(headers or {}), **self.headers},
            is_head_response=is_head_response,
            media_type=MEDIA_TYPE,
            status_code=self.status_code or status_code,
        )
