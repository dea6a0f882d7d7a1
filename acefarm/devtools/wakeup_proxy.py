"""A long-poll front for the embedded broker: a waiting fetch is answered as soon as something is produced.

Tansu answers a fetch by re-reading its storage on a timer (at the start, then after half the remaining
wait, ...) and never when a record arrives, so a consumer's long poll sees new data up to half its wait
late, and a short wait makes every idle consumer fetch (and the broker scan) dozens of times a second.
This proxy sits between the clients and Tansu and gives fetches Apache Kafka's behaviour instead:

- a Fetch goes on to Tansu with its wait cut to `FORWARDED_WAIT_MS` unless it asks for exactly what
  the connection's previous fetch asked for, nothing was produced to its partitions since that one went on,
  and its answer showed nothing left to read; such a repeated fetch is held here, costing nothing, until one
  of its partitions is produced to, the client sends another request on the same connection, or the
  client's own wait runs out.
  An answer without records for a partition whose high watermark lies past the offset asked for (Tansu
  gives one when its storage read outlasts the wait, e.g. while a reader catches up on a long topic)
  means records are waiting: the repeat goes on at once;
- a Produce acknowledgement (or the sending of an `acks=0` produce) wakes the held fetches that ask for one
  of its partitions, and wakes them again shortly after the last produce (`REWAKE_AFTER_S`); a fetch of
  other partitions stays held (an idle stack's heartbeats and gauges produce now and then: waking every
  consumer for each of them cost more than all the rest of the idle stack);
- every other request and every response passes through unchanged, in order.

A record acknowledged before a fetch goes on is in Tansu's storage when that fetch reads it; one
acknowledged after wakes the connection's next fetch; a fetch for other partitions or offsets (records
consumed, a seek, a new assignment) is a new question and goes on at once. Only the non-flexible Fetch versions aiokafka
sends (0-11) are held; others pass through as they are.

Run: `python -m acefarm.devtools.wakeup_proxy LISTEN_PORT UPSTREAM_PORT` (both on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from acefarm.infra import eventloop

PRODUCE, FETCH = 0, 1
MAX_HELD_FETCH_VERSION = 11  # Fetch v12+ uses flexible (tagged) headers: passed through unchanged
# Tansu 0.6 answers without records when its storage read outlasts the fetch's wait (always at 0 ms,
# now and then at 1 ms under load); 10 ms leaves room, and it still answers within ms when data is there.
FORWARDED_WAIT_MS = 10
# Held fetches are woken again this long after the last produce, in case a fetch that went on just
# then was answered without the new record (a slow storage read under load, see FORWARDED_WAIT_MS).
REWAKE_AFTER_S = (0.02, 0.2)
HOST = "127.0.0.1"


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One size-prefixed Kafka frame (without its size); IncompleteReadError at the end of the stream."""
    size = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(size)


def body_offset(frame: bytes) -> int:
    """Where a v1 request header (api key, version, correlation id, client id) ends."""
    (client_id_length,) = struct.unpack_from(">h", frame, 8)
    return 10 + max(client_id_length, 0)


def fetch_wait_s(frame: bytes) -> float | None:
    """The max wait of a holdable Fetch request in seconds; None for anything else."""
    api_key, version = struct.unpack_from(">hh", frame)
    if api_key != FETCH or version > MAX_HELD_FETCH_VERSION:
        return None
    (wait_ms,) = struct.unpack_from(">i", frame, body_offset(frame) + 4)  # after replica_id
    return max(wait_ms, 0) / 1000


def _fetch_body(frame: bytes) -> tuple[int, int]:
    """A Fetch request's version and where its topics array starts."""
    _, version = struct.unpack_from(">hh", frame)
    # replica_id, max_wait, min_bytes; max_bytes (v3+); isolation_level (v4+); session id and epoch (v7+)
    return version, (
        body_offset(frame) + 12 + (4 if version >= 3 else 0) + (1 if version >= 4 else 0) + (8 if version >= 7 else 0)
    )


Partition = tuple[bytes, int]
"""A topic name (as bytes) and a partition number."""
EVERY_PARTITION: Partition = (b"", -1)
"""Stands for a produce whose partitions could not be read: it wakes every held fetch."""


def _walk(buf: bytes, offset: int, entry_length: Callable[[int], int]) -> Iterator[tuple[bytes, int]]:
    """(topic name, entry offset) of each partition entry of a topics array at `offset`: an int32 count, then per
    topic a name (int16 length) and an int32 count of partition entries, each `entry_length(its offset)` long."""
    (topic_count,) = struct.unpack_from(">i", buf, offset)
    offset += 4
    for _ in range(topic_count):
        (name_length,) = struct.unpack_from(">h", buf, offset)
        name = buf[offset + 2 : offset + 2 + name_length]
        (partition_count,) = struct.unpack_from(">i", buf, offset + 2 + name_length)
        offset += 6 + name_length
        for _ in range(partition_count):
            yield name, offset
            offset += entry_length(offset)


