"""Task status, cancellation and the live status stream (server-sent events), each for its owner only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, HeaderParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from gateway.access import caller, events_path, known_status, link_owner, visible_status
from gateway.auth import SIGNED_LINKS, Principal
from gateway.errors import error_responses
from gateway.responses import to_response
from gateway.sse import KEEPALIVE, MEDIA_TYPE, SSE_HEADERS, Frame
from gateway.state import GatewayState
from gateway.status_view import StatusStore
from schemas import topics
from schemas.events import CancelRequested
from schemas.status import TaskStatus, TaskStatusResponse

log = get_logger(__name__)

Render = Callable[[TaskStatus], Frame]


def _renderer(gateway: GatewayState, viewer: str) -> Render:
    """Frames as `viewer` sees them, shared through the gateway's frame cache with every other subscriber."""
    signer, base_url, frames = gateway.signer, gateway.public_base_url, gateway.frames

    def render(status: TaskStatus) -> Frame:
        return frames.frame(status, status.owner or viewer, lambda: to_response(status, signer, viewer, base_url))

    return render


async def status_events(
    store: StatusStore, task_id: str, last_event_id: int | None, keepalive_s: float, render: Render
) -> AsyncIterator[bytes]:
    """The encoded events of the task's snapshots newer than `last_event_id` (the current one when None),
    then of each change, each as `render` shows it; a keep-alive comment after `keepalive_s` idle; ends
    once the final state has been sent."""
    last = last_event_id
    shown: str | None = None
    while True:
        for status in store.since(task_id, last):
            frame = render(status)
            if frame.visible != shown:  # e.g. streams' first "pending" after the gateway's own: nothing new to show
                yield frame.data
                shown = frame.visible
            last = status.version
        current = store.get(task_id)
        if current is None or (current.status.is_final and last is not None and last >= current.version):
            return
        if not await store.wait_newer(task_id, last if last is not None else -1, keepalive_s):
            yield KEEPALIVE


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
        status = visible_status(gateway, principal, task_id)
        return to_response(status, gateway.signer, principal.owner, gateway.public_base_url)

    @delete(
        "/tasks/{task_id:str}",
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a task",
        responses=error_responses(401, 404, 409, 503),
    )
    async def cancel_task(
        self, gateway: NamedDependency[GatewayState], principal: NamedDependency[Principal], task_id: FromPath[str]
    ) -> Response[TaskStatusResponse]:
        """Ask workers to cancel the task: a queued job is skipped, a running one stops at its next step.

        202 with the status as it is now (the final `cancelled` follows over SSE); 409 if already final.
        Only its owner or an admin may cancel it; anyone else gets the unknown task's 404.
        """
        status = visible_status(gateway, principal, task_id)
        if status.status.is_final:
            raise HTTPException(
                status_code=HTTP_409_CONFLICT,
                detail=f"task {task_id!r} is already {status.status.value}; "
                "only pending or running tasks can be cancelled",
            )
        await publish(gateway.producer, topics.TASK_CONTROL, CancelRequested(task_id=task_id))
        log.info("gateway.cancel_requested", task_id=task_id, by=principal.owner)
        return Response(
            to_response(status, gateway.signer, principal.owner, gateway.public_base_url),
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
    ) -> Stream:
        """`text/event-stream` of the task's status: the current state at once, then every change.

        Each event has `id` = version, `event` = status and `data` = the `GET /status` JSON. The stream
        closes after the final state (success, failed, cancelled). With `Last-Event-ID` only newer
        states are sent (none if the client already has the final one). A `: keep-alive` comment
        is sent every SSE_KEEPALIVE_S seconds while nothing changes. Authenticate with a key, or open
        the status's signed `events_url` (for `EventSource`, which cannot send headers).
        """
        owner = link_owner(gateway, request, events_path(task_id))
        if owner is None:
            principal = caller(gateway, request)
            visible_status(gateway, principal, task_id)
            owner = principal.owner
        else:
            known_status(gateway, task_id)
        stream = status_events(
            gateway.view.store,
            task_id,
            _parse_event_id(last_event_id),
            gateway.settings.sse_keepalive_s,
            _renderer(gateway, owner),
        )
        return Stream(stream, media_type=MEDIA_TYPE, headers=SSE_HEADERS)
