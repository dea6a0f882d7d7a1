"""faust's aiokafka transport with a fix for records silently lost right after table recovery.

The race (faust-streaming 0.15.3 with aiokafka 0.14):

1. faust's fetcher asks the consumer thread for records with `Consumer._getmany(active_partitions)`,
   passing its *live*, mutable set of active partitions. aiokafka's `Fetcher.fetched_records`
   runs in the consumer thread, waits up to a second for new data and then re-reads that set.
2. When table recovery finishes, faust pauses the changelog partitions (the set becomes empty) and
   only a few awaits later (`on_recovery_completed`, after the tables' recover callbacks) resumes the
   stream partitions.
3. aiokafka treats an empty partition set as "every partition": if a fetch response lands in that
   window, `fetched_records` hands back the buffered records of the *still paused* stream
   partitions and advances their positions past them.
4. faust's `Consumer.getmany` then drops every record whose partition is not active, without a log
   line. The positions are gone too: the seek to committed offsets that follows only moves
   partitions that have a committed offset, so a partition never committed (a fresh group, or a
   worker killed before its first commit) never sees those records again.

Seen as: a restarted worker rebuilds its tables, logs "Worker ready" and then folds nothing,
because the events it was waiting for were handed over and discarded in that window (about one
restart in six on the embedded broker, where all of this takes a few milliseconds).

A second change: faust hardcodes `fetch_max_wait_ms=1500` for its worker consumer; on a broker that does
not wake a waiting fetch when data arrives (Tansu, often), every fold waited up to 1.5 s. The consumer
thread here uses `KAFKA_FETCH_MAX_WAIT_MS`, like every other acefarm consumer.

The fix: hand the consumer thread an immutable snapshot of the active partitions taken when the
fetch is requested (faust checks that set is non-empty just before), so aiokafka returns only
records of partitions that were active at that moment and never "all partitions".

A third change: faust's `pause_partitions` only edits its own set of active partitions; the Kafka client
keeps fetching the others. After recovery those are the tables' changelog partitions, which this worker
writes on every fold: the client fetched its own writes back, never handed them out, and — while such
records sit unread — aiokafka sends no fetch to that broker for 100 ms (its prefetch backoff). Every
fold held the next event up to 100 ms (half the idle jobs' snapshots came ~100 ms late). Before each
fetch the consumer thread now pauses, in the client too, the assigned partitions faust does not ask for,
and resumes the ones it asks for again.
"""

from __future__ import annotations

from collections.abc import Set

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.transports import TransportT

from acefarm.infra.kafka import FETCHER_WAKE_MS

DEFAULT_FETCH_MAX_WAIT_MS = 1500


class ShortWaitConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread with the app's fetch wait instead of the hardcoded 1500 ms."""

    def _create_worker_consumer(self, transport: aiokafka_driver.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts its fetcher
        consumer._consumer_timeout = FETCHER_WAKE_MS / 1000  # ditto (see acefarm.infra.kafka.FETCHER_WAKE_MS)
        return consumer

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109
        max_records: int | None = None,
    ) -> RecordMap:
        """faust's fetch, with the client fetching only the partitions asked for (see the module docstring)."""
        fetch_only(consumer, active_partitions)
        return await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)


def fetch_only(consumer: AIOKafkaConsumer, wanted: Set[TP]) -> None:
    """Pause `consumer`'s assigned partitions outside `wanted` and resume the paused ones in it."""
    wanted_tps = {TopicPartition(tp.topic, tp.partition) for tp in wanted}
    paused = consumer.paused()
    idle = consumer.assignment() - wanted_tps - paused
    back = paused & wanted_tps
    if idle:
        consumer.pause(*idle)
    if back:
        consumer.resume(*back)


class SnapshotConsumer(aiokafka_driver.Consumer):
    """The aiokafka consumer, fetching for a frozen copy of the active partitions."""

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        """The consumer thread, with the app's fetch wait."""
        return ShortWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Set[TP] | None, timeout: float) -> RecordMap:  # noqa: ASYNC109
        """Records for the partitions active now; nothing when none is (never all partitions)."""
        if active_partitions is None:  # a client-only app reads everything: faust passes None
            return await super()._getmany(None, timeout)
        snapshot = frozenset(active_partitions)
        if not snapshot:
            return {}
        return await super()._getmany(snapshot, timeout)  # type: ignore[arg-type]  # a Set is all it reads


class SnapshotTransport(aiokafka_driver.Transport):
    """faust's `kafka://` transport using `SnapshotConsumer`."""

    Consumer = SnapshotConsumer


class StreamsApp(faust.App):
    """A faust app whose consumer uses `SnapshotTransport` (the producer transport is unchanged)."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    """How long the worker consumer's fetch may wait for data (set from KAFKA_FETCH_MAX_WAIT_MS)."""

    def _new_transport(self) -> TransportT:
        """The consumer transport: faust's own, with the snapshot fix."""
        return SnapshotTransport(self.conf.broker_consumer, self)