def produced_to(frame: bytes) -> frozenset[Partition]:
    """The partitions a Produce request writes to."""
    _, version = struct.unpack_from(">hh", frame)
    offset = body_offset(frame)
    if version >= 3:  # transactional_id (nullable string) comes first
        (length,) = struct.unpack_from(">h", frame, offset)
        offset += 2 + max(length, 0)

    def written(at: int) -> int:  # partition, records (int32 length, then the bytes)
        return 8 + max(struct.unpack_from(">i", frame, at + 4)[0], 0)

    return frozenset((name, struct.unpack_from(">i", frame, at)[0]) for name, at in _walk(frame, offset + 6, written))


def left_behind(response: bytes, version: int, asked: dict[Partition, int]) -> bool:
    """Whether a Fetch answer skipped records: a partition came back without records although its high
    watermark lies past the offset `asked` for it."""
    offset = 4 + (4 if version >= 1 else 0) + (6 if version >= 7 else 0)  # correlation id, throttle, error, session

    def records_at(at: int) -> int:  # partition, error, high watermark, [last stable, log start], [aborted], ...
        at += 14 + (8 if version >= 4 else 0) + (8 if version >= 5 else 0)
        if version >= 4:
            at += 4 + 16 * max(struct.unpack_from(">i", response, at)[0], 0)
        return at + (4 if version >= 11 else 0)

    def answered(at: int) -> int:
        end = records_at(at)
        return end - at + 4 + max(struct.unpack_from(">i", response, end)[0], 0)

    for name, at in _walk(response, offset, answered):
        partition, _, high_watermark = struct.unpack_from(">ihq", response, at)
        (size,) = struct.unpack_from(">i", response, records_at(at))
        if size <= 0 and high_watermark > asked.get((name, partition), high_watermark):
            return True
    return False


class Question(NamedTuple):
    """What a holdable Fetch asks for, read in one walk over its partitions."""

    entries: frozenset[tuple[bytes, bytes]]
    """One (topic, partition entry) pair per partition (its offsets and max bytes); a set, because aiokafka
    shuffles the partitions of every fetch."""
    offsets: dict[Partition, int]
    """The offset asked for, by (topic, partition)."""


def asked_for(frame: bytes) -> Question:
    """What a holdable Fetch asks for (`Question`)."""
    version, offset = _fetch_body(frame)
    epoch = 4 if version >= 9 else 0
    # partition, fetch_offset, partition_max_bytes; current_leader_epoch (v9+); log_start_offset (v5+)
    entry = 16 + epoch + (8 if version >= 5 else 0)
    entries: set[tuple[bytes, bytes]] = set()
    offsets: dict[Partition, int] = {}
    for name, at in _walk(frame, offset, lambda _: entry):
        entries.add((name, frame[at : at + entry]))
        offsets[(name, struct.unpack_from(">i", frame, at)[0])] = struct.unpack_from(">q", frame, at + 4 + epoch)[0]
    return Question(frozenset(entries), offsets)


def without_wait(frame: bytes) -> bytes:
    """The same Fetch request with its max wait cut to `FORWARDED_WAIT_MS`."""
    out = bytearray(frame)
    struct.pack_into(">i", out, body_offset(frame) + 4, FORWARDED_WAIT_MS)
    return bytes(out)


def expects_response(frame: bytes) -> bool:
    """False only for a Produce with `acks=0`, which the broker does not answer."""
    api_key, version = struct.unpack_from(">hh", frame)
    if api_key != PRODUCE:
        return True
    offset = body_offset(frame)
    if version >= 3:  # transactional_id (nullable string) comes first
        (length,) = struct.unpack_from(">h", frame, offset)
        offset += 2 + max(length, 0)
    (acks,) = struct.unpack_from(">h", frame, offset)
    return acks != 0


@dataclass
class _Connection:
    """What one client connection's two directions share."""

    awaiting: deque[tuple[int, int, frozenset[Partition]]] = field(default_factory=deque)
    """(api key, version, partitions produced to) of the requests sent on, in order."""
    fetched: dict[Partition, int] = field(default_factory=dict)
    """The offsets the last forwarded Fetch asked for."""
    behind: bool = False
    """Whether the last Fetch answer skipped records that are there."""


