"""queue_position: a waiting task's place and ETA from the schedulers' snapshots (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.queues import (
    LaneSnapshot,
    QueuedTask,
    QueueSnapshot,
    current,
    queue_position,
    queue_positions,
    snapshot_key,
)
from schemas.tenancy import Priority

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def snapshot(
    name: str, partitions: list[int], ahead: dict[str, int], *, age_s: float = 0, **fields: object
) -> QueueSnapshot:
    lane = LaneSnapshot(
        owner="a",
        priority=Priority.NORMAL,
        length=len(ahead),
        head=[QueuedTask(task_id=t, ahead=n) for t, n in ahead.items()],
    )
    values: dict[str, object] = {"ready_backlog": 3, "consumers": 1, "admitted_per_s": 2.0} | fields
    return QueueSnapshot(
        scheduler=name,
        partitions=partitions,
        published_at=T0 - timedelta(seconds=age_s),
        waiting=len(ahead),
        lanes=[lane],
        **values,  # type: ignore[arg-type]
    )


def test_one_scheduler_position_counts_the_ready_backlog_and_the_admissions_ahead() -> None:
    snap = snapshot("s1", [0, 1], {"t0": 0, "t1": 1, "t5": 5})
    # 3 admitted, 1 of them running: 2 wait in the ready topic, then the admissions ahead.
    assert queue_position([snap], "t0") == (2, 1.5)
    assert queue_position([snap], "t5") == (7, 4.0)
    assert queue_position([snap], "unknown") is None


def test_no_rate_yet_gives_no_eta() -> None:
    snap = snapshot("s1", [0], {"t0": 0}, admitted_per_s=0.0, ready_backlog=0)
    assert queue_position([snap], "t0") == (0, None)


def test_a_snapshot_superseded_by_a_newer_owner_of_its_partitions_is_ignored() -> None:
    dead = snapshot("dead", [0, 1], {"old": 0, "moved": 4}, age_s=30)
    alive = snapshot("alive", [1, 2], {"moved": 1})
    other = snapshot("other", [3], {"x": 0}, age_s=10)
    assert [s.scheduler for s in current([dead, alive, other])] == ["alive", "other"]
    positions = queue_positions([dead, alive, other])
    assert "old" not in positions
    assert positions["moved"].position == 2 + 1 * 2  # two schedulers admit at the same rate: share 2


def test_positions_scale_by_each_schedulers_share_of_admissions() -> None:
    fast = snapshot("fast", [0], {"f": 4}, admitted_per_s=3.0)
    slow = snapshot("slow", [1], {"s": 4}, admitted_per_s=1.0, age_s=1)
    positions = queue_positions([fast, slow])
    assert positions["f"].position == 2 + round(4 * 4 / 3)
    assert positions["s"].position == 2 + 4 * 4
    assert positions["s"].eta_s == round((2 + 16 + 1) / 4.0, 1)


def test_each_model_pool_is_counted_apart() -> None:
    default = snapshot("s1", [0], {"d": 1}, age_s=1)
    base = snapshot("s1", [0], {"b": 1}, pool="base", ready_backlog=1, admitted_per_s=1.0)
    assert len(current([default, base])) == 2, "the same partitions of two pools' intakes"
    positions = queue_positions([default, base])
    assert positions["d"] == (2 + 1, round((3 + 1) / 2.0, 1))
    assert positions["b"] == (0 + 1, round((1 + 1) / 1.0, 1)), "its own backlog, consumers and rate"
    assert (snapshot_key("s1", None), snapshot_key("s1", "base")) == ("s1", "s1/base")


def test_snapshot_round_trips_as_json() -> None:
    snap = snapshot("s1", [0], {"t": 0})
    assert QueueSnapshot.model_validate_json(snap.to_bytes()) == snap
