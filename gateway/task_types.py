"""Which model pool runs a request: refusing up front a model nobody serves or a task type its model cannot do."""

from __future__ import annotations

from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY

from acefarm.infra.pools import ModelPool
from gateway.errors import FieldError
from schemas.generation import TaskType

UNUSABLE = HTTP_422_UNPROCESSABLE_ENTITY
"""A well-formed `model`/`task_type` this farm cannot run."""


def describe_pools(pools: list[ModelPool]) -> str:
    """`name (task, task, ...)` for each pool, the default first: what an error offers instead."""
    return "; ".join(f"'{pool.name}' ({', '.join(sorted(t.value for t in pool.task_types))})" for pool in pools)


def choose_pool(pools: list[ModelPool], model: str | None, task_type: TaskType) -> ModelPool:
    """The pool that runs a request: the named one; without a name the default pool, or the first pool that
    can do a task the default cannot (stem tasks reach a base-model pool). `pools`: the default (if any) first.

    Raises `FieldError` (422) on `model` for a model nobody serves, on `task_type` for a task its model
    (or, unnamed, every model) cannot do; the message lists the models and their task types.
    """
    if model is not None:
        pool = next((p for p in pools if p.name == model), None)
        if pool is None:
            raise FieldError(
                "model", f"no pool serves the model {model!r}; available: {describe_pools(pools)}", UNUSABLE
            )
        if task_type not in pool.task_types:
            raise FieldError("task_type", _unavailable(task_type, pools, f"with the model {model!r}"), UNUSABLE)
        return pool
    capable = sorted((pool for pool in pools if task_type in pool.task_types), key=lambda pool: not pool.default)
    if not capable:
        raise FieldError("task_type", _unavailable(task_type, pools, "on this farm"), UNUSABLE)
    return capable[0]


def _unavailable(task_type: TaskType, pools: list[ModelPool], where: str) -> str:
    capable = [pool.name for pool in pools if task_type in pool.task_types]
    hint = f"use model {' or '.join(repr(name) for name in capable)}" if capable else "no model here does it"
    return f"'{task_type.value}' is not available {where} ({hint}); models: {describe_pools(pools)}"
