"""The faust wiring: fold the task-keyed topics into the status table and publish snapshots.

The four source topics (plus the request topic of each model pool) share one partition count and
are keyed by task id, so they are co-partitioned with the table: every event of a task reaches the
worker that owns its row.
Per change, the snapshot is published to `TASK_STATUS` (acknowledged) before the row is written,
and each row keeps, per source partition, the offset of the last record that changed it, so a
restarted worker that re-reads uncommitted records skips what it already folded and a change whose
snapshot was lost in a crash is folded (and published) again. Records that change nothing are
re-applied harmlessly (the fold only moves forward), so they cost no table write; a second, small
table remembers the offsets of dead-lettered records so they are dead-lettered once. Those decisions
are `streams.fold.fold_record`'s; this module only reads and writes the tables and topics.

Retention: every `STATUS_TRIM_INTERVAL_S` a timer deletes the rows of tasks that finished more than
`STATUS_RETENTION_DAYS` ago on the partitions this worker owns, publishing a tombstone for each on the
compacted status topic first (so compaction forgets the task too, and gateways drop it). It holds the
fold's lock while it does, so a row never changes between its check and its deletion.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import faust
from faust.types import EventT, StreamT
from faust.types.auth import CredentialsT

from acefarm.infra import eventloop
from acefarm.infra.kafka import client_options, ensure_topics
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.metrics import DEAD_LETTERS, FOLDS, TRIMMED, serving_metrics
from acefarm.infra.pools import request_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import DeadLetter, TaskStatusRecord
from streams.fold import SOURCE_TOPICS, Change, Reject, SourceRecord, dumps, fold_record, loads
from streams.retention import DAY_S, FinishedIndex, row_partition
from streams.transport import StreamsApp

APP_ID = "acefarm-streams"
STATUS_TABLE = "task-status"
DEAD_LETTERED_TABLE = "dead-lettered-offsets"
TRIM_BATCH = 1000
"""Most rows one trim tick deletes (the rest wait for the next tick)."""

log = get_logger(__name__)


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """faust credentials for the configured Kafka security protocol (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    ssl_context = client_options(settings).get("ssl_context")
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            ssl_context=ssl_context,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(settings: Settings, datadir: Path) -> faust.App:
    """The streams faust app for `settings`, keeping its (memory) table data under `datadir`."""
    # StreamsApp: faust's app with a fix for records lost right after table recovery (streams/transport.py).
    app = StreamsApp(
        APP_ID,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        # At-least-once keeps the producer non-idempotent (Tansu rejects InitProducerId);
        # the fold and the offsets table make redelivery harmless.
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        autodiscover=False,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    folded = dict.fromkeys([*SOURCE_TOPICS, *request_topics(settings)])  # model pools' request topics too
    source = app.topic(*folded, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    status_topic = app.topic(topics.TASK_STATUS, key_serializer="raw", value_serializer="raw")
    dead_topic = app.topic(topics.DEAD_LETTER, key_serializer="raw", value_serializer="raw")
    statuses = app.Table(STATUS_TABLE, default=None, key_type=str, value_type=str)
    dead_lettered = app.Table(DEAD_LETTERED_TABLE, default=None, key_type=str, value_type=int)
    started_at = time.monotonic()
    lock = asyncio.Lock()  # one fold or one trim at a time
    finished = FinishedIndex()
    rescan = True  # the index is rebuilt from the table after each recovery

    async def send(topic: faust.types.TopicT, key: str, value: bytes | None) -> None:
        """Publish now (not on commit) and wait for the broker's acknowledgement."""
        await (await topic.send(key=key.encode(), value=value, force=True))

    async def fold_one(event: EventT) -> None:
        """Carry out `fold_record`'s decision for one source record."""
        async with lock:
            await _fold_one(event)

    async def _fold_one(event: EventT) -> None:
        message = event.message
        record = SourceRecord(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key if isinstance(message.key, bytes) else None,
            value=message.value if isinstance(message.value, bytes) else None,
        )
        match fold_record(record, lambda task_id: loads(statuses.get(task_id)), dead_lettered.get(record.mark)):
            case Reject(error):
                letter = DeadLetter.of_record(record, error, APP_ID)
                await send(dead_topic, letter.task_id, letter.to_bytes())
                dead_lettered[record.mark] = record.offset
                DEAD_LETTERS.labels(APP_ID).inc()
                log.warning("streams.dead_letter", topic=record.topic, offset=record.offset, error=error[:300])
            case Change(parsed, row):
                new = row.status
                await send(status_topic, new.task_id, TaskStatusRecord(task_id=new.task_id, status=new).to_bytes())
                statuses[new.task_id] = dumps(row)
                finished.note(new)
                FOLDS.labels(parsed.type).inc()
                log.info(
                    "streams.status",
                    task_id=new.task_id,
                    status=new.status.value,
                    version=new.version,
                    event_type=parsed.type,
                )

    @app.agent(source, name="fold-status")
    async def fold_status(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            await fold_one(event)

    async def trim_one(task_id: str, owned: set[int]) -> bool:
        """Delete `task_id`'s row and tombstone its snapshot, if it is still final and on a partition we own."""
        finished.forget(task_id)
        row = loads(statuses.get(task_id))
        if row is None or not row.status.status.is_final or (partition := row_partition(row.marks)) not in owned:
            return False
        await send(status_topic, task_id, None)
        statuses.send_changelog(partition, task_id, None, value_serializer="raw")
        del statuses.data[task_id]
        return True

    if settings.status_retention_days > 0:

        @app.timer(interval=settings.status_trim_interval_s, name="trim-status")
        async def trim_statuses() -> None:
            nonlocal rescan
            try:
                async with lock:
                    if rescan:
                        finished.rescan(row.status for row in map(loads, statuses.values()) if row is not None)
                        rescan = False
                    due = finished.due(time.time(), settings.status_retention_days * DAY_S, TRIM_BATCH)
                    owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in SOURCE_TOPICS}
                    trimmed = [task_id for task_id in due if await trim_one(task_id, owned)]
            except Exception as error:  # a failed trim is retried next tick; it must never stop the fold
                rescan = True
                log.warning("streams.trim_failed", error=str(error)[:300])
                return
            if trimmed:
                TRIMMED.inc(len(trimmed))
                log.info("streams.trimmed", tasks=len(trimmed), first=trimmed[0])

    @statuses.on_recover
    async def recovered() -> None:
        nonlocal rescan
        rescan = True
        log.info("streams.ready", tasks=len(statuses), startup_s=round(time.monotonic() - started_at, 2))

    return app


def run_streams(settings: Settings) -> NoReturn:
    """Run one streams worker until SIGINT/SIGTERM (the `acefarm streams` command); metrics on `METRICS_PORT`."""
    configure_logging("streams", settings.log_level, settings.log_format)
    loop = eventloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    datadir = Path(tempfile.mkdtemp(prefix="acefarm-streams-"))
    app = create_app(settings, datadir)
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.spinner = None  # no terminal spinner: logs are ours (structlog)
    log.info("streams.starting", bootstrap=settings.kafka_bootstrap_servers, partitions=settings.kafka_partitions)
    try:
        with serving_metrics(settings.metrics_port, settings.metrics_host):
            worker.execute_from_commandline()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
