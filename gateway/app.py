"""The gateway's Litestar app: routes, lifespan, error handling, OpenAPI and the web page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, get
from litestar.di import Provide
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from acefarm.infra.settings import Settings
from gateway import files, health, loras, submit, tasks
from gateway.errors import client_error_handler
from gateway.state import Gateway

STATIC_DIR = Path(__file__).parent / "static"

ROUTES: list[ControllerRouterHandler] = [
    submit.generate,
    submit.upload,
    tasks.get_status,
    tasks.cancel_task,
    tasks.task_events,
    files.get_file,
    health.healthz,
    health.readyz,
    *loras.ROUTES,
]
"""Every API route. Other modules add theirs here (e.g. the LoRA endpoints)."""


@get("/", include_in_schema=False)
async def index() -> File:
    """The web page (`gateway/static/index.html`)."""
    return File(
        STATIC_DIR / "index.html", filename="index.html", media_type="text/html", content_disposition_type="inline"
    )


_SWAGGER = SwaggerRenderPlugin(path="/swagger")


@get("/docs", include_in_schema=False, media_type=MediaType.HTML)
async def docs(request: Request[Any, Any, Any]) -> bytes:
    """Swagger UI for the API (also at /schema/swagger); the spec is /schema/openapi.json."""
    return _SWAGGER.render(request, request.app.openapi_schema.to_schema())


def _web_routes() -> list[ControllerRouterHandler]:
    if not (STATIC_DIR / "index.html").is_file():
        return []
    return [index, create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False)]


def max_body_bytes(settings: Settings) -> int:
    """Largest accepted request: two base64 audio inputs at the size limit, plus the other fields."""
    return 2 * (settings.max_input_audio_bytes * 4 // 3 + 4) + 1024 * 1024


def create_app(settings: Settings, extra_routes: list[ControllerRouterHandler] | None = None) -> Litestar:
    """The gateway app for `settings`; Kafka, storage and the status view start with its lifespan."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    def provide_gateway() -> Gateway:
        return gateway

    exception_handlers: Any = {ClientException: client_error_handler}
    return Litestar(
        route_handlers=[*ROUTES, *(extra_routes or []), docs, *_web_routes()],
        dependencies={"gateway": Provide(provide_gateway, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        request_max_body_size=max_body_bytes(settings),
        logging_config=None,  # structlog is configured by acefarm.infra.logging
        openapi_config=OpenAPIConfig(
            title="acefarm",
            version="1.0.0",
            description="ACE-Step 1.5 text-to-music as a service: submit jobs, follow them live, download audio.",
            path="/schema",
            render_plugins=[_SWAGGER],
        ),
    )
