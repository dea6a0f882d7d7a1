"""Tasks accepted by any gateway but not yet folded by `streams`: read from the request topics.

A gateway learns a task's status from `streams`' snapshots, which lag the intake by as long as
`streams` takes (seconds, or longer while it restarts). A gateway that restarts in that window, or
another replica, would otherwise answer 404 for a task a gateway has just accepted, and an
`Idempotency-Key` retry would queue the job again. So every gateway also follows the intake topics
(`GENERATION_REQUESTS`, `TRAINING_REQUESTS`), all partitions, no consumer group, from
`GATEWAY_INTAKE_LOOKBACK_S` seconds back, and records each valid request (the one rule,
`schemas.events.validate_record`) as a pending task with its owner and request hash, unless the task
is known already. Until it has read up to the end offsets the topics had at start (`caught_up`),
a task id the gateway does not know answers 503 with `Retry-After` rather than 404.
"""

from __future__ import annotations

import asyncio
from functools import partial

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from gateway.status_view import StatusStore
from schemas import topics
from schemas.events import GenerationRequested, InvalidRecord, PlanningRequested, TrainingRequested, validate_record

log = get_logger(__name__)

INTAKE_TOPICS = (topics.GENERATION_REQUESTS, topics.PLANNING_REQUESTS, topics.TRAINING_REQUESTS)


class AcceptedTasks:
    """Feeds the requests of the last `GATEWAY_INTAKE_LOOKBACK_S` seconds, then every new one, into `store`."""

    def __init__(self, settings: Settings, store: StatusStore) -> None:
        self.store = store
        self._readers = [
            CompactedReader(
                settings,
                topic,
                partial(self._apply, topic),
                name=f"intake-{topic}",
                since_s=settings.gateway_intake_lookback_s,
            )
            for topic in INTAKE_TOPICS
        ]

    async def start(self) -> None:
        """Start following every intake topic from the lookback."""
        for reader in self._readers:
            await reader.start()

    async def stop(self) -> None:
        """Stop following and close the consumers."""
        await asyncio.gather(*(reader.stop() for reader in self._readers))

    @property
    def caught_up(self) -> bool:
        """Whether every intake topic has been read up to where it ended at start."""
        return all(reader.caught_up.is_set() for reader in self._readers)

    @property
    def running(self) -> bool:
        """Whether every reader is alive."""
        return all(reader.running for reader in self._readers)

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is not None and self.store.get(key.decode(errors="replace")) is not None:
            return  # known already (this gateway accepted it, or streams folded it): recording it is a no-op
        try:
            event = validate_record(topic, key, value)
        except InvalidRecord:
            return  # dead-lettered by its consumers; never a task
        if isinstance(event, GenerationRequested | PlanningRequested | TrainingRequested):
            self.store.record_submitted(event)
