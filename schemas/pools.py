"""The models a farm serves, as `GET /models` lists them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.generation import TaskType


class ModelInfo(BaseModel):
    """One model pool: pass `name` as a request's `model`."""

    name: str
    default: bool = Field(description="Requests without `model` go here (unless it cannot do their task type).")
    task_types: list[TaskType] = Field(description="The task types its consumers run.")


class ModelList(BaseModel):
    """Body of `GET /models`."""

    default: str | None = Field(
        description="The default model's name; null when no worker of the default pool is alive (requests without "
        "`model` then go to the first model that can do their task type)."
    )
    models: list[ModelInfo]
