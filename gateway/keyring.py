"""Every API key of the farm, in memory, read from the compacted `acefarm.api.keys` topic.

Each gateway replica reads the whole topic at start and follows it, so a key created or revoked by
`acefarm keys` reaches every replica within one fetch (well under a second), and keys survive
restarts because the topic is the store. Checking a key costs a dictionary lookup and one SHA-256.
"""

from __future__ import annotations

import asyncio

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.settings import Settings
from gateway.auth import Principal
from schemas import topics
from schemas.keys import ApiKeyRecord, KeyTable, key_id_of


class KeyRing:
    """The farm's keys (a `KeyTable`) kept current from the API key topic, answering who a secret is."""

    def __init__(self, settings: Settings) -> None:
        self.table = KeyTable()
        self.reader = CompactedReader(settings, topics.API_KEYS, self.table.apply, name="keyring")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def caught_up(self) -> asyncio.Event:
        """Set once every key that existed at start is loaded (gate readiness on it)."""
        return self.reader.caught_up

    async def start(self) -> None:
        """Start reading the topic (it must exist: `ensure_topics`)."""
        await self.reader.start()

    async def stop(self) -> None:
        """Stop following the topic."""
        await self.reader.stop()

    def find(self, secret: str) -> ApiKeyRecord | None:
        """The record whose secret this is, revoked or not; None for an unknown or wrong secret."""
        key_id = key_id_of(secret)
        record = self.table.get(key_id) if key_id else None
        return record if record is not None and record.matches(secret) else None

    def authenticate(self, secret: str) -> Principal | None:
        """Who this secret belongs to; None when it is unknown, wrong or revoked."""
        record = self.find(secret)
        if record is None or record.revoked:
            return None
        return Principal.of_record(record)
