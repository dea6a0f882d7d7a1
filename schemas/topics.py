"""Kafka topic names: the one place they are spelled."""

from typing import Final

GENERATION_REQUESTS: Final = "acefarm.generation.requests"
"""Generation jobs (`GenerationRequested`), keyed by task id; consumed by the `gpu-workers` group."""

TRAINING_REQUESTS: Final = "acefarm.training.requests"
"""LoRA training jobs (`TrainingRequested`), keyed by task id; consumed by the `lora-trainers` group."""

TASK_EVENTS: Final = "acefarm.task.events"
"""Lifecycle events (started, progress, succeeded, failed, cancelled), keyed by task id."""

TASK_CONTROL: Final = "acefarm.task.control"
"""Control commands (`CancelRequested`), read by every worker (no consumer group)."""

TASK_STATUS: Final = "acefarm.task.status"
"""Folded status snapshots (`TaskStatusRecord`), keyed by task id; compacted in production."""

DEAD_LETTER: Final = "acefarm.deadletter"
"""Records that failed validation (`DeadLetter`), with the reason and the raw bytes."""

API_KEYS: Final = "acefarm.api.keys"
"""API key records (`ApiKeyRecord`, hashes only), keyed by key id; compacted, read whole by every gateway."""

ALL: Final = (
    GENERATION_REQUESTS,
    TRAINING_REQUESTS,
    TASK_EVENTS,
    TASK_CONTROL,
    TASK_STATUS,
    DEAD_LETTER,
    API_KEYS,
)

GPU_WORKERS_GROUP: Final = "gpu-workers"
TRAINERS_GROUP: Final = "lora-trainers"


def generation_requests_for(pool: str | None) -> str:
    """The request topic of a named model pool, `acefarm.generation.requests.<pool>`; None (the default
    pool): `GENERATION_REQUESTS`."""
    return GENERATION_REQUESTS if pool is None else f"{GENERATION_REQUESTS}.{pool}"


def gpu_workers_group_for(pool: str | None) -> str:
    """The consumer group of a named model pool, `gpu-workers.<pool>`; None: `GPU_WORKERS_GROUP`."""
    return GPU_WORKERS_GROUP if pool is None else f"{GPU_WORKERS_GROUP}.{pool}"


def is_generation_requests(topic: str) -> bool:
    """Whether `topic` carries generation requests (the default pool's or a named pool's)."""
    return topic == GENERATION_REQUESTS or topic.startswith(f"{GENERATION_REQUESTS}.")
