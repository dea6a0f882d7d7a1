"""`EventStream` on a real uvicorn server and client: events go out as they come, the body ends after the
last one, and a client that goes away ends its stream at once, leaving no waiter or task behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx
import uvicorn
from litestar import Litestar, get

from acefarm.devtools.broker import free_port
from gateway.event_stream import EventStream
from gateway.wakeups import TaskWakeups

HELLO = b"event: hello\r\ndata: {}\r\n\r\n"


async def test_events_stream_and_a_leaving_client_ends_its_stream_at_once() -> None:
    wakeups = TaskWakeups()
    ended: list[bool] = []  # per stream: whether its client had gone when it ended
    finite = asyncio.Event()

    async def events(gone: asyncio.Future[None]) -> AsyncGenerator[bytes, None]:
        try:
            yield HELLO
            while not gone.done() and not finite.is_set():
                await wakeups.wait("task", 30, gone)  # woken only by a change or the disconnect
                yield HELLO
        finally:
            ended.append(gone.done())

    @get("/events", sync_to_thread=False)
    def follow() -> EventStream:
        return EventStream(events)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Litestar([follow]), port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
                await asyncio.sleep(0.01)
            idle = len(asyncio.all_tasks())
            async with client.stream("GET", "/events") as response:
                assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                assert response.headers["cache-control"] == "no-cache"
                assert response.headers["x-accel-buffering"] == "no"
                chunks = response.aiter_bytes()
                assert await anext(chunks) == HELLO
                assert wakeups.waiting("task") == 1
            while wakeups.waiting("task") or not ended:  # noqa: ASYNC110 - polling the server's state
                await asyncio.sleep(0.01)
            assert ended == [True]  # ended by the disconnect, not by a timeout (30 s)
            await asyncio.sleep(0.05)
            assert len(asyncio.all_tasks()) == idle  # the request's task and its disconnect reader are gone

            finite.set()
            async with client.stream("GET", "/events") as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            assert body == HELLO  # it ended by itself: the body is complete
            assert ended == [True, False]
    finally:
        server.should_exit = True
        await serving
