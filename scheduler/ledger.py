"""Which intake offsets may be committed: the contiguous prefix of records that are settled.

A record is settled once it is admitted (its ready record acknowledged) or dead-lettered. Records are
admitted out of offset order (that is the point of fair queueing), so a partition's commit position is
its oldest unsettled offset; records after it that were already admitted are found again on restart by
`scheduler.recovery` and not admitted twice.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class _Partition:
    unsettled: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)
    end: int | None = None
    """One past the highest offset seen."""


class OffsetLedger:
    """Per intake partition: offsets seen and not yet settled; the commit position of each."""

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def seen(self, partition: int, offset: int) -> None:
        """A record was fetched (unsettled until `settled`)."""
        state = self._partitions.setdefault(partition, _Partition())
        state.unsettled.add(offset)
        heapq.heappush(state.heap, offset)
        state.end = max(state.end or 0, offset + 1)

    def settled(self, partition: int, offset: int) -> None:
        """The record was admitted or dead-lettered (ignored for a partition no longer held)."""
        state = self._partitions.get(partition)
        if state is not None:
            state.unsettled.discard(offset)

    def forget(self, partition: int) -> None:
        """The partition was revoked."""
        self._partitions.pop(partition, None)

    def position(self, partition: int) -> int | None:
        """The offset to commit: the oldest unsettled one, or one past the last seen; None if nothing seen."""
        state = self._partitions.get(partition)
        if state is None:
            return None
        while state.heap and state.heap[0] not in state.unsettled:
            heapq.heappop(state.heap)
        return state.heap[0] if state.heap else state.end

    def positions(self) -> dict[int, int]:
        """The commit position of every partition that has one."""
        found = {p: self.position(p) for p in self._partitions}
        return {p: offset for p, offset in found.items() if offset is not None}
