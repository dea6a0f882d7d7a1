"""The DRR picker and its forecast, and the intake offset ledger (pure)."""

from __future__ import annotations

import pytest

from scheduler.fair_queue import FairQueue
from scheduler.ledger import OffsetLedger
from schemas.tenancy import Priority

WEIGHTS = {Priority.HIGH: 4, Priority.NORMAL: 2, Priority.BATCH: 1}


def drain(queue: FairQueue[str]) -> list[str]:
    order = []
    while (item := queue.pop()) is not None:
        order.append(item)
    return order


def test_a_new_owner_is_served_within_one_turn_of_a_long_backlog() -> None:
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for i in range(1000):
        queue.push("a", Priority.NORMAL, f"a{i}")
    assert [queue.pop(), queue.pop(), queue.pop()] == ["a0", "a1", "a2"]
    queue.push("b", Priority.NORMAL, "b0")
    # a's turn ended after 2 (weight 2), its next turn began with a2; b's turn comes after a3.
    assert [queue.pop(), queue.pop()] == ["a3", "b0"]
    assert len(queue) == 996


def test_owners_alternate_by_the_weight_of_their_best_lane() -> None:
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for i in range(8):
        queue.push("low", Priority.BATCH, f"l{i}")
        queue.push("high", Priority.HIGH, f"h{i}")
    assert drain(queue) == ["l0", "h0", "h1", "h2", "h3", "l1", "h4", "h5", "h6", "h7", *[f"l{i}" for i in range(2, 8)]]


def test_within_an_owner_higher_priority_goes_first_and_spreading_does_not_widen_the_share() -> None:
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for i in range(4):
        queue.push("spread", Priority.BATCH, f"sb{i}")
        queue.push("spread", Priority.NORMAL, f"sn{i}")
        queue.push("plain", Priority.NORMAL, f"p{i}")
    order = drain(queue)
    assert order[:8] == ["sn0", "sn1", "p0", "p1", "sn2", "sn3", "p2", "p3"]
    assert order[8:] == ["sb0", "sb1", "sb2", "sb3"]


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="weight"):
        FairQueue({Priority.HIGH: 1, Priority.NORMAL: 0, Priority.BATCH: 1})


def test_remove_if_takes_items_out_and_keeps_the_rotation_consistent() -> None:
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for i in range(3):
        queue.push("a", Priority.NORMAL, f"a{i}")
        queue.push("b", Priority.NORMAL, f"b{i}")
    assert queue.pop() == "a0"
    assert sorted(queue.remove_if(lambda item: item.startswith("a"))) == ["a1", "a2"]
    assert len(queue) == 3
    assert drain(queue) == ["b0", "b1", "b2"]


def test_forecast_matches_the_real_admission_order() -> None:
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for i in range(30):
        queue.push("a", Priority.NORMAL, f"a{i}")
    for i in range(5):
        queue.push("b", Priority.HIGH, f"bh{i}")
        queue.push("b", Priority.BATCH, f"bb{i}")
    queue.push("c", Priority.BATCH, "c0")
    queue.pop()  # mid-turn: the forecast continues a's turn
    forecast = queue.forecast(top=3)
    predicted = {item: ahead for lane in forecast for item, ahead in lane.head}
    actual = {item: index for index, item in enumerate(drain(queue))}
    assert predicted == {item: actual[item] for item in predicted}
    assert {(lane.owner, lane.priority, lane.length) for lane in forecast} == {
        ("a", Priority.NORMAL, 29),
        ("b", Priority.HIGH, 5),
        ("b", Priority.BATCH, 5),
        ("c", Priority.BATCH, 1),
    }
    assert all(len(lane.head) == min(3, lane.length) for lane in forecast)


def test_ledger_commits_only_the_settled_prefix() -> None:
    ledger = OffsetLedger()
    assert ledger.position(0) is None
    for offset in range(10, 15):
        ledger.seen(0, offset)
    for offset in (11, 12, 14):
        ledger.settled(0, offset)
    assert ledger.position(0) == 10
    ledger.settled(0, 10)
    assert ledger.position(0) == 13
    ledger.settled(0, 13)
    assert ledger.positions() == {0: 15}
    ledger.forget(0)
    ledger.settled(0, 15)  # a late admission of a revoked partition is ignored
    assert ledger.positions() == {}
