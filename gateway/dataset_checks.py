"""Dataset zip checks for `POST /train/lora`: in a child process (`validate_dataset_zip_isolated`), at most
`DATASET_CHECK_CONCURRENCY` at once per gateway (503 + `Retry-After` beyond), stopped when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.model.dataset_sandbox import validate_dataset_zip_isolated
from acefarm.model.datasets import DatasetLimits
from schemas.training import TrackInfo

log = get_logger(__name__)

BUSY_RETRY_AFTER_S = 10


class ClientGone(HTTPException):
    """The client disconnected while its dataset was being checked (answered to nobody)."""

    status_code = 400
    detail = "the client disconnected before its dataset was checked"


class DatasetChecks:
    """Runs dataset checks in child processes, at most `limit` at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.dataset_check_concurrency
        self.running = 0

    def reserve(self) -> None:
        """Take a slot for one check, or raise the 503 that says to retry later; release with `release`."""
        if self.running >= self.limit:
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"{self.running} dataset checks are running (DATASET_CHECK_CONCURRENCY); "
                f"retry in {BUSY_RETRY_AFTER_S} s",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        self.running += 1

    def release(self) -> None:
        """Give back a slot taken by `reserve`."""
        self.running -= 1

    async def check(self, zip_path: Path, request: Request[Any, Any, Any]) -> list[TrackInfo]:
        """The zip's tracks (`DatasetError` when invalid), checked in a child with the configured memory and
        time limits; raises `ClientGone` (the child killed) when the client disconnects first."""
        settings = self.settings
        checking = asyncio.ensure_future(
            validate_dataset_zip_isolated(
                zip_path,
                DatasetLimits.from_settings(settings),
                timeout_s=settings.dataset_check_timeout_s,
                memory_bytes=settings.dataset_check_memory_bytes,
            )
        )
        watching = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((checking, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (checking, watching):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(checking, watching, return_exceptions=True)
        if checking.cancelled():
            log.info("gateway.dataset_check_abandoned", reason="client disconnected")
            raise ClientGone
        return checking.result()


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Return once the client has gone (the body is read by then, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.1)  # a stray empty body message: keep listening without spinning
