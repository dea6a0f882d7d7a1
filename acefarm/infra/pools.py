"""Model pools: the models a farm serves, each pool of GPU consumers on its own topics.

The default pool (`DEFAULT_MODEL`) keeps the plain topics (intake `acefarm.generation.requests`, ready
`acefarm.generation.ready`) and the `gpu-workers` group, so a single-model farm needs no pool settings. A
worker serves the pool named by `MODEL_NAME` (empty: the default pool); a named pool `x` has the intake
`acefarm.generation.requests.x`, which the scheduler admits into `acefarm.generation.ready.x`, read by the
group `gpu-workers.x` (`schemas.topics`). `MODEL_POOLS` tells the services which named pools exist and what
each can do: `name[=task,task,...]` entries separated by `;`, e.g. `base; sft=text2music,cover`. The
gateway routes by the pools its workers announce on their heartbeats while any is alive, and by this
configuration otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from acefarm.infra.settings import Settings
from schemas import topics
from schemas.generation import STEM_TASKS, TaskType
from schemas.ids import MODEL_NAME_PATTERN

_NAME = re.compile(MODEL_NAME_PATTERN)


@dataclass(frozen=True)
class ModelPool:
    """One model the farm serves: its name, the task types it runs, and whether it is the default."""

    name: str
    task_types: frozenset[TaskType]
    default: bool = False

    @property
    def key(self) -> str | None:
        """The pool as topic names take it: None for the default pool, else its name."""
        return None if self.default else self.name

    @property
    def intake(self) -> str:
        """Its intake topic (the scheduler admits from it into the pool's ready topic)."""
        return topics.generation_requests(self.key)


def parse_model_pools(value: str) -> dict[str, frozenset[TaskType] | None]:
    """`MODEL_POOLS` as name → task types (None: derived from the name, see `task_types_for_name`).

    Raises `ValueError` naming a bad entry, name or task type.
    """
    pools: dict[str, frozenset[TaskType] | None] = {}
    for entry in (part.strip() for part in value.split(";")):
        if not entry:
            continue
        name, sep, tasks = (part.strip() for part in entry.partition("="))
        if not _NAME.match(name):
            raise ValueError(f"MODEL_POOLS: {name!r} is not a model name (lower-case letters, digits, '-', '_')")
        if name in pools:
            raise ValueError(f"MODEL_POOLS names {name!r} twice")
        pools[name] = _task_list(name, tasks) if sep else None
    return pools


def _task_list(name: str, tasks: str) -> frozenset[TaskType]:
    known = {t.value for t in TaskType}
    names = [task.strip() for task in tasks.split(",") if task.strip()]
    unknown = [task for task in names if task not in known]
    if unknown or not names:
        raise ValueError(f"MODEL_POOLS: {name}={tasks!r} names unknown task types {unknown}; known: {sorted(known)}")
    return frozenset(TaskType(task) for task in names)


def task_types_for_name(name: str) -> frozenset[TaskType]:
    """A pool whose name says `turbo` runs no stem tasks; any other (base, sft) runs all task types."""
    return frozenset(TaskType) - STEM_TASKS if "turbo" in name else frozenset(TaskType)


def default_task_types(settings: Settings) -> frozenset[TaskType]:
    """The default pool's task types from `TASK_TYPES`; `auto` drops the stem tasks for a turbo `MODEL_ID`."""
    if settings.task_types.strip().lower() != "auto":
        names = [name.strip() for name in settings.task_types.split(",") if name.strip()]
        return frozenset(TaskType(name) for name in names)
    if settings.model_path is None and "turbo" in settings.model_id.lower():
        return frozenset(TaskType) - STEM_TASKS
    return frozenset(TaskType)


def configured_pools(settings: Settings) -> list[ModelPool]:
    """The default pool first (its `MODEL_POOLS` entry, when it has one, overrides `TASK_TYPES`), then the
    named pools of `MODEL_POOLS` in order."""
    named = parse_model_pools(settings.model_pools)
    default_tasks = named.pop(settings.default_model, None) or default_task_types(settings)
    pools = [ModelPool(settings.default_model, default_tasks, default=True)]
    pools += [ModelPool(name, tasks or task_types_for_name(name)) for name, tasks in named.items()]
    return pools


def worker_pool(settings: Settings) -> str:
    """The pool a GPU consumer serves: `MODEL_NAME`, or the default pool when it is empty."""
    return settings.model_name or settings.default_model


def pool_key(name: str | None, settings: Settings) -> str | None:
    """A pool name as topic names take it: None for no name or the default pool (`DEFAULT_MODEL`)."""
    return None if name is None or name == settings.default_model else name


def worker_pool_key(settings: Settings) -> str | None:
    """The worker's pool as topic names take it: None for the default pool."""
    return pool_key(worker_pool(settings), settings)


def pool_keys(settings: Settings) -> list[str | None]:
    """Every pool these settings know, as topic names take them: the default pool (None), each `MODEL_POOLS`
    pool and the worker's own (`MODEL_NAME`), without repeats."""
    keys = [pool.key for pool in configured_pools(settings)]
    keys.append(worker_pool_key(settings))
    return list(dict.fromkeys(keys))


def request_topics(settings: Settings) -> list[str]:
    """The intake topic of every pool these settings know (`pool_keys`)."""
    return [topics.generation_requests(key) for key in pool_keys(settings)]
