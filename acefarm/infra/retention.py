"""Retention of stored files: how long each storage prefix is kept, and the two ways it is enforced.

- S3 (compose, a farm): lifecycle rules on the bucket, one per prefix, set once by the deploy
  (`acefarm storage setup-lifecycle`); the object store deletes expired objects itself.
- Local storage (`acefarm dev`): `sweep` removes files older than their prefix's lifetime; the dev
  supervisor runs it every `RETENTION_SWEEP_INTERVAL_S` (`acefarm storage sweep` runs one pass).

Adapters (`loras/`) are never expired: they are deleted by their owner. Status rows are trimmed by
`streams` (`STATUS_RETENTION_DAYS`), not here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage, Storage
from schemas import storage_keys

if TYPE_CHECKING:
    from acefarm.infra.storage.s3 import S3Storage

DAY_S = 24 * 3600.0
RULE_ID_PREFIX = "acefarm-expire-"


@dataclass(frozen=True)
class RetentionRule:
    """Objects under `prefix` are deleted `days` after they were last written."""

    prefix: str
    days: float

    @property
    def rule_id(self) -> str:
        """The id of this rule in the bucket's lifecycle configuration."""
        return RULE_ID_PREFIX + self.prefix.strip("/")


def retention_rules(settings: Settings) -> list[RetentionRule]:
    """One rule per expiring prefix; a lifetime of 0 (keep forever) gives no rule."""
    lifetimes = (
        (storage_keys.OUTPUTS, settings.output_retention_days),
        (storage_keys.INPUTS, settings.input_retention_days),
        (storage_keys.DATASETS, settings.dataset_retention_days),
        (storage_keys.CHECKPOINTS, settings.checkpoint_retention_days),
        (storage_keys.ATTEMPTS, settings.attempt_retention_days),
    )
    return [RetentionRule(prefix, days) for prefix, days in lifetimes if days > 0]


def lifecycle_rules(rules: list[RetentionRule]) -> list[dict[str, Any]]:
    """S3 lifecycle `Rule` objects for `rules` (S3 counts whole days: a fraction is rounded up).

    Unfinished multipart uploads under each prefix are aborted after a day as well.
    """
    return [
        {
            "ID": rule.rule_id,
            "Filter": {"Prefix": rule.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": max(1, math.ceil(rule.days))},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for rule in rules
    ]


async def setup_lifecycle(storage: S3Storage, rules: list[RetentionRule]) -> list[dict[str, Any]]:
    """Install `rules` on the bucket, keeping lifecycle rules not made by acefarm; returns the bucket's rules."""
    foreign = [r for r in await storage.get_lifecycle() if not str(r.get("ID", "")).startswith(RULE_ID_PREFIX)]
    await storage.put_lifecycle([*foreign, *lifecycle_rules(rules)])
    return await storage.get_lifecycle()


async def sweep(storage: LocalStorage, rules: list[RetentionRule], now: float | None = None) -> dict[str, int]:
    """Delete local objects past their prefix's lifetime; returns how many went, per prefix."""
    at = time.time() if now is None else now
    return {rule.prefix: await storage.expire(rule.prefix, at - rule.days * DAY_S) for rule in rules}


async def delete_task_files(storage: Storage, task_id: str) -> int:
    """Delete every file kept about a task (results, inputs, its dataset and checkpoint); returns how many."""
    return sum([await storage.delete_prefix(prefix) for prefix in storage_keys.task_file_prefixes(task_id)])
