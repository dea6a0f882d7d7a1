"""Commit points of the pipelined loop: a partition's offset moves only past records that are all final."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from acefarm.runtime.pipeline import _final_offsets, _InFlight

TP = TopicPartition("acefarm.generation.ready", 0)


def job(*offsets: int, assignments: int = 1) -> _InFlight:
    """A job (or a batch) over records of partition 0; only its records and assignment count matter here."""
    records = [ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, None, b"", None, 0, 0, ()) for offset in offsets]
    unused: Any = None
    return _InFlight(records, unused, unused, assignments)


def test_a_record_final_ahead_of_an_earlier_one_is_committed_once_that_one_is() -> None:
    # A batch took offset 11 before offset 10 (another batch key) and ended first: nothing may be committed past
    # 10 yet, and once 10 ends the commit goes past both (it went to 11 before: 11 ran again after a restart).
    listener: Any = SimpleNamespace(assignments=1)
    batch, alone = job(11), job(10)
    ahead: dict[TopicPartition, tuple[int, int]] = {}
    assert _final_offsets(listener, [batch], deque([alone]), [], {}, ahead) == {}
    assert _final_offsets(listener, [alone], deque(), [], {}, ahead) == {TP: (12, False)}
    assert ahead == {}


def test_after_a_rebalance_a_record_final_ahead_is_left_to_be_redelivered() -> None:
    listener: Any = SimpleNamespace(assignments=1)
    batch, alone = job(11), job(10)
    ahead: dict[TopicPartition, tuple[int, int]] = {}
    assert _final_offsets(listener, [batch], deque([alone]), [], {}, ahead) == {}
    listener.assignments = 2  # the partition came back: its uncommitted records are fetched again
    assert _final_offsets(listener, [alone], deque(), [], {}, ahead) == {TP: (11, True)}
