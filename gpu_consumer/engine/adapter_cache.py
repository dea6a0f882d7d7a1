"""A bounded on-disk cache of trained LoRA adapters, fetched from storage once per worker.

`LoraCache.resolve` is synchronous and thread-safe (the engine calls it from its worker thread); a
fetch runs its own short event loop with a fresh storage client. Least recently used adapters beyond
`max_adapters` are deleted from disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from pathlib import Path

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import open_storage
from acefarm.model.loras import MANIFEST, is_lora_id, lora_prefix, manifest_key

log = get_logger(__name__)

DEFAULT_MAX_ADAPTERS = 16


class LoraCache:
    """lora_id → local directory with the adapter files (fetched from storage on first use)."""

    def __init__(self, settings: Settings, root: Path | None = None, max_adapters: int = DEFAULT_MAX_ADAPTERS) -> None:
        self._settings = settings
        self.root = root or Path(tempfile.gettempdir()) / "acefarm-lora-cache"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_adapters = max(1, max_adapters)
        self._lock = threading.Lock()

    def resolve(self, lora_id: str) -> Path | None:
        """The adapter's local directory, fetching it if needed; None when no finished LoRA has that id."""
        if not is_lora_id(lora_id):
            return None
        with self._lock:
            local = self.root / lora_id
            if (local / MANIFEST).is_file():
                os.utime(local)
                return local
            fetched = asyncio.run(self._fetch(lora_id))
            if fetched is not None:
                self._evict(keep=lora_id)
            return fetched

    async def _fetch(self, lora_id: str) -> Path | None:
        storage = open_storage(self._settings)
        try:
            if await storage.stat(manifest_key(lora_id)) is None:
                return None
            staging = Path(tempfile.mkdtemp(prefix=f".{lora_id}-", dir=self.root))
            prefix = lora_prefix(lora_id)
            for info in await storage.list(prefix):
                name = info.key.removeprefix(prefix)
                if "/" not in name:
                    await storage.download_file(info.key, staging / name)
            if not (staging / MANIFEST).is_file():  # deleted while we fetched
                shutil.rmtree(staging, ignore_errors=True)
                return None
            target = self.root / lora_id
            await asyncio.to_thread(_install, staging, target)
            log.info("lora_cache.fetched", lora_id=lora_id)
            return target
        finally:
            await storage.close()

    def _evict(self, keep: str) -> None:
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in [p for p in entries if p.name != keep][self.max_adapters - 1 :]:
            shutil.rmtree(stale, ignore_errors=True)
            log.info("lora_cache.evicted", lora_id=stale.name)


def _install(staging: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
