"""Who a running worker is and what it serves: its topic, group and model pool, and what its model can do.

`identify` is what `serve_jobs` subscribes with, logs with `{name}.ready` and announces on the heartbeat
(`acefarm.workers`), from which the gateway learns the live model pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acefarm.infra.pools import worker_pool, worker_pool_key
from acefarm.infra.settings import Settings

PoolTopics = Callable[[str | None], tuple[str, str]]
"""(topic, consumer group) of a pooled kind's workers in a pool (None: the default pool)."""


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do and where it runs (reported by `WorkerKind.capabilities`)."""

    task_types: tuple[str, ...] = ()
    device: str | None = None


def no_capabilities(model: Any) -> Capabilities:
    """The capabilities of a kind that reports none."""
    return Capabilities()


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a running worker is and what it serves."""

    worker: str
    service: str
    topic: str
    group_id: str
    checkpoint: str
    """The checkpoint it loaded (path or Hugging Face id)."""
    device: str
    pool: str | None = None
    """The model pool it serves (`MODEL_NAME`, else `DEFAULT_MODEL`); None for kinds without pools."""
    default_pool: bool = False
    """Whether that pool is the farm's default (the plain topics)."""
    task_types: tuple[str, ...] = ()


def describe_model(model: Any, settings: Settings) -> tuple[str, str]:
    """(checkpoint, device) of a loaded model: its `info()` when it has one, else the settings."""
    info_fn = getattr(model, "info", None)
    info: dict[str, Any] = info_fn() if callable(info_fn) else {}
    checkpoint = info.get("source") or getattr(model, "model_id", None) or settings.model_path or settings.model_id
    device = info.get("device") or getattr(model, "device", None) or settings.device
    return str(checkpoint), str(device)


def identify(
    settings: Settings,
    worker: str,
    *,
    service: str,
    topic: str,
    group_id: str,
    model: Any,
    pool_topics: PoolTopics | None,
    capabilities: Capabilities,
) -> WorkerIdentity:
    """The identity of a worker with `model` loaded: a pooled kind (`pool_topics`) reads its pool's topic in
    its pool's group (`MODEL_NAME`); any other reads `topic` in `group_id`."""
    checkpoint, device = describe_model(model, settings)
    pool, key = None, None
    if pool_topics is not None:
        pool, key = worker_pool(settings), worker_pool_key(settings)
        topic, group_id = pool_topics(key)
    return WorkerIdentity(
        worker=worker,
        service=service,
        topic=topic,
        group_id=group_id,
        checkpoint=checkpoint,
        device=capabilities.device or device,
        pool=pool,
        default_pool=pool is not None and key is None,
        task_types=capabilities.task_types,
    )
