"""Batch status: many tasks in one call, by id or by state, each answering only to its owner or an admin."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

from gateway.access import tasks_not_current
from gateway.auth import Principal
from gateway.errors import error_responses
from gateway.responses import renderer
from gateway.state import GatewayState
from gateway.task_index import EVERYONE, decode_cursor, encode_cursor, key_of, scope_of
from schemas.status import TaskList, TaskState

MAX_IDS = 100
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
_STATE = "(?:" + "|".join(state.value for state in TaskState) + ")"
STATES_PATTERN = f"^ *{_STATE} *(?:, *{_STATE} *)*$"
"""What `status` may be: state names separated by commas (the document's `pattern`)."""


def parse_states(value: str | None) -> list[TaskState]:
    """The states named in a comma-separated `status` (every state when None); 400 for an unknown one."""
    if value is None:
        return list(TaskState)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in {state.value for state in TaskState}]
    if unknown or re.fullmatch(STATES_PATTERN, value) is None:
        allowed = ", ".join(state.value for state in TaskState)
        named = ", ".join(unknown) or repr(value)
        raise ValidationException(detail=f"status: {named} is not a state; use {allowed}, comma-separated")
    return [TaskState(name) for name in names]


def parse_ids(value: str) -> list[str]:
    """The distinct task ids of a comma-separated `ids`, in order; 400 beyond `MAX_IDS`."""
    ids = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if len(ids) > MAX_IDS:
        raise ValidationException(detail=f"ids: at most {MAX_IDS} task ids per request, got {len(ids)}")
    return ids


class TaskListController(Controller):
    """`GET /tasks`: the statuses of many tasks at once."""

    tags = ("tasks",)

    @get("/tasks", summary="Many tasks' status at once", responses=error_responses(400, 401, 503))
    async def list_tasks(
        self,
        gateway: NamedDependency[GatewayState],
        principal: NamedDependency[Principal],
        ids: Annotated[
            str | None,
            QueryParameter(description=f"Comma-separated task ids (at most {MAX_IDS}); answers those, in this order."),
        ] = None,
        status: Annotated[
            str | None,
            QueryParameter(
                description="Comma-separated states to keep, e.g. `pending,running` (default: all).",
                schema_extra={"pattern": STATES_PATTERN},
            ),
        ] = None,
        mine: Annotated[
            bool, QueryParameter(description="Only the caller's own tasks, for an admin too (users see only theirs).")
        ] = False,
        cursor: Annotated[str | None, QueryParameter(description="The `next_cursor` of the previous page.")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Tasks per page.")] = DEFAULT_LIMIT,
    ) -> TaskList:
        """With `ids`: the status of each listed task the caller may see, in the order given (unknown ids and
        someone else's are simply absent, as their 404 would say), filtered by `status` when given.

        Without `ids`: the caller's tasks (an admin's: everyone's, unless `mine=true`) in the `status` states,
        newest first, `limit` per page; `next_cursor` continues the listing. Each item is the
        `GET /status/{task_id}` body, with `queue_position` and `eta_s` for pending jobs.
        """
        if not gateway.view.caught_up.is_set():
            raise tasks_not_current()
        states = parse_states(status)
        store, render = gateway.view.store, renderer(gateway, principal.owner)
        if ids is not None:
            found = (store.get(task_id) for task_id in parse_ids(ids))
            visible = [s for s in found if s is not None and principal.may_access(s.owner) and s.status in states]
            return TaskList(tasks=[render(s) for s in visible])
        try:
            before = decode_cursor(cursor) if cursor else None
        except ValueError as error:
            raise ValidationException(detail=f"cursor: {error}") from None
        scope = EVERYONE if principal.is_admin and not mine else scope_of(principal.owner)
        page = store.newest(scope, states, before, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return TaskList(tasks=[render(s) for s in page], next_cursor=encode_cursor(key_of(page[-1])) if more else None)
