"""Property tests (hypothesis) of the status fold, through `fold_record` as streams runs it.

The model of what reaches streams for one task:
- `acefarm.generation|training.requests`: its request, maybe published twice (a retried send);
- `acefarm.task.control`: maybe a cancel request (maybe twice);
- `acefarm.task.events`: one delivery after another. A delivery that runs publishes `started`, some
  `progress` and, if it is the last one, a final event; any non-final event may be lost (workers do
  not await them). An earlier delivery either crashed (no final) or is a zombie whose final lands
  later, after the next delivery started. The last delivery may instead be one that is never run
  (cancelled before it started, or failed at pickup): a final with no attempt. Any record may be
  published again later (retried sends);
- malformed records on any topic.
Each topic is one partition, read in order; streams interleaves the topics arbitrarily and, after a
crash, re-reads any topic from an earlier offset (its table rows survive in the changelog).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    TaskCancelled,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    TrainingRequested,
)
from schemas.generation import GenerationParams
from schemas.status import Stage, StoredFile, TaskState, TaskStatus
from streams.fold import SOURCE_TOPICS, FoldEvent
from tests.streams.tables import Tables, Topics, topic_of

TID = "task-p"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
MAX_REWINDS = 4
MALFORMED = b'{"type": "task.started"}'

STICKY_EXEMPT = {"kind", "lora_id", "created_at", "updated_at", "version"}
"""What a late request may still fill in on a final row, and the change bookkeeping."""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def take(attempt: str) -> StoredFile:
    return StoredFile(key=f"outputs/{TID}/{attempt}.wav", content_type="audio/wav", size_bytes=10, duration_s=1.0)


def request(training: bool) -> FoldEvent:
    if training:
        return TrainingRequested(
            task_id=TID, lora_id="style-x", style_name="X", dataset_key="datasets/x.zip", occurred_at=at(0)
        )
    return GenerationRequested(task_id=TID, params=GenerationParams(prompt="p", duration=10), occurred_at=at(0))


def final_of(outcome: str, attempt: str | None, t: float) -> FoldEvent:
    """A final event: `outcome` is success, failure or cancel."""
    if outcome == "success":
        assert attempt is not None
        return TaskSucceeded(task_id=TID, attempt=attempt, files=[take(attempt)], occurred_at=at(t))
    if outcome == "failure":
        return TaskFailed(task_id=TID, attempt=attempt, error=f"broke {attempt}", reason="timeout", occurred_at=at(t))
    return TaskCancelled(task_id=TID, attempt=attempt, reason=f"cancel {attempt}", occurred_at=at(t))


@dataclass
class History:
    """Everything published for one task, per topic, in publish order."""

    requests: list[FoldEvent]
    control: list[FoldEvent]
    events: list[FoldEvent]
    malformed_at: tuple[list[int], list[int], list[int]] = ([], [], [])
    """For requests, control and events: positions before which a malformed record is published."""

    def publish(self) -> Topics:
        """The topics holding this history, malformed records included."""
        published = Topics()
        for events, bad in zip((self.requests, self.control, self.events), self.malformed_at, strict=True):
            for position, event in enumerate(events):
                for _ in range(bad.count(position)):
                    published.publish_raw(topic_of(event), TID.encode(), MALFORMED)
                published.publish(event)
        return published


@st.composite
def with_duplicates(draw: st.DrawFn, events: list[FoldEvent]) -> list[FoldEvent]:
    """`events` with some of them published once more, anywhere after the original."""
    result = list(events)
    for event in events:
        if draw(st.integers(0, 4)) == 0:
            start = result.index(event) + 1
            result.insert(draw(st.integers(start, len(result))), event)
    return result


@st.composite
def delivery(
    draw: st.DrawFn, number: int, last: bool, cancel: bool, t: float
) -> tuple[list[FoldEvent], FoldEvent | None]:
    """One delivery's events on `acefarm.task.events`, and its final if it is a zombie's (published later)."""
    attempt = f"a{number}"
    if last and draw(st.booleans()):  # never run: a final with no attempt
        return [final_of("cancel" if cancel else "failure", None, t)], None
    events: list[FoldEvent] = []
    if draw(st.integers(0, 3)) > 0:  # `started` may be lost
        events.append(TaskStarted(task_id=TID, attempt=attempt, worker=f"w{number}", occurred_at=at(t)))
    for step, share in enumerate(draw(st.lists(st.sampled_from([0.2, 0.5, 0.8]), max_size=2, unique=True)), 1):
        events.append(
            TaskProgress(task_id=TID, attempt=attempt, stage=Stage.DIFFUSION, progress=share, occurred_at=at(t + step))
        )
    # A worker that finishes honours a cancel request it saw; with one, every final here is a cancel.
    outcomes = ["cancel"] if cancel else ["success", "failure"]
    final = final_of(draw(st.sampled_from(outcomes)), attempt, t + 3)
    if last:
        return [*events, final], None
    return events, final if draw(st.booleans()) else None  # an earlier delivery crashed or is a zombie


@st.composite
def histories(draw: st.DrawFn, cancel: bool) -> History:
    """A task's history; with `cancel`, a cancel request that every worker finishing the job honours."""
    count = draw(st.integers(1, 3))
    events: list[FoldEvent] = []
    zombies: list[tuple[int, FoldEvent]] = []  # (position in `events`, final), placed after the next delivery began
    for number in range(1, count + 1):
        ran, zombie = draw(delivery(number, number == count, cancel, t=10.0 * number))
        if zombies and zombies[-1][0] < 0:  # the previous delivery's zombie: among this delivery's events
            begun = len(events) + min(1, len(ran))
            zombies[-1] = (draw(st.integers(begun, len(events) + len(ran))), zombies[-1][1])
        events += ran
        if zombie is not None:
            zombies.append((-1, zombie))
    for position, zombie in sorted(zombies, key=lambda z: z[0], reverse=True):
        events.insert(position, zombie)
    control: list[FoldEvent] = [CancelRequested(task_id=TID, occurred_at=at(5))] if cancel else []
    positions = st.lists(st.integers(0, 3), max_size=2)
    return History(
        requests=draw(with_duplicates([request(draw(st.booleans()))])),
        control=draw(with_duplicates(control)),
        events=draw(with_duplicates(events)),
        malformed_at=(draw(positions), draw(positions), draw(positions)),
    )


