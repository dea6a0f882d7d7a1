"""A bounded on-disk cache of trained LoRA adapters, fetched from storage once per worker.

`LoraCache.resolve` is synchronous and thread-safe: the engine calls it from its worker thread with
the job's `BlockingStorage` (storage calls run on the event loop through the job's portal). Least
recently used adapters beyond `max_adapters` are deleted from disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import ADAPTER_CACHE
from acefarm.model.loras import is_lora_id
from acefarm.runtime.portal import BlockingStorage
from schemas.storage_keys import MANIFEST, lora_prefix, manifest_key

log = get_logger(__name__)

DEFAULT_MAX_ADAPTERS = 16


class LoraCache:
    """lora_id → local directory with the adapter files (fetched from storage on first use)."""

    def __init__(self, root: Path | None = None, max_adapters: int = DEFAULT_MAX_ADAPTERS) -> None:
        self.root = root or Path(tempfile.gettempdir()) / "acefarm-lora-cache"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_adapters = max(1, max_adapters)
        self._lock = threading.Lock()

    def resolve(self, lora_id: str, storage: BlockingStorage | None) -> Path | None:
        """The adapter's local directory, fetching it from `storage` if needed; None when no finished
        LoRA has that id (or it is not cached and there is no storage to fetch it from)."""
        if not is_lora_id(lora_id):
            return None
        with self._lock:
            local = self.root / lora_id
            if (local / MANIFEST).is_file():
                os.utime(local)
                ADAPTER_CACHE.labels("hit").inc()
                return local
            ADAPTER_CACHE.labels("miss").inc()
            if storage is None:
                return None
            fetched = self._fetch(lora_id, storage)
            if fetched is not None:
                self._evict(keep=lora_id)
            return fetched

    def _fetch(self, lora_id: str, storage: BlockingStorage) -> Path | None:
        if storage.stat(manifest_key(lora_id)) is None:
            return None
        staging = Path(tempfile.mkdtemp(prefix=f".{lora_id}-", dir=self.root))
        try:
            prefix = lora_prefix(lora_id)
            for info in storage.list(prefix):
                name = info.key.removeprefix(prefix)
                if "/" not in name:
                    storage.download_file(info.key, staging / name)
            if not (staging / MANIFEST).is_file():  # deleted while we fetched
                return None
            target = self.root / lora_id
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a leftover after a failure
        log.info("lora_cache.fetched", lora_id=lora_id)
        return target

    def _evict(self, keep: str) -> None:
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in [p for p in entries if p.name != keep][self.max_adapters - 1 :]:
            shutil.rmtree(stale, ignore_errors=True)
            log.info("lora_cache.evicted", lora_id=stale.name)
