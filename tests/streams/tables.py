"""The folded topics and the streams tables in memory, driven by `fold_record` as `streams.app` drives it."""

from __future__ import annotations

from schemas.events import EVENTS_BY_TOPIC
from schemas.status import TaskStatus
from streams.fold import (
    SOURCE_TOPICS,
    Change,
    Decision,
    FoldedRow,
    FoldEvent,
    Reject,
    SourceRecord,
    fold_record,
)


def topic_of(event: FoldEvent) -> str:
    """The folded topic `event` is published on."""
    return next(topic for topic in SOURCE_TOPICS if isinstance(event, EVENTS_BY_TOPIC[topic]))


class Topics:
    """The four folded topics, one partition each (a task's events all land on one partition per topic)."""

    def __init__(self) -> None:
        self.logs: dict[str, list[SourceRecord]] = {topic: [] for topic in SOURCE_TOPICS}

    def publish(self, event: FoldEvent) -> SourceRecord:
        """Append `event` to its topic, keyed by its task id."""
        return self.publish_raw(topic_of(event), event.task_id.encode(), event.to_bytes())

    def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> SourceRecord:
        """Append any bytes to `topic`."""
        log = self.logs[topic]
        record = SourceRecord(topic=topic, partition=0, offset=len(log), key=key, value=value)
        log.append(record)
        return record


class Tables:
    """The status table and the dead-lettered-offsets table, plus what would be published."""

    def __init__(self) -> None:
        self.rows: dict[str, FoldedRow] = {}
        self.dead_lettered: dict[str, int] = {}
        self.snapshots: list[TaskStatus] = []
        self.changed_by: list[SourceRecord] = []
        self.dead_letters: list[SourceRecord] = []

    def read(self, record: SourceRecord) -> Decision:
        """Fold one record: publish and store what `fold_record` decides."""
        decision = fold_record(record, self.rows.get, self.dead_lettered.get(record.mark))
        match decision:
            case Reject():
                self.dead_letters.append(record)
                self.dead_lettered[record.mark] = record.offset
            case Change(_, row):
                self.snapshots.append(row.status)
                self.changed_by.append(record)
                self.rows[row.status.task_id] = row
        return decision

    def status(self, task_id: str) -> TaskStatus | None:
        """The task's current status (None when it has no row)."""
        row = self.rows.get(task_id)
        return row.status if row else None
