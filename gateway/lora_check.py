"""The seam where `POST /generate` checks a `lora_id` before anything is queued.

A LoRA is usable once its trainer has stored `loras/{lora_id}/manifest.json`, so an unknown or
unfinished id is rejected here and never reaches a GPU. The LoRA module may refine this check
(e.g. read the manifest); `POST /generate` only calls `check_lora_id`.
"""

from __future__ import annotations

from acefarm.infra.storage import Storage
from gateway.errors import FieldError


def manifest_key(lora_id: str) -> str:
    """Storage key of a trained LoRA's manifest."""
    return f"loras/{lora_id}/manifest.json"


async def check_lora_id(storage: Storage, lora_id: str | None) -> None:
    """Raise `FieldError` (400) unless `lora_id` is None or names a finished LoRA in storage."""
    if lora_id is None:
        return
    if await storage.stat(manifest_key(lora_id)) is None:
        raise FieldError(
            "lora_id",
            f"no finished LoRA has the id {lora_id!r}; list them with GET /loras or wait for its training to succeed",
        )
