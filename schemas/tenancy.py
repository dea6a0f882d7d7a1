"""Who a request belongs to and how urgent it is: the anonymous owner and the queue priorities
(the owner id pattern is in `schemas.ids`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

ANONYMOUS: Final = "anonymous"
"""The owner of a request that names none (its fair-queue lane)."""


class Priority(StrEnum):
    """Queue priorities a request may ask for (a key allows some of them)."""

    HIGH = "high"
    NORMAL = "normal"
    BATCH = "batch"
