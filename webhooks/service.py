"""The webhook service process: `acefarm webhooks` runs `run_webhooks`."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

from acefarm.infra import eventloop
from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.metrics import serving_metrics
from acefarm.infra.settings import Settings
from webhooks.attempts import Attempts
from webhooks.follow import StatusFollower
from webhooks.retries import RetryReader
from webhooks.sender import Sender

log = get_logger(__name__)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Follow the status stream and the retry topic until `stop` is set; then finish running attempts
    (for up to WEBHOOK_TIMEOUT_S), commit what finished and leave both groups."""
    await ensure_topics(settings)
    async with AsyncExitStack() as stack:
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        sender = Sender(settings)
        await sender.start()
        stack.push_async_callback(sender.close)
        attempts = Attempts(settings, producer, sender)
        follower = StatusFollower(settings, attempts, producer, stop)
        reader = RetryReader(settings, attempts, producer, stop)
        for member in (follower.member, reader.member):
            await member.start()
            stack.push_async_callback(member.stop, settings.webhook_timeout_s + 1)
        log.info("webhooks.started", allow_private=settings.webhook_allow_private)
        async with asyncio.TaskGroup() as group:  # one failing stops the other: the process exits and restarts
            group.create_task(follower.run())
            group.create_task(reader.run())
    log.info("webhooks.stopped")


def run_webhooks(settings: Settings) -> None:
    """Run the webhook service until SIGINT/SIGTERM (the `acefarm webhooks` command)."""
    configure_logging("webhooks", settings.log_level, settings.log_format)
    if settings.webhook_secret is None:
        raise SystemExit("WEBHOOK_SECRET is not set: webhooks are signed with it (32+ characters)")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with serving_metrics(settings.metrics_port, settings.metrics_host):
            await serve(settings, stop)

    eventloop.run(main())
