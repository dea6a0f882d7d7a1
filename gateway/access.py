"""Who may see what: a task, its files and its event stream answer to its owner, an admin, or a signed link.

Someone else's task answers exactly like an unknown one (same 404 body), so ids reveal nothing.
Links that must work without headers (`<audio src>`, downloads, `EventSource`) carry a signature
(`gateway.signed_links`) for one path, one owner and a bounded lifetime instead of a key.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException, NotFoundException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from gateway.auth import AuthError, Principal, resolve_principal, unauthorized
from gateway.state import GatewayState
from schemas.status import TaskStatus


def unknown_task(task_id: str) -> NotFoundException:
    """The 404 for a task id that is unknown or someone else's (the same answer for both)."""
    return NotFoundException(detail=f"no task has the id {task_id!r}; use the task_id returned by POST /generate")


def tasks_not_current() -> HTTPException:
    """The 503 for a task id asked about before the gateway has read the status and request topics."""
    return HTTPException(
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        detail="the gateway is still reading task statuses and accepted requests after a restart; retry in a moment",
        headers={"Retry-After": "1"},
    )


def known_status(gateway: GatewayState, task_id: str) -> TaskStatus:
    """The task's latest status, whoever owns it; 404 when unknown, 503 while the gateway is still reading
    the status and request topics after a start (`tasks_not_current`)."""
    status = gateway.view.store.get(task_id)
    if status is None and not gateway.tasks_current():
        raise tasks_not_current()
    if status is None:
        raise unknown_task(task_id)
    return status


def visible_status(gateway: GatewayState, principal: Principal, task_id: str) -> TaskStatus:
    """`known_status` if `principal` owns the task or is an admin; otherwise the unknown task's 404."""
    status = known_status(gateway, task_id)
    if not principal.may_access(status.owner):
        raise unknown_task(task_id)
    return status


def caller(gateway: GatewayState, request: Request[Any, Any, Any]) -> Principal:
    """The request's principal from its headers (for routes that also accept signed links); 401 without one."""
    try:
        return resolve_principal(request.headers, gateway.settings.auth_mode, gateway.keyring)
    except AuthError as error:
        raise unauthorized(error) from None


def link_owner(gateway: GatewayState, request: Request[Any, Any, Any], path: str) -> str | None:
    """The owner a valid signed link for `path` grants access as; None when unsigned, tampered or expired."""
    return gateway.signer.verify(path, request.query_params)


def events_path(task_id: str) -> str:
    """The path of a task's event stream, as signed in `events_url`."""
    return f"/tasks/{task_id}/events"


def file_path(key: str) -> str:
    """The path of a stored file, as signed in `file_url(s)` (the key unquoted)."""
    return f"/files/{key}"


def task_of_output(key: str) -> str | None:
    """The task id an `outputs/{task_id}/...` key belongs to."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "outputs" and parts[1] else None
