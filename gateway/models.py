"""`GET /models`: the model pools the farm serves and what each can do, and where the gateway learns them.

The live pools come from the GPU consumers' heartbeats (`WorkerTable.pools`) while any is alive; with none
alive, from the configuration (`DEFAULT_MODEL`, `TASK_TYPES`, `MODEL_POOLS`), so jobs can queue for pools
that are starting.
"""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from acefarm.infra.pools import ModelPool, configured_pools
from acefarm.infra.settings import Settings
from gateway.state import GatewayState
from gateway.workers import WorkerTable
from schemas.pools import ModelInfo, ModelList


def farm_pools(workers: WorkerTable, settings: Settings) -> list[ModelPool]:
    """The pools requests are routed to: the alive workers' (default first), else the configured ones."""
    return workers.pools() or configured_pools(settings)


def model_list(pools: list[ModelPool]) -> ModelList:
    """The `GET /models` body for these pools (the default, if any, first)."""
    default = next((pool.name for pool in pools if pool.default), None)
    return ModelList(
        default=default,
        models=[ModelInfo(name=pool.name, default=pool.default, task_types=sorted(pool.task_types)) for pool in pools],
    )


class ModelsController(Controller):
    """`GET /models`."""

    tags = ("generation",)

    @get("/models", summary="The models this farm serves")
    async def list_models(
        self, gateway: NamedDependency[GatewayState], workers: NamedDependency[WorkerTable]
    ) -> ModelList:
        """Each model pool with its task types, the default first; pass a name as `model` in `POST /generate`.

        The pools the alive GPU consumers announce on their heartbeats; while none is alive, the gateway's
        configuration (`DEFAULT_MODEL`, `TASK_TYPES`, `MODEL_POOLS`).
        """
        return model_list(farm_pools(workers, gateway.settings))
