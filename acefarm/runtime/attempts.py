"""A job's attempts, recorded in storage before each start, so a job that keeps killing its workers is
noticed across processes (poison) and a job that was never started can be told apart (queue expiry).

One JSON object per task under `attempts_key`: the attempts in start order, each with its id, worker,
start time and how it ended when known. An attempt that never got an ending was cut short by a
crash or a hang; `failures` counts those and the timeouts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from acefarm.infra.logging import get_logger
from acefarm.infra.storage import Storage
from schemas.events import utcnow
from schemas.storage_keys import attempts_key

log = get_logger(__name__)

Ending = Literal["interrupted", "timeout", "forwarded", "task.succeeded", "task.failed", "task.cancelled"]
"""How an attempt ended: stopped by shutdown (not the job's fault), passed its deadline, or a final event."""
FAILED_ENDINGS: frozenset[Ending | None] = frozenset({None, "timeout"})
"""Endings that count towards `MAX_ATTEMPTS`: none recorded (the worker died or hung) and timeouts."""


class AttemptEntry(BaseModel):
    """One start of a job."""

    attempt: str
    worker: str
    started_at: datetime = Field(default_factory=utcnow)
    ended: Ending | None = None


class AttemptRecord(BaseModel):
    """Every start of one job, oldest first."""

    attempts: list[AttemptEntry] = Field(default_factory=list)

    @property
    def failures(self) -> int:
        """How many attempts crashed, hung or timed out."""
        return sum(entry.ended in FAILED_ENDINGS for entry in self.attempts)

    def started(self, attempt: str, worker: str) -> AttemptRecord:
        """This record with a new attempt appended."""
        return AttemptRecord(attempts=[*self.attempts, AttemptEntry(attempt=attempt, worker=worker)])

    def ended_as(self, attempt: str, ending: Ending) -> AttemptRecord:
        """This record with `attempt` marked as ended by `ending`."""
        return AttemptRecord(
            attempts=[e.model_copy(update={"ended": ending}) if e.attempt == attempt else e for e in self.attempts]
        )


async def read_attempts(storage: Storage, task_id: str, stage: str) -> AttemptRecord:
    """The task's record at `stage` (the kind of job: generation, planning, training); empty when there is
    none, or when it is unreadable (logged)."""
    try:
        raw = await storage.get_bytes(attempts_key(task_id, stage))
    except FileNotFoundError:
        return AttemptRecord()
    try:
        return AttemptRecord.model_validate_json(raw)
    except ValidationError as error:
        log.warning("attempts.unreadable", error=str(error)[:300])
        return AttemptRecord()


async def write_attempts(storage: Storage, task_id: str, stage: str, record: AttemptRecord) -> None:
    """Store the task's record at `stage` (replacing the previous one), atomically but not flushed to disk
    (`durable=False`): a worker killed by its job leaves the record in the page cache for the next pickup, which
    is what poison detection reads; only a machine crash can lose it (docs/reliability.md)."""
    data = record.model_dump_json().encode()
    await storage.put_bytes(attempts_key(task_id, stage), data, "application/json", durable=False)


async def mark_ended(storage: Storage, task_id: str, stage: str, attempt: str, ending: Ending) -> None:
    """Record how `attempt` ended (read, update, write)."""
    record = await read_attempts(storage, task_id, stage)
    await write_attempts(storage, task_id, stage, record.ended_as(attempt, ending))
