"""Keeping the consumer in its group while a long job runs: pause everything, keep polling."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from acefarm.logging import get_logger

log = get_logger(__name__)


class PausingListener(ConsumerRebalanceListener):
    """Re-pauses newly assigned partitions while a job runs; records how long the first join took."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.job_running = False
        self.started_at = time.monotonic()
        self.join_seconds: float | None = None
        self.joined_count = 0

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Log the revocation; a running job keeps running (its commit may then fail, see docs)."""
        if revoked:
            log.info("kafka.partitions_revoked", partitions=_names(revoked), job_running=self.job_running)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pause the new assignment if a job is running, so no second job is fetched."""
        self.joined_count += 1
        if self.join_seconds is None:
            self.join_seconds = time.monotonic() - self.started_at
            log.info("kafka.group_joined", seconds=round(self.join_seconds, 3), partitions=_names(assigned))
        else:
            log.info("kafka.partitions_assigned", partitions=_names(assigned), job_running=self.job_running)
        if self.job_running and assigned:
            self._consumer.pause(*assigned)


def pause_all(consumer: AIOKafkaConsumer) -> None:
    """Pause every assigned partition (a paused partition's prefetched records are dropped)."""
    assigned = consumer.assignment()
    if assigned:
        consumer.pause(*assigned)


def resume_all(consumer: AIOKafkaConsumer) -> None:
    """Resume every assigned partition."""
    assigned = consumer.assignment()
    if assigned:
        consumer.resume(*assigned)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