class WakeupProxy:
    """Forwards Kafka connections from `listen_port` to a broker on `upstream_port`, holding idle fetches."""

    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.produced: dict[Partition, int] = {}
        """How often each partition was produced to (and re-woken): a held fetch goes on when one of its
        partitions' counts moves."""
        self.fetches_forwarded = 0
        """Fetches sent on to the broker (held ones count once they go on)."""
        self._wake = asyncio.Event()
        self._recent: set[Partition] = set()
        self._rewakes: list[asyncio.TimerHandle | None] = [None] * len(REWAKE_AFTER_S)

    def stamp(self, partitions: Iterable[Partition]) -> int:
        """A number that changes whenever one of `partitions` is produced to."""
        return self.produced.get(EVERY_PARTITION, 0) + sum(self.produced.get(p, 0) for p in partitions)

    @staticmethod
    def _produced_to(frame: bytes) -> frozenset[Partition]:
        try:
            return produced_to(frame)
        except struct.error:  # a Produce this reader does not follow: it may have written anywhere
            return frozenset({EVERY_PARTITION})

    def _produce_seen(self, partitions: frozenset[Partition]) -> None:
        self._recent |= partitions
        self._wake_partitions(partitions)
        loop = asyncio.get_running_loop()
        for i, delay in enumerate(REWAKE_AFTER_S):  # trailing: re-armed by every produce
            pending = self._rewakes[i]
            if pending is not None:
                pending.cancel()
            self._rewakes[i] = loop.call_later(delay, self._rewake, i == len(REWAKE_AFTER_S) - 1)

    def _rewake(self, last: bool) -> None:
        self._wake_partitions(frozenset(self._recent))
        if last:
            self._recent.clear()

    def _wake_partitions(self, partitions: frozenset[Partition]) -> None:
        for partition in partitions:
            self.produced[partition] = self.produced.get(partition, 0) + 1
        self._wake.set()
        self._wake = asyncio.Event()

    async def serve_forever(self) -> None:
        """Accept connections until cancelled."""
        server = await asyncio.start_server(self._serve, HOST, self.listen_port)
        async with server:
            await server.serve_forever()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        connection = _Connection()
        directions = (
            asyncio.create_task(self._requests(client_reader, upstream_writer, connection)),
            asyncio.create_task(self._responses(upstream_reader, client_writer, connection)),
        )
        try:  # either side closing (or failing) ends the connection
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            for writer in (upstream_writer, client_writer):
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        seen = -1  # the stamp of its partitions when this connection's previous fetch went on
        asked: frozenset[tuple[bytes, bytes]] = frozenset()  # what that fetch asked for
        following: asyncio.Task[bytes] = asyncio.create_task(read_frame(reader))
        try:
            while True:
                frame = await following
                following = asyncio.create_task(read_frame(reader))
                wait_s = fetch_wait_s(frame)
                if wait_s is not None:
                    asking, offsets = asked_for(frame)
                    repeated = asking == asked and self.stamp(offsets) == seen and not connection.behind
                    if repeated and wait_s > 0:
                        await self._hold(following, wait_s, offsets.keys(), seen)
                    seen, asked, connection.fetched = self.stamp(offsets), asking, offsets
                    frame = without_wait(frame)
                    self.fetches_forwarded += 1
                api_key, version = struct.unpack_from(">hh", frame)
                partitions = self._produced_to(frame) if api_key == PRODUCE else frozenset()
                answered = expects_response(frame)
                if answered:
                    connection.awaiting.append((api_key, version, partitions))
                upstream.write(len(frame).to_bytes(4, "big") + frame)
                await upstream.drain()
                if not answered:  # an acks=0 produce: nothing will acknowledge it
                    self._produce_seen(partitions)
        finally:
            following.cancel()

    async def _hold(
        self, following: asyncio.Task[bytes], wait_s: float, partitions: Iterable[Partition], seen: int
    ) -> None:
        """Wait for a produce to one of `partitions` (their stamp moving from `seen`), the connection's next
        request or `wait_s`, whichever comes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not following.done() and self.stamp(partitions) == seen and (left := deadline - loop.time()) > 0:
            woken = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({woken, following}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()

    async def _responses(
        self, reader: asyncio.StreamReader, client: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        while True:
            frame = await read_frame(reader)
            api_key, version, partitions = connection.awaiting.popleft() if connection.awaiting else (None, 0, None)
            if api_key == FETCH and version <= MAX_HELD_FETCH_VERSION:
                try:
                    connection.behind = left_behind(frame, version, connection.fetched)
                except struct.error:  # an answer this reader does not follow: never hold on it
                    connection.behind = True
            client.write(len(frame).to_bytes(4, "big") + frame)
            await client.drain()
            if api_key == PRODUCE and partitions is not None:
                self._produce_seen(partitions)


def main(argv: list[str]) -> None:
    """Entry point: `python -m acefarm.devtools.wakeup_proxy LISTEN_PORT UPSTREAM_PORT`."""
    listen_port, upstream_port = (int(arg) for arg in argv)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(WakeupProxy(listen_port, upstream_port).serve_forever())


if __name__ == "__main__":
    main(sys.argv[1:])
