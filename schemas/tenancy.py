"""Who a request belongs to and how urgent it is: the owner id format and the queue priorities."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

OWNER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
"""An owner id: the gateway stamps the API key's owner; direct Kafka producers set their own."""

ANONYMOUS: Final = "anonymous"
"""The owner of a request that names none (its fair-queue lane)."""


class Priority(StrEnum):
    """Queue priorities a request may ask for (a key allows some of them)."""

    HIGH = "high"
    NORMAL = "normal"
    BATCH = "batch"
