"""Graceful stop on SIGTERM/SIGINT: the first signal stops taking jobs, a second abandons the current one."""

from __future__ import annotations

import asyncio
import signal

from acefarm.logging import get_logger

log = get_logger(__name__)


class Shutdown:
    """Signal state shared by the consumer loop."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.abandon = asyncio.Event()

    def request(self, reason: str = "requested") -> None:
        """Stop taking jobs; a second request abandons the running job."""
        if self.requested.is_set():
            if not self.abandon.is_set():
                log.warning("consumer.abandoning_job", reason=reason)
            self.abandon.set()
            return
        log.info("consumer.stopping", reason=reason)
        self.requested.set()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT on the running loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request, sig.name)
