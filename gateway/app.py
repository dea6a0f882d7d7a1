"""The gateway's Litestar app: one controller per feature, the lifespan, error handling, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Router
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig

from acefarm.infra.settings import Settings
from gateway.admission import BacklogProbe
from gateway.auth import Principal, principal_dependency, principal_guard
from gateway.backlog import BACKLOG_KEY, Backlog, provide_backlog
from gateway.errors import client_error_handler
from gateway.files import FilesController
from gateway.hardening import hardening_middleware
from gateway.health import HealthController
from gateway.keyring import KeyRing
from gateway.loras import lora_routes
from gateway.metrics import MetricsController, metrics_middleware
from gateway.models import ModelsController
from gateway.openapi import strict_openapi
from gateway.page import SWAGGER, page_routes
from gateway.planning import PlanningController
from gateway.state import STATE_KEY, GatewayState, provide_gateway, running_gateway
from gateway.submit import GenerationController
from gateway.task_list import TaskListController
from gateway.tasks import TasksController
from gateway.uploads import upload_routes
from gateway.workers import WORKERS_KEY, WorkersController, WorkerTable, provide_workers


def max_body_bytes(settings: Settings) -> int:
    """Largest accepted request: two base64 audio inputs at the size limit, plus the other fields."""
    return 2 * (settings.max_input_audio_bytes * 4 // 3 + 4) + 1024 * 1024


def after_gateway(principal: Provide) -> Provide:
    """`principal` resolved after the `gateway` dependency instead of beside it.

    Litestar resolves independent dependencies of one handler concurrently in an anyio task group; for
    two trivial lookups that costs about a sixth of a submit's CPU (bench/README.md, "Submit against its
    floor"). A dependency chain is resolved inline, one after the other.
    """
    provide = principal.dependency

    def provide_principal(request: Request[Any, Any, Any], gateway: NamedDependency[GatewayState]) -> Principal:
        result: Principal = provide(request)
        return result

    return Provide(provide_principal, sync_to_thread=False)


def create_app(settings: Settings, backlog: BacklogProbe | None = None) -> Litestar:
    """The gateway app for `settings`; Kafka, storage, the status view, the key ring, the worker table and
    the backlog reader start with its lifespan. Admission control learns the farm's queue from the backlog
    reader, or from `backlog` when given (tests).

    Every API route sits behind `principal_guard` (401 without a valid key when `AUTH_MODE=keys`, before
    the body is read) and may take the `principal` dependency; /healthz, /readyz, the page and the API
    docs are public.
    """
    keyring = KeyRing(settings) if settings.auth_mode == "keys" else None
    api = Router(
        path="/",
        route_handlers=[
            GenerationController,
            ModelsController,
            PlanningController,
            upload_routes(settings),
            TasksController,
            TaskListController,
            FilesController,
            lora_routes(settings),
        ],
        guards=[principal_guard(settings.auth_mode, keyring)],
        dependencies={"principal": after_gateway(principal_dependency(settings.auth_mode, keyring))},
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        reader = Backlog(settings)
        async with running_gateway(settings, keyring, backlog or reader) as gateway, AsyncExitStack() as observers:
            workers = WorkerTable(settings)
            for key, part in ((WORKERS_KEY, workers), (BACKLOG_KEY, reader)):
                observers.push_async_callback(part.stop)
                await part.start()
                app.state[key] = part
            app.state[STATE_KEY] = gateway
            try:
                yield
            finally:
                for key in (STATE_KEY, WORKERS_KEY, BACKLOG_KEY):
                    del app.state[key]

    exception_handlers: Any = {ClientException: client_error_handler}
    app = Litestar(
        route_handlers=[api, HealthController, WorkersController, MetricsController, *page_routes()],
        dependencies={
            "gateway": Provide(provide_gateway, sync_to_thread=False),
            "workers": Provide(provide_workers, sync_to_thread=False),
            "backlog": Provide(provide_backlog, sync_to_thread=False),
        },
        middleware=[metrics_middleware, hardening_middleware(settings.allowed_hosts)],
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
    strict_openapi(app)
    return app
