"""The fold copies who submitted a task (and the body's hash) from its request event onto the status row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.events import GenerationRequested, TaskStarted, TrainingRequested
from schemas.generation import GenerationParams
from streams.fold import apply

T0 = datetime(2025, 1, 1, tzinfo=UTC)
HASH = "ab" * 32


def test_the_owner_and_request_hash_come_from_the_request_even_when_it_arrives_late() -> None:
    params = GenerationParams(prompt="calm piano", duration=10)
    request = GenerationRequested(task_id="t1", params=params, owner="alice", request_hash=HASH, occurred_at=T0)
    created = apply(None, request)
    assert created is not None and (created.owner, created.request_hash) == ("alice", HASH)

    started = apply(None, TaskStarted(task_id="t1", attempt="a", worker="w", occurred_at=T0 + timedelta(seconds=1)))
    assert started is not None and started.owner is None
    late = apply(started, request)  # topics are not ordered relative to each other
    assert late is not None and (late.owner, late.request_hash) == ("alice", HASH)

    training = TrainingRequested(task_id="t2", lora_id="s-1", style_name="S", dataset_key="d/t2.zip", owner="bob")
    trained = apply(None, training)
    assert trained is not None and trained.owner == "bob" and trained.request_hash is None
