"""Task status, cancellation and the live status stream (server-sent events), each for its owner only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.retention import delete_task_files
from gateway.access import caller, events_path, known_status, link_owner, visible_status
from gateway.auth import SIGNED_LINKS, Principal
from gateway.errors import error_responses
from gateway.responses import to_response
from gateway.state import GatewayState
from gateway.status_view import StatusStore
from schemas import topics
from schemas.events import CancelRequested
from schemas.status import TaskStatus, TaskStatusResponse

log = get_logger(__name__)

Render = Callable[[TaskStatus], TaskStatusResponse]


def _renderer(gateway: GatewayState, viewer: str) -> Render:
    signer, base_url = gateway.signer, gateway.public_base_url
    return lambda status: to_response(status, signer, viewer, base_url)


def _message(status: TaskStatus, render: Render) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=render(status).model_dump_json(), event=status.status.value, id=status.version)


async def status_events(
    store: StatusStore, task_id: str, last_event_id: int | None, keepalive_s: float, render: Render
) -> AsyncIterator[ServerSentEventMessage]:
    """The task's snapshots newer than `last_event_id` (the current one when None), then each change,
    each as `render` shows it; a keep-alive comment after `keepalive_s` idle; ends once the final state
    has been sent."""
    last = last_event_id
    shown: dict[str, object] | None = None
    while True:
        for status in store.since(task_id, last):
            visible = status.model_dump(exclude={"version", "updated_at"})
            if visible != shown:  # e.g. streams' first "pending" after the gateway's own: nothing new to show
                yield _message(status, render)
                shown = visible
            last = status.version
        current = store.get(task_id)
        if current is None or (current.status.is_final and last is not None and last >= current.version):
            return
        if not await store.wait_newer(task_id, last if last is not None else -1, keepalive_s):
            yield ServerSentEventMessage(comment="keep-alive", data=None)


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
    ) -> ServerSentEvent:
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
        return ServerSentEvent(stream)
