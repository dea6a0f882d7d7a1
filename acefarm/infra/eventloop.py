"""How every acefarm process runs its event loop: uvloop's (libuv), which spends less CPU per wake-up and per
socket read than asyncio's own loop — what an idle service mostly does."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh uvloop event loop (like `asyncio.run`)."""
    return uvloop.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh uvloop event loop, for code that drives the loop itself (faust)."""
    return uvloop.new_event_loop()
