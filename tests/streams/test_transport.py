"""The fixes to faust's fetch: records of paused partitions are never handed over, nor fetched by the client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.settings import Settings
from streams.app import create_app
from streams.transport import SnapshotConsumer, SnapshotTransport, fetch_only

CHANGELOG = TP("acefarm-streams-task-status-changelog", 0)
STREAM = TP("acefarm.task.events", 0)


class FakeThread:
    """Stands in for faust's consumer thread running aiokafka's `Fetcher.fetched_records`.

    Like aiokafka, it returns the buffered records of every partition in `partitions`, and of
    every partition when that set is empty; `during_wait` runs while it waits for data, which is
    when faust may pause or resume partitions in the main thread.
    """

    def __init__(self, during_wait: Callable[[], None]) -> None:
        self.buffered = {CHANGELOG: ["changelog record"], STREAM: ["stream record"]}
        self.during_wait = during_wait
        self.calls = 0

    async def getmany(self, partitions: Any, timeout: float) -> dict[TP, list[str]]:  # noqa: ASYNC109
        self.calls += 1
        await asyncio.sleep(0)
        self.during_wait()
        return {tp: recs for tp, recs in self.buffered.items() if not partitions or tp in partitions}


def make_consumer(cls: type[aiokafka_driver.Consumer], thread: FakeThread) -> Any:
    consumer = object.__new__(cls)  # only `_getmany` is exercised: no broker, no service start
    consumer._thread = thread
    return consumer


@pytest.mark.parametrize(("cls", "handed_over"), [(aiokafka_driver.Consumer, True), (SnapshotConsumer, False)])
async def test_partitions_paused_during_a_fetch(cls: type[aiokafka_driver.Consumer], handed_over: bool) -> None:
    # End of table recovery: the fetch starts with only the changelog active, then faust pauses it
    # (the live set is empty) before resuming the stream partitions. faust's own consumer passes the
    # live set, so the fetch hands over the still-paused stream partition's records, which faust's
    # getmany then drops (their positions already advanced); the snapshot consumer does not.
    active = {CHANGELOG}
    consumer = make_consumer(cls, FakeThread(during_wait=active.clear))
    records = await consumer._getmany(active_partitions=active, timeout=1.0)
    assert CHANGELOG in records
    assert (STREAM in records) is handed_over


async def test_no_active_partition_fetches_nothing() -> None:
    thread = FakeThread(during_wait=lambda: None)
    consumer = make_consumer(SnapshotConsumer, thread)
    assert await consumer._getmany(active_partitions=set(), timeout=1.0) == {}
    assert thread.calls == 0
    assert set(await consumer._getmany(active_partitions=None, timeout=1.0)) == {CHANGELOG, STREAM}


async def test_streams_app_uses_the_snapshot_transport(tmp_path: Path) -> None:
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9", output_dir=tmp_path), tmp_path)
    assert isinstance(app.transport, SnapshotTransport)
    assert app.transport.Consumer is SnapshotConsumer


async def test_the_client_fetches_only_the_partitions_faust_asks_for(broker: EmbeddedBroker) -> None:
    # faust's own pause never reaches the client: it kept fetching the tables' changelogs (this worker's
    # own writes), left them unread, and held every next fetch back 100 ms. fetch_only mirrors faust's set.
    topic = f"fetch-only-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    await consumer.start()
    try:
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([first, second])
        fetch_only(consumer, {TP(topic, 0)})
        assert consumer.paused() == {second}
        fetch_only(consumer, {TP(topic, 1)})
        assert consumer.paused() == {first}
        fetch_only(consumer, {TP(topic, 0), TP(topic, 1)})
        assert consumer.paused() == set()
        await consumer.getmany(timeout_ms=100)  # aiokafka cancels its own reset task if stopped at once
    finally:
        await consumer.stop()
