"""`OPTIONS` for a path served by several handlers: its `Allow` lists every method of the path.

Litestar 2 binds the automatic `OPTIONS` handler to the route it builds for a path's first handler and keeps
that handler when later handlers join the path, so `OPTIONS /loras/{lora_id}` answered `Allow: DELETE, OPTIONS`
although GET and PATCH are served there too (litestar-org/litestar#4169, fixed in Litestar 3). A path with
more than one handler registers `allow_route(path)` in the same router, before them: Litestar then creates no
automatic handler for the path, and this one reads the methods from the route it ends up on.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT


def allow_route(path: str) -> HTTPRouteHandler:
    """An `OPTIONS` handler for `path` answering 204 with `Allow` = every method of the route it joins."""

    @route(path, http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)
    def options(request: Request[Any, Any, Any]) -> Response[None]:
        handler = request.route_handler
        methods = next(
            r.methods for r in request.app.routes if isinstance(r, HTTPRoute) and handler in r.route_handlers
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(methods))})

    return options
