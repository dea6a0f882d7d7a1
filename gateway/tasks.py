"""Task status, cancellation and the live status stream (server-sent events), each for its owner only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.retention import delete_task_files
from gateway.access import caller, events_path, known_status, link_owner, visible_status
from gateway.auth import SIGNED_LINKS, Principal
from gateway.errors import error_responses
from gateway.event_stream import EventStream
from gateway.queue_view import moved
from gateway.responses import renderer, to_response
from gateway.sse import KEEPALIVE, Frame
from gateway.state import GatewayState
from gateway.status_view import StatusStore
from schemas import topics
from schemas.events import CancelRequested
from schemas.queues import QueuePosition
from schemas.status import TaskState, TaskStatus, TaskStatusResponse

log = get_logger(__name__)

QUEUE_PUSH_S = 5.0
"""While a job is pending, a changed queue position or ETA is pushed at least this often (moves that
`moved` finds noticeable go out at once)."""

FrameRender = Callable[[TaskStatus], Frame]


def _frames(gateway: GatewayState, viewer: str) -> FrameRender:
    """Frames as `viewer` sees them (with a pending job's queue position), shared through the gateway's frame
    cache with every other subscriber; one renderer per viewer, shared by all of that viewer's open streams."""
    render = gateway.renderers.get(viewer)
    if render is None:
        signer, base_url, frames = gateway.signer, gateway.public_base_url, gateway.frames

        def render(status: TaskStatus) -> Frame:
            queue = gateway.queue_position(status)
            return frames.frame(
                status, status.owner or viewer, lambda: to_response(status, signer, viewer, base_url, queue), queue
            )

        gateway.renderers[viewer] = render
    return render


async def status_events(
    store: StatusStore,
    task_id: str,
    last_event_id: int | None,
    keepalive_s: float,
    render: FrameRender,
    queue_changed: Callable[[], asyncio.Future[None]],
    gone: asyncio.Future[None],
) -> AsyncGenerator[bytes, None]:
    """The encoded events of the task's snapshots newer than `last_event_id` (the current one when None),
    then of each change, each as `render` shows it; a keep-alive comment after `keepalive_s` idle; ends
    once the final state has been sent, or at once when `gone` is done (the client disconnected).

    While the task is pending its queue position also moves without a new version: it is re-read when a
    queue snapshot arrives (`queue_changed()`: a future shared by all waiters) and sent again, with the
    same id, when it moved noticeably (`moved`) or, if it changed at all, every `QUEUE_PUSH_S`. An idle
    pending stream with nothing left to push wakes only for its keep-alive.
    """
    last = last_event_id
    shown: str | None = None
    queue: QueuePosition | None = None
    said_at = pushed_at = time.monotonic()
    while True:
        for status in store.since(task_id, last):
            frame = render(status)
            if frame.visible != shown:  # e.g. streams' first "pending" after the gateway's own: nothing new to show
                yield frame.data
                shown, queue = frame.visible, frame.queue
                said_at = pushed_at = time.monotonic()
            last = status.version
        current = store.get(task_id)
        if current is None or (current.status.is_final and last is not None and last >= current.version):
            return
        version = last if last is not None else -1
        if current.status is not TaskState.PENDING:
            await store.wait_newer(task_id, version, keepalive_s, gone)
            if gone.done():
                return
            if not store.newer(task_id, version):
                yield KEEPALIVE
                said_at = time.monotonic()
            continue
        frame, now = render(current), time.monotonic()
        if moved(queue, frame.queue) or (frame.queue != queue and now - pushed_at >= QUEUE_PUSH_S):
            yield frame.data
            queue, said_at, pushed_at = frame.queue, now, now
        elif now - said_at >= keepalive_s:
            yield KEEPALIVE
            said_at = now
        wait_s = keepalive_s - (now - said_at)
        if frame.queue != queue:  # a small move not sent yet: due QUEUE_PUSH_S after the last push
            wait_s = min(wait_s, QUEUE_PUSH_S - (now - pushed_at))
        await store.wait_newer(task_id, version, max(0.01, wait_s), queue_changed(), gone)
        if gone.done():
            return


def _parse_event_id(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class TasksController(Controller):
    """`GET /status/{task_id}`, `DELETE /tasks/{task_id}` and `GET /tasks/{task_id}/events`."""

    tags = ("tasks",)

    @get("/status/{task_id:str}", summary="A task's status", responses=error_responses(401, 404, 503))
    async def get_status(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal], task_id: FromPath[str]
    ) -> TaskStatusResponse:
        """The task's current status, progress and signed result URLs (`file_url` first take, `file_urls`
        all; they work without headers until they expire). Someone else's task answers 404 like an unknown one."""
        return renderer(gateway, principal.owner)(visible_status(gateway, principal, task_id))

    @delete(
        "/tasks/{task_id:str}",
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a task, or delete a finished task's files",
        responses={
            204: ResponseSpec(None, description="The task was final: its files are deleted (its status stays)."),
            **error_responses(401, 404, 503),
        },
    )
    async def cancel_task(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal], task_id: FromPath[str]
    ) -> Response[TaskStatusResponse | None]:
        """Ask workers to cancel the task: a queued job is skipped, a running one stops at its next step.

        202 with the status as it is now (the final `cancelled` follows over SSE). A final task (success,
        failed, cancelled) is not cancelled but cleaned up: its results, inputs, dataset and checkpoint are
        deleted, 204 (again 204 when repeated). Only its owner or an admin may; anyone else gets the
        unknown task's 404.
        """
        status = visible_status(gateway, principal, task_id)
        if status.status.is_final:
            removed = await delete_task_files(gateway.storage, task_id)
            log.info("gateway.task_files_deleted", task_id=task_id, objects=removed, by=principal.owner)
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        await publish(gateway.producer, topics.TASK_CONTROL, CancelRequested(task_id=task_id))
        log.info("gateway.cancel_requested", task_id=task_id, by=principal.owner)
        return Response(
            renderer(gateway, principal.owner)(status),
            status_code=HTTP_202_ACCEPTED,
        )

    @get(
        "/tasks/{task_id:str}/events",
        summary="Follow a task live (server-sent events)",
        responses=error_responses(401, 404, 503),
        opt={SIGNED_LINKS: True},
    )
    async def task_events(
        self,
        gateway: NamedDependency[GatewayState],
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        last_event_id: Annotated[
            str | None,
            HeaderParameter(name="Last-Event-ID", description="Resume after this version: only newer states are sent."),
        ] = None,
    ) -> EventStream:
        """`text/event-stream` of the task's status: the current state at once, then every change.

        Each event has `id` = version, `event` = status and `data` = the `GET /status` JSON. The stream
        closes after the final state (success, failed, cancelled). With `Last-Event-ID` only newer
        states are sent (none if the client already has the final one). While the job is pending, the
        current state is sent again (same id) when its `queue_position` moves noticeably, and every few
        seconds when its position or `eta_s` changed. A `: keep-alive` comment is sent every
        SSE_KEEPALIVE_S seconds while nothing changes. Authenticate with a key, or open
        the status's signed `events_url` (for `EventSource`, which cannot send headers).
        """
        owner = link_owner(gateway, request, events_path(task_id))
        if owner is None:
            principal = caller(gateway, request)
            visible_status(gateway, principal, task_id)
            owner = principal.owner
        else:
            known_status(gateway, task_id)
        return EventStream(
            partial(
                status_events,
                gateway.view.store,
                task_id,
                _parse_event_id(last_event_id),
                gateway.settings.sse_keepalive_s,
                _frames(gateway, owner),
                gateway.queues.next_change,
            )
        )
