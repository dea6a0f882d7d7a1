"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from gateway.state import GatewayState
from gateway.workers import READINESS_NOTE, WorkerTable


class HealthController(Controller):
    """`GET /healthz` and `GET /readyz`."""

    tags = ("health",)

    @get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> dict[str, str]:
        """Always 200 while the process serves requests."""
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: Kafka answers and the status view is current")
    async def readyz(
        self, gateway: NamedDependency[GatewayState], workers: NamedDependency[WorkerTable]
    ) -> Response[dict[str, object]]:
        """200 only while Kafka answers and the status view has read the status topic; 503 otherwise.

        The body also says how many workers of each kind are alive; none are needed to be ready.
        """
        kafka = await gateway.kafka_answers()
        view = gateway.ready()
        ready = kafka and view
        body: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "kafka": kafka,
            "status_view_caught_up": view,
            "tasks_known": len(gateway.view.store),
            "workers_alive": workers.alive_by_kind(),
            "workers_note": READINESS_NOTE,
        }
        return Response(body, status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE)