def read_in_order(published: Topics, order: tuple[str, ...]) -> Tables:
    """Fold every topic to its end, one topic after another."""
    tables = Tables()
    for topic in order:
        for record in published.logs[topic]:
            tables.read(record)
    return tables


def read_interleaved(published: Topics, data: st.DataObject) -> Tables:
    """Fold the topics interleaved as `data` chooses, re-reading from earlier offsets now and then."""
    tables = Tables()
    position = dict.fromkeys(SOURCE_TOPICS, 0)
    rewinds = 0
    while unread := [topic for topic in SOURCE_TOPICS if position[topic] < len(published.logs[topic])]:
        topic = data.draw(st.sampled_from(unread))
        tables.read(published.logs[topic][position[topic]])
        position[topic] += 1
        if rewinds < MAX_REWINDS and data.draw(st.integers(0, 5)) == 0:  # a crash before the commit
            rewinds += 1
            crashed = data.draw(st.sampled_from(SOURCE_TOPICS))
            position[crashed] = data.draw(st.integers(0, position[crashed]))
    return tables


def outcome(status: TaskStatus | None) -> dict[str, object]:
    """What a client sees of a final task: state, kind, LoRA id, creation time, files and error."""
    assert status is not None
    return status.model_dump(include={"status", "kind", "lora_id", "created_at", "files", "error"})


def assert_published_once_each(tables: Tables, published: Topics) -> None:
    """Each record changes the row (and is published) at most once however often it is read, versions
    go 1, 2, ... without a repeat, and each malformed record is dead-lettered exactly once."""
    assert len(set(tables.changed_by)) == len(tables.changed_by)
    assert [s.version for s in tables.snapshots] == list(range(1, len(tables.snapshots) + 1))
    malformed = [r for log in published.logs.values() for r in log if r.value == MALFORMED]
    assert sorted(tables.dead_letters, key=lambda r: (r.topic, r.offset)) == sorted(
        malformed, key=lambda r: (r.topic, r.offset)
    )


