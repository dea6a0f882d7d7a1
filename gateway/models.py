"""`GET /models`: the model pools the farm serves and what each can do (from `DEFAULT_MODEL`, `MODEL_POOLS`)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from acefarm.infra.pools import ModelPool, configured_pools
from gateway.state import GatewayState
from schemas.pools import ModelInfo, ModelList


def model_list(pools: list[ModelPool]) -> ModelList:
    """The `GET /models` body for these pools (the first is the default)."""
    return ModelList(
        default=pools[0].name,
        models=[ModelInfo(name=pool.name, default=pool.default, task_types=sorted(pool.task_types)) for pool in pools],
    )


class ModelsController(Controller):
    """`GET /models`."""

    tags = ("generation",)

    @get("/models", summary="The models this farm serves")
    async def list_models(self, gateway: NamedDependency[GatewayState]) -> ModelList:
        """Each model pool with its task types, the default first; pass a name as `model` in `POST /generate`.

        The pools come from the gateway's configuration (`DEFAULT_MODEL`, `TASK_TYPES`, `MODEL_POOLS`).
        """
        return model_list(configured_pools(gateway.settings))
