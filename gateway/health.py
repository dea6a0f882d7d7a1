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

    @get(
        "/readyz",
        summary="Readiness: Kafka answers, the status view, the accepted requests and the key ring are current",
    )
    async def readyz(
        self, gateway: NamedDependency[GatewayState], workers: NamedDependency[WorkerTable]
    ) -> Response[dict[str, object]]:
        """200 only while Kafka answers, the status view has read the status topic, the gateway has read
        the request topics' lookback (`intake_caught_up`: until then an unknown task id answers 503, not
        404) and the key ring (AUTH_MODE=keys) has read the key topic; 503 otherwise.

        The body also says how many workers of each kind are alive; none are needed to be ready.
        """
        kafka = await gateway.kafka_answers()
        view = gateway.ready()
        intake = gateway.intake_ready()
        keys = gateway.keys_ready()
        ready = kafka and view and intake and keys
        body: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "kafka": kafka,
            "status_view_caught_up": view,
            "intake_caught_up": intake,
            "keys_caught_up": keys,
            "auth_mode": gateway.settings.auth_mode,
            "tasks_known": len(gateway.view.store),
            "workers_alive": workers.alive_by_kind(),
            "workers_note": READINESS_NOTE,
        }
        return Response(body, status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE)
