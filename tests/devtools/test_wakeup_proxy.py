"""The embedded broker's wake-up proxy: a long-polling consumer sees a record at once, not after its wait."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.fetch import FetchRequest_v4, FetchRequest_v11, FetchResponse_v4, FetchResponse_v11
from aiokafka.protocol.produce import ProduceRequest_v7

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.devtools.wakeup_proxy import (
    FORWARDED_WAIT_MS,
    WakeupProxy,
    asked_for,
    fetch_wait_s,
    left_behind,
    produced_to,
    without_wait,
)

LONG_WAIT_MS = 20_000


def fetch_frame(partitions: list[tuple[int, int]]) -> bytes:
    """A Fetch v4 request as aiokafka frames it (header v1, then the body), for `(partition, offset)`."""
    request = FetchRequest_v4(-1, LONG_WAIT_MS, 1, 1024, 0, [("t", [(p, o, 1024) for p, o in partitions])])
    client_id = b"aiokafka"
    header = struct.pack(">hhih", 1, 4, 7, len(client_id)) + client_id
    return header + request.encode()


def test_a_fetch_is_read_as_its_partitions_in_any_order_and_its_wait_cut() -> None:
    frame = fetch_frame([(0, 5), (1, 9)])
    assert fetch_wait_s(frame) == LONG_WAIT_MS / 1000
    assert asked_for(frame) == asked_for(fetch_frame([(1, 9), (0, 5)]))
    assert asked_for(frame) != asked_for(fetch_frame([(0, 6), (1, 9)]))
    assert fetch_wait_s(without_wait(frame)) == FORWARDED_WAIT_MS / 1000


def fetch_v11_frame(partitions: list[tuple[int, int]]) -> bytes:
    """A Fetch v11 request (leader epoch and log start offset per partition)."""
    entries = [(p, -1, o, 0, 1024) for p, o in partitions]
    request = FetchRequest_v11(-1, LONG_WAIT_MS, 1, 1024, 0, 0, -1, [("t", entries)], [], "")
    client_id = b"aiokafka"
    return struct.pack(">hhih", 1, 11, 7, len(client_id)) + client_id + request.encode()


def answer_v4(partitions: list[tuple[int, int, bytes]]) -> bytes:
    """A Fetch v4 answer (response header, then the body) for `(partition, high watermark, records)`."""
    body = FetchResponse_v4(0, [("t", [(p, 0, hw, hw, None, records) for p, hw, records in partitions])])
    return struct.pack(">i", 7) + body.encode()


def answer_v11(partitions: list[tuple[int, int, bytes]]) -> bytes:
    """A Fetch v11 answer: log start offset, aborted transactions and preferred replica per partition."""
    entries = [(p, 0, hw, hw, 0, [], -1, records) for p, hw, records in partitions]
    return struct.pack(">i", 7) + FetchResponse_v11(0, 0, 0, [("t", entries)]).encode()


def test_an_answer_without_records_below_the_high_watermark_means_records_are_waiting() -> None:
    for frame, answer in ((fetch_frame([(0, 5), (1, 9)]), answer_v4), (fetch_v11_frame([(0, 5), (1, 9)]), answer_v11)):
        version = struct.unpack_from(">h", frame, 2)[0]
        asked = asked_for(frame).offsets
        assert asked == {(b"t", 0): 5, (b"t", 1): 9}
        assert not left_behind(answer([(0, 5, b""), (1, 9, b"")]), version, asked), "nothing new: hold the repeat"
        assert left_behind(answer([(0, 5, b""), (1, 40, b"")]), version, asked), "partition 1 has 31 unread"
        assert not left_behind(answer([(0, 5, b""), (1, 40, b"some records")]), version, asked)


async def produce_and_time(bootstrap: str, topic: str, samples: int) -> list[float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=LONG_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        await consumer.getmany(timeout_ms=500)  # positioned, now long-polling
        seconds = []
        for i in range(samples):
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            await producer.send_and_wait(topic, b"x", key=str(i).encode())
            while not any((await consumer.getmany(timeout_ms=LONG_WAIT_MS)).values()):
                pass
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        await producer.stop()
        await consumer.stop()


def test_a_long_polling_consumer_sees_each_record_long_before_its_wait_runs_out() -> None:
    topic = f"wakeup-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker() as broker:

        async def run() -> list[float]:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
            await admin.start()
            await admin.create_topics([NewTopic(topic, 4, 1)])
            await admin.close()
            return await produce_and_time(broker.bootstrap_servers, topic, samples=10)

        seconds = asyncio.run(run())
    # Tansu alone would answer a 20 s long poll only at its next storage check (seconds later).
    assert max(seconds) < 1.0, seconds


def test_a_produce_is_read_as_the_partitions_it_writes_to() -> None:
    request = ProduceRequest_v7(None, -1, 1000, [("a", [(0, b"x" * 30), (3, b"y")]), ("b", [(1, b"")])])
    client_id = b"aiokafka"
    frame = struct.pack(">hhih", 0, 7, 9, len(client_id)) + client_id + request.encode()
    assert produced_to(frame) == {(b"a", 0), (b"a", 3), (b"b", 1)}


async def test_produces_to_other_topics_leave_a_held_fetch_held() -> None:
    quiet, busy = f"quiet-{uuid.uuid4().hex[:8]}", f"busy-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker() as broker:
        assert broker.proxy is not None
        broker.proxy.terminate()  # this test's own proxy, in process, takes its port
        broker.proxy.wait()
        proxy = WakeupProxy(broker.port, broker.tansu_port)
        serving = asyncio.create_task(proxy.serve_forever())
        await asyncio.sleep(0.2)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        await admin.create_topics([NewTopic(name, 1, 1) for name in (quiet, busy)])
        await admin.close()
        consumer = AIOKafkaConsumer(quiet, bootstrap_servers=broker.bootstrap_servers, fetch_max_wait_ms=LONG_WAIT_MS)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await consumer.start()
        await producer.start()
        try:
            await consumer.getmany(timeout_ms=500)  # positioned, now long-polling
            await asyncio.sleep(0.5)
            before = proxy.fetches_forwarded
            for i in range(20):
                await producer.send_and_wait(busy, b"elsewhere", key=str(i).encode())
            await asyncio.sleep(0.5)  # past the re-wakes after the last produce
            assert proxy.fetches_forwarded == before, "no record for it: the quiet consumer's fetch stayed held"
            await producer.send_and_wait(quiet, b"here")
            got = await consumer.getmany(timeout_ms=5000)
            assert [r.value for records in got.values() for r in records] == [b"here"]
            assert proxy.fetches_forwarded > before
        finally:
            await producer.stop()
            await consumer.stop()
            serving.cancel()
