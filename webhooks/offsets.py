"""Which offsets a consumer may commit while it works on many records at once.

Records finish out of order (a slow receiver, a retry due later than the next one); a partition's commit
position is its lowest offset still open, or the one after the last record read when none is open. So a
restart re-reads every record whose work did not finish, and nothing after a finished one is lost.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition


class Watermarks:
    """Open (read, not finished) offsets per partition and the commit positions they allow."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        """A record was read and its work starts."""
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """The record's work is finished (no-op for a partition forgotten since)."""
        if tp in self._open:
            self._open[tp].discard(offset)

    @property
    def open_count(self) -> int:
        """How many records are read and not finished."""
        return sum(len(offsets) for offsets in self._open.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Commit positions that moved since `committed` was last told about them."""
        positions = {tp: min(self._open[tp]) if self._open.get(tp) else end for tp, end in self._next.items()}
        return {tp: pos for tp, pos in positions.items() if self._committed.get(tp) != pos}

    def committed(self, positions: dict[TopicPartition, int]) -> None:
        """These positions are committed."""
        self._committed.update(positions)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """The partitions went to another consumer: stop tracking them."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
