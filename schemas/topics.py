"""Kafka topic names: the one place they are spelled."""

from typing import Final

GENERATION_REQUESTS: Final = "acefarm.generation.requests"
"""Generation jobs as submitted (`GenerationRequested`), keyed by task id: the default model pool's intake (a
named pool's: `generation_requests(pool)`). Read by the scheduler (`generation-schedulers` group) and the
streams fold."""

GENERATION_READY: Final = "acefarm.generation.ready"
"""Generation jobs the scheduler admitted, in fair order (the intake records' bytes unchanged), keyed by task id;
consumed by the `gpu-workers` group (the default pool's; a named pool's: `generation_ready(pool)`)."""

PLANNING_REQUESTS: Final = "acefarm.planning.requests"
"""5 Hz LM jobs (`PlanningRequested`), keyed by task id; consumed by the `lm-planners` group, which
forwards planned generations to their model pool's intake (`generation_requests(pool)`)."""

TRAINING_REQUESTS: Final = "acefarm.training.requests"
"""LoRA training jobs (`TrainingRequested`), keyed by task id; consumed by the `lora-trainers` group."""

TASK_EVENTS: Final = "acefarm.task.events"
"""Lifecycle events (started, progress, succeeded, failed, cancelled), keyed by task id."""

TASK_CONTROL: Final = "acefarm.task.control"
"""Control commands (`CancelRequested`), read by every worker (no consumer group)."""

TASK_STATUS: Final = "acefarm.task.status"
"""Folded status snapshots (`TaskStatusRecord`), keyed by task id; compacted in production."""

SCHEDULER_QUEUES: Final = "acefarm.scheduler.queues"
"""Queue snapshots of each scheduler instance (`QueueSnapshot`), keyed by instance id; compacted."""

DEAD_LETTER: Final = "acefarm.deadletter"
"""Records that failed validation (`DeadLetter`), with the reason and the raw bytes."""

WEBHOOK_RETRIES: Final = "acefarm.webhooks.retries"
"""Webhook deliveries waiting for their next attempt (`WebhookRetry`), keyed by task id; read by the webhook service."""

API_KEYS: Final = "acefarm.api.keys"
"""API key records (`ApiKeyRecord`, hashes only), keyed by key id; compacted, read whole by every gateway."""

WORKERS: Final = "acefarm.workers"
"""Worker heartbeats (`WorkerHeartbeat`), keyed by worker name; compacted, a tombstone when a worker stops cleanly."""

ALL: Final = (
    GENERATION_REQUESTS,
    GENERATION_READY,
    PLANNING_REQUESTS,
    TRAINING_REQUESTS,
    TASK_EVENTS,
    TASK_CONTROL,
    TASK_STATUS,
    SCHEDULER_QUEUES,
    DEAD_LETTER,
    WEBHOOK_RETRIES,
    API_KEYS,
    WORKERS,
)

GPU_WORKERS_GROUP: Final = "gpu-workers"
TRAINERS_GROUP: Final = "lora-trainers"
SCHEDULERS_GROUP: Final = "generation-schedulers"
WEBHOOKS_GROUP: Final = "webhooks"
"""Follows `TASK_STATUS` and makes each delivery's first attempt."""
WEBHOOK_RETRIES_GROUP: Final = "webhooks-retries"
"""Reads `WEBHOOK_RETRIES` and makes the later attempts when they are due."""
PLANNERS_GROUP: Final = "lm-planners"


def _pooled(name: str, pool: str | None) -> str:
    return name if pool is None else f"{name}.{pool}"


def generation_requests(pool: str | None) -> str:
    """The generation intake of a model pool, `acefarm.generation.requests.<pool>`; None (the default pool):
    `GENERATION_REQUESTS`. Written by the gateway and the planner, read by the scheduler."""
    return _pooled(GENERATION_REQUESTS, pool)


def generation_ready(pool: str | None) -> str:
    """The ready topic of a model pool, `acefarm.generation.ready.<pool>`; None: `GENERATION_READY`. Written by
    the scheduler, read by the pool's GPU consumers."""
    return _pooled(GENERATION_READY, pool)


def gpu_workers_group(pool: str | None) -> str:
    """The GPU consumers' group of a model pool, `gpu-workers.<pool>`; None: `GPU_WORKERS_GROUP`."""
    return _pooled(GPU_WORKERS_GROUP, pool)


def is_generation_requests(topic: str) -> bool:
    """Whether `topic` is a generation intake (the default pool's or a named pool's)."""
    return topic == GENERATION_REQUESTS or topic.startswith(f"{GENERATION_REQUESTS}.")


def is_generation_ready(topic: str) -> bool:
    """Whether `topic` is a ready topic (the default pool's or a named pool's)."""
    return topic == GENERATION_READY or topic.startswith(f"{GENERATION_READY}.")
