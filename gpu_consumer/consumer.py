"""The GPU consumer process: engine loaded once, one job at a time from the `gpu-workers` group."""

from __future__ import annotations

import asyncio
import time

from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.settings import Settings
from acefarm.runtime.group_loop import Shutdown
from acefarm.runtime.service import serve_jobs
from gpu_consumer.engine.base import Engine
from gpu_consumer.jobs import JobHandler
from schemas import topics

log = get_logger(__name__)

DEFAULT_GRACE_S = 30.0


def run_consumer(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S, static_membership: bool = False) -> None:
    """Run the GPU consumer until SIGTERM/SIGINT (blocking). See docs/consumer.md."""
    configure_logging("gpu-consumer", settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, grace_s=grace_s, static_membership=static_membership))
    except Exception:
        log.exception("consumer.crashed")  # uncommitted work is redelivered to the next consumer
        raise SystemExit(1) from None


def load_engine_timed(settings: Settings) -> Engine:
    """Load the engine chosen by `ENGINE` and log how long it took."""
    from gpu_consumer.engine.loader import load_engine

    started = time.monotonic()
    engine = load_engine(settings)
    log.info(
        "engine.loaded",
        engine=getattr(engine, "name", type(engine).__name__),
        seconds=round(time.monotonic() - started, 3),
        device=settings.device,
    )
    return engine


async def serve(
    settings: Settings,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    static_membership: bool = False,
    shutdown: Shutdown | None = None,
) -> None:
    """Load the engine, join the group and process jobs until shutdown is requested."""
    await serve_jobs(
        settings,
        name="consumer",
        topic=topics.GENERATION_REQUESTS,
        group_id=topics.GPU_WORKERS_GROUP,
        load=lambda: load_engine_timed(settings),
        make_handler=lambda engine, clients: JobHandler(engine=engine, clients=clients),
        grace_s=grace_s,
        static_membership=static_membership,
        shutdown=shutdown,
    )
