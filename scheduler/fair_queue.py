"""The fair queue: weighted deficit round-robin across owners, strict priority within an owner.

Owners take turns in arrival order. At the start of its turn an owner gets a credit equal to the weight of
its most urgent non-empty priority (e.g. high 4, normal 2, batch 1) and spends one credit per admitted job,
most urgent lane first, FIFO within a lane. An owner whose lanes run dry leaves the rotation (and loses its
remaining credit, as in deficit round-robin); a new owner joins at the end. So a tenant with 10 000 jobs
waits its turn like a tenant with one, and an owner cannot widen its share by spreading jobs over
priorities: its share per round is the weight of its best lane. Admission costs O(1).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from schemas.tenancy import Priority

T = TypeVar("T")

URGENCY = (Priority.HIGH, Priority.NORMAL, Priority.BATCH)
"""Priorities from most to least urgent."""


@dataclass
class _Owner(Generic[T]):
    lanes: dict[Priority, deque[T]] = field(default_factory=lambda: {p: deque() for p in URGENCY})
    size: int = 0

    def top(self) -> Priority:
        return next(p for p in URGENCY if self.lanes[p])


@dataclass(frozen=True)
class LaneView(Generic[T]):
    """One non-empty lane as the snapshot shows it: its length and first items with their admissions ahead."""

    owner: str
    priority: Priority
    length: int
    head: list[tuple[T, int]]


class FairQueue(Generic[T]):
    """Waiting items in lanes (owner, priority), popped in weighted round-robin order across owners."""

    def __init__(self, weights: Mapping[Priority, int]) -> None:
        if any(weights.get(p, 0) < 1 for p in URGENCY):
            raise ValueError(f"every priority needs a weight >= 1, got {dict(weights)}")
        self._weights = {p: weights[p] for p in URGENCY}
        self._owners: OrderedDict[str, _Owner[T]] = OrderedDict()
        self._credit = 0
        """Admissions left in the current turn of the first owner (0: its turn has not started)."""
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, owner: str, priority: Priority, item: T) -> None:
        """Queue `item` at the end of lane (owner, priority); a new owner joins the end of the rotation."""
        queue = self._owners.get(owner)
        if queue is None:
            queue = self._owners[owner] = _Owner()
        queue.lanes[priority].append(item)
        queue.size += 1
        self._size += 1

    def pop(self) -> T | None:
        """The next item to admit, or None when nothing waits."""
        if not self._owners:
            return None
        name, queue = next(iter(self._owners.items()))
        if self._credit == 0:
            self._credit = self._weights[queue.top()]
        item = queue.lanes[queue.top()].popleft()
        queue.size -= 1
        self._size -= 1
        self._credit -= 1
        if queue.size == 0:
            del self._owners[name]
            self._credit = 0
        elif self._credit == 0:
            self._owners.move_to_end(name)
        return item

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every item for which `predicate` holds (e.g. of revoked partitions) and return them."""
        removed: list[T] = []
        for name in list(self._owners):
            queue = self._owners[name]
            for priority in URGENCY:
                kept: deque[T] = deque()
                for item in queue.lanes[priority]:
                    (removed if predicate(item) else kept).append(item)
                queue.lanes[priority] = kept
            queue.size = sum(len(lane) for lane in queue.lanes.values())
            if queue.size == 0:
                if name == next(iter(self._owners)):
                    self._credit = 0
                del self._owners[name]
        self._size -= len(removed)
        return removed

    def forecast(self, top: int, max_turns: int = 100_000) -> list[LaneView[T]]:
        """Every non-empty lane in service order, with its first `top` items and the admissions before each.

        Simulates the rotation turn by turn on lane lengths (not item by item), so an owner with a long
        lane costs one step per turn; stops after `max_turns` turns, leaving items not reached by then out.
        """
        taken = {(name, p): 0 for name, queue in self._owners.items() for p in URGENCY if queue.lanes[p]}
        ahead_of: dict[tuple[str, Priority], list[int]] = {key: [] for key in taken}
        rotation = deque(self._owners)
        remaining = {name: queue.size for name, queue in self._owners.items()}
        credit = self._credit
        ahead = 0
        pending = sum(min(top, len(self._owners[name].lanes[p])) for name, p in taken)
        turns = 0
        while rotation and pending and turns < max_turns:
            turns += 1
            name = rotation.popleft()
            lanes = self._owners[name].lanes
            if credit == 0:
                credit = self._weights[next(p for p in URGENCY if len(lanes[p]) > taken.get((name, p), 0))]
            for priority in URGENCY:
                key = (name, priority)
                left = len(lanes[priority]) - taken.get(key, 0)
                if credit == 0 or left <= 0:
                    continue
                n = min(credit, left)
                first = taken[key]
                for index in range(first, min(first + n, top)):
                    ahead_of[key].append(ahead + index - first)
                    pending -= 1
                taken[key] += n
                ahead += n
                credit -= n
                remaining[name] -= n
            credit = 0
            if remaining[name]:
                rotation.append(name)
        return [
            LaneView(name, p, len(queue.lanes[p]), list(zip(queue.lanes[p], ahead_of[(name, p)], strict=False)))
            for name, queue in self._owners.items()
            for p in URGENCY
            if queue.lanes[p]
        ]
