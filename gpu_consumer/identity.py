"""Who this worker is, as shown in `TaskStarted.worker` and used for static group membership."""

from __future__ import annotations

import os
import socket

from acefarm.settings import Settings


def worker_name(settings: Settings) -> str:
    """`WORKER_ID` when set, else `host:pid`; the device (or CUDA_VISIBLE_DEVICES) is appended when set."""
    base = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    if settings.device and settings.device != "auto":
        return f"{base}/{settings.device}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return f"{base}/cuda-visible:{visible}"
    return base
