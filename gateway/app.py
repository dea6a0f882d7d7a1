"""The gateway's Litestar app: one controller per feature, the lifespan, error handling, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig

from acefarm.infra.settings import Settings
from gateway.errors import client_error_handler
from gateway.files import FilesController
from gateway.health import HealthController
from gateway.loras import lora_routes
from gateway.models import ModelsController
from gateway.page import SWAGGER, page_routes
from gateway.state import STATE_KEY, provide_gateway, running_gateway
from gateway.submit import GenerationController
from gateway.tasks import TasksController


def max_body_bytes(settings: Settings) -> int:
    """Largest accepted request: two base64 audio inputs at the size limit, plus the other fields."""
    return 2 * (settings.max_input_audio_bytes * 4 // 3 + 4) + 1024 * 1024


def create_app(settings: Settings) -> Litestar:
    """The gateway app for `settings`; Kafka, storage and the status view start with its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with running_gateway(settings) as gateway:
            app.state[STATE_KEY] = gateway
            try:
                yield
            finally:
                del app.state[STATE_KEY]

    exception_handlers: Any = {ClientException: client_error_handler}
    return Litestar(
        route_handlers=[
            GenerationController,
            ModelsController,
            TasksController,
            FilesController,
            lora_routes(settings),
            HealthController,
            *page_routes(),
        ],
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
            render_plugins=[SWAGGER],
        ),
    )
