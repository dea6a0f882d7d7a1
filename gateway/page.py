"""The web page (`gateway/static/`) and the Swagger UI at `/docs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Controller, MediaType, Request, get
from litestar.di import NamedDependency
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from gateway.state import GatewayState

STATIC_DIR = Path(__file__).parent / "static"

SWAGGER = SwaggerRenderPlugin(path="/swagger")
"""The Swagger UI renderer, served at /schema/swagger and at /docs."""


class PageController(Controller):
    """`GET /` (the web page), `GET /page-config` (its settings) and `GET /docs` (Swagger UI); none is part
    of the API schema."""

    include_in_schema = False

    @get("/")
    async def index(self) -> File:
        """The web page (`gateway/static/index.html`)."""
        return File(
            STATIC_DIR / "index.html", filename="index.html", media_type="text/html", content_disposition_type="inline"
        )

    @get("/page-config")
    async def page_config(self, gateway: NamedDependency[GatewayState]) -> dict[str, str | None]:
        """What the page shows beyond the API, public-safe: the dashboard link (`DASHBOARD_URL`; null when unset)."""
        return {"dashboard_url": gateway.settings.dashboard_url or None}

    @get("/docs", media_type=MediaType.HTML)
    async def docs(self, request: Request[Any, Any, Any]) -> bytes:
        """Swagger UI for the API (also at /schema/swagger); the spec is /schema/openapi.json."""
        return SWAGGER.render(request, request.app.openapi_schema.to_schema())


def page_routes() -> list[ControllerRouterHandler]:
    """`PageController` and the page's assets under `/static`."""
    assets = create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False)
    return [PageController, assets]
