"""After a restart or rebalance: which uncommitted intake records were already admitted.

Every ready record carries the intake position it came from (header `acefarm-intake: partition:offset`).
The intake commit position of a partition is its oldest record not yet admitted, so every record after
it that was admitted was admitted after that record was written: reading the ready topic from that
record's timestamp (minus a clock-skew margin, via offsets_for_times) finds all of them. The read is
bounded by the age of the oldest waiting job, not by the size of the topic.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from acefarm.infra.kafka import make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings

log = get_logger(__name__)

INTAKE_HEADER = "acefarm-intake"
"""Header on every ready record: the intake position it was admitted from, `partition:offset`."""

CLOCK_SKEW_MS = 60_000
"""How far a producer's clock (the intake record's timestamp) may run ahead of the scheduler's."""

READ_TIMEOUT_S = 120.0


def intake_header(partition: int, offset: int) -> tuple[str, bytes]:
    """The header naming an intake position."""
    return INTAKE_HEADER, f"{partition}:{offset}".encode()


def parse_intake_header(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> tuple[int, int] | None:
    """The intake position named by a ready record's headers, if any."""
    for name, value in headers:
        if name == INTAKE_HEADER:
            partition, _, offset = value.decode(errors="replace").partition(":")
            if partition.isdigit() and offset.isdigit():
                return int(partition), int(offset)
    return None


async def already_admitted(
    settings: Settings, intake: str, positions: dict[int, int], ready: list[TopicPartition]
) -> set[tuple[int, int]]:
    """Positions on the `intake` topic at or after each partition's commit position (`positions`) named in the
    `ready` partitions (the ready topic of the same model pool)."""
    if not positions:
        return set()
    reader = make_consumer(settings, group_id=None)
    await reader.start()
    try:
        oldest_ms = await _oldest_timestamp(reader, intake, positions)
        found = set() if oldest_ms is None else await _scan_ready(reader, ready, oldest_ms - CLOCK_SKEW_MS, positions)
    finally:
        await reader.stop()
    log.info("scheduler.recovered", topic=intake, commit_positions=positions, already_admitted=len(found))
    return found


async def _oldest_timestamp(reader: AIOKafkaConsumer, intake: str, positions: dict[int, int]) -> int | None:
    """Timestamp (ms) of the oldest record at a commit position; None when every partition is fully settled."""
    wanted = {TopicPartition(intake, p): offset for p, offset in positions.items()}
    ends = await reader.end_offsets(list(wanted))
    open_ = {tp: offset for tp, offset in wanted.items() if offset < ends[tp]}
    if not open_:
        return None
    reader.assign(list(open_))
    for tp, offset in open_.items():
        reader.seek(tp, offset)
    oldest: int | None = None
    deadline = time.monotonic() + READ_TIMEOUT_S
    while open_:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read the intake records at {sorted(p.partition for p in open_)}")
        for tp, records in (await reader.getmany(*open_, timeout_ms=500, max_records=1)).items():
            if records and tp in open_:
                oldest = records[0].timestamp if oldest is None else min(oldest, records[0].timestamp)
                del open_[tp]
    return oldest


async def _scan_ready(
    reader: AIOKafkaConsumer, tps: list[TopicPartition], since_ms: int, positions: dict[int, int]
) -> set[tuple[int, int]]:
    """Intake positions named by ready records written since `since_ms`, at or after the commit positions."""
    ends = await reader.end_offsets(tps)
    starts = await reader.offsets_for_times({tp: max(0, since_ms) for tp in tps})
    reader.assign(tps)
    remaining = set()
    for tp in tps:
        found = starts.get(tp)
        # None (Kafka) or a negative timestamp (Tansu): no record that new.
        start = found.offset if found is not None and found.timestamp >= 0 else ends[tp]
        if start < ends[tp]:
            reader.seek(tp, start)
            remaining.add(tp)
    admitted: set[tuple[int, int]] = set()
    deadline = time.monotonic() + READ_TIMEOUT_S
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError("could not read the ready topic back to its end")
        for records in (await reader.getmany(*remaining, timeout_ms=500)).values():
            for record in records:
                position = parse_intake_header(record.headers)
                if position is not None and position[1] >= positions.get(position[0], position[1] + 1):
                    admitted.add(position)
        remaining = {tp for tp in remaining if await reader.position(tp) < ends[tp]}
    return admitted