@settings(max_examples=300, deadline=None)
@given(history=histories(cancel=False), data=st.data())
def test_any_interleaving_and_redelivery_gives_the_same_final_row(history: History, data: st.DataObject) -> None:
    """Without a cancel request: every way of reading the published records (topics interleaved in
    any order, any topic re-read from an earlier offset after a crash, duplicated records included)
    ends in a final status, and the final row is the same in every field except `version` and
    `updated_at` (they count and date the changes, whose number depends on when the request is read)."""
    published = history.publish()
    reference = read_in_order(published, SOURCE_TOPICS).status(TID)
    tables = read_interleaved(published, data)
    final = tables.status(TID)
    assert final is not None and final.status.is_final
    assert reference is not None
    bookkeeping = {"version", "updated_at"}
    assert final.model_dump(exclude=bookkeeping) == reference.model_dump(exclude=bookkeeping)
    assert_published_once_each(tables, published)


@settings(max_examples=300, deadline=None)
@given(history=histories(cancel=True), data=st.data())
def test_an_honoured_cancel_ends_cancelled_in_every_order(history: History, data: st.DataObject) -> None:
    """With a cancel request the worker honours: every reading order ends `cancelled`, with the same
    state, kind, LoRA id, creation time, files and error. Whether the request (read while the task is
    pending) or the worker's `TaskCancelled` makes the change depends on the order, so the message,
    attempt and progress may differ. (A cancel request the worker never saw races with its start:
    read while the task is still pending it cancels at once; that outcome is order-dependent.)"""
    published = history.publish()
    tables = read_interleaved(published, data)
    final = tables.status(TID)
    assert final is not None and final.status is TaskState.CANCELLED
    for order in (SOURCE_TOPICS, tuple(reversed(SOURCE_TOPICS))):
        assert outcome(final) == outcome(read_in_order(published, order).status(TID))
    assert_published_once_each(tables, published)


def any_event() -> st.SearchStrategy[FoldEvent]:
    """Any folded event of the task, from a small pool of attempts and outcomes."""
    attempts = st.sampled_from(["a1", "a2", "a3"])
    times = st.integers(0, 20)
    return st.one_of(
        st.builds(request, st.booleans()),
        st.builds(lambda t: CancelRequested(task_id=TID, occurred_at=at(t)), times),
        st.builds(lambda a, t: TaskStarted(task_id=TID, attempt=a, worker="w", occurred_at=at(t)), attempts, times),
        st.builds(
            lambda a, p, t: TaskProgress(task_id=TID, attempt=a, stage=Stage.DIFFUSION, progress=p, occurred_at=at(t)),
            attempts,
            st.sampled_from([0.1, 0.6]),
            times,
        ),
        st.builds(final_of, st.just("success"), attempts, times),
        st.builds(final_of, st.sampled_from(["failure", "cancel"]), st.none() | attempts, times),
    )


@settings(max_examples=500, deadline=None)
@given(events=st.lists(any_event(), max_size=25))
def test_a_final_status_never_changes(events: list[FoldEvent]) -> None:
    """For any sequence of a task's events whatsoever (any order, repeats, attempts mixed): once a
    published snapshot is final, every later snapshot has the same state and the same value in every
    field except those a late request fills in (kind, LoRA id, creation time) and the change
    bookkeeping (`version`, `updated_at`)."""
    published, tables = Topics(), Tables()
    for event in events:
        tables.read(published.publish(event))
    finals = [i for i, snapshot in enumerate(tables.snapshots) if snapshot.status.is_final]
    if finals:
        first = tables.snapshots[finals[0]].model_dump(exclude=STICKY_EXEMPT)
        assert all(s.model_dump(exclude=STICKY_EXEMPT) == first for s in tables.snapshots[finals[0] :])
