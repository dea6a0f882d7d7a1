"""Worker heartbeats: the record each long-job worker keeps on the compacted `acefarm.workers` topic.

Keyed by worker name; a worker re-announces itself every `interval_s` seconds and whenever it joins
its group or starts or finishes a job, and writes a tombstone (empty value) when it stops cleanly.
Readers count a worker alive while its newest heartbeat is younger than three intervals. Unknown
fields are ignored, so newer workers may add some without breaking older readers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import utcnow

ALIVE_INTERVALS = 3
"""A worker is alive while its last heartbeat is younger than this many of its intervals."""


class WorkerHeartbeat(BaseModel):
    """One worker announcing itself. Topic: `acefarm.workers`, key: `worker`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    worker: Annotated[str, Field(min_length=1, max_length=255, description="Worker name; also the Kafka key.")]
    kind: Annotated[str, Field(min_length=1, max_length=64, description="Service kind: gpu-consumer, trainer.")]
    group: Annotated[str, Field(max_length=255, description="Consumer group it takes jobs from.")]
    topic: Annotated[str, Field(max_length=255, description="Topic it takes jobs from.")] = ""
    model: Annotated[str, Field(max_length=1024, description="Checkpoint it serves (path or Hugging Face id).")]
    device: Annotated[str, Field(max_length=255)]
    pool: Annotated[
        str | None,
        Field(max_length=64, description="Model pool it serves (a request's `model`); null: a kind without pools."),
    ] = None
    default_pool: Annotated[bool, Field(description="Whether its pool is the farm's default (the plain topics).")] = (
        False
    )
    task_types: Annotated[
        list[str], Field(max_length=32, description="Task types its model runs (empty: not a generation worker).")
    ] = Field(default_factory=list)
    joined: Annotated[bool, Field(description="Whether it has joined its consumer group and can take jobs.")] = False
    current_task: Annotated[str | None, Field(max_length=255, description="Task id of the job it runs now.")] = None
    jobs_done: Annotated[int, Field(ge=0)] = 0
    started_at: datetime
    sent_at: datetime = Field(default_factory=utcnow)
    interval_s: Annotated[float, Field(gt=0, description="Seconds until its next heartbeat at the latest.")]

    def to_bytes(self) -> bytes:
        """JSON encoding used on the wire."""
        return self.model_dump_json().encode()

    def alive(self, now: datetime) -> bool:
        """Whether the heartbeat is younger than `ALIVE_INTERVALS` intervals at `now`."""
        return (now - self.sent_at).total_seconds() < ALIVE_INTERVALS * self.interval_s
