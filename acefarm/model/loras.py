"""Where trained LoRA adapters live in storage, and reading their manifests (shared, torch-free).

Layout: `loras/{lora_id}/` holds the adapter in diffusers' LoRA format (`pytorch_lora_weights.safetensors`,
PEFT config in its metadata) and `manifest.json` (`LoraManifest`), written last: a manifest means the
adapter is complete. Training state lives under `checkpoints/{task_id}/` until the job ends.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import unicodedata

from pydantic import ValidationError

from acefarm.infra.storage import Storage
from schemas.ids import LORA_ID_PATTERN
from schemas.storage_keys import LORAS, MANIFEST, lora_prefix, manifest_key
from schemas.training import LoraManifest

_LORA_ID = re.compile(LORA_ID_PATTERN)


def is_lora_id(value: str) -> bool:
    """Whether `value` has the shape of a lora id (`schemas.generation.LORA_ID_PATTERN`)."""
    return _LORA_ID.fullmatch(value) is not None


def new_lora_id(style_name: str) -> str:
    """A slug of the style name plus a short random suffix, e.g. `dreamy-synthwave-3f9a1c`."""
    ascii_name = unicodedata.normalize("NFKD", style_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:48].strip("-") or "style"
    return f"{slug}-{secrets.token_hex(3)}"


async def read_manifest(storage: Storage, lora_id: str) -> LoraManifest | None:
    """The adapter's manifest, or None when the id is unknown, unfinished or unreadable."""
    if not is_lora_id(lora_id):
        return None
    try:
        raw = await storage.get_bytes(manifest_key(lora_id))
    except FileNotFoundError:
        return None
    try:
        return LoraManifest.model_validate_json(raw)
    except ValidationError:
        return None


async def write_manifest(storage: Storage, manifest: LoraManifest) -> None:
    """Store (or replace) an adapter's manifest."""
    await storage.put_bytes(
        manifest_key(manifest.lora_id), manifest.model_dump_json(indent=2).encode(), "application/json"
    )


async def list_manifests(storage: Storage) -> list[LoraManifest]:
    """Every finished adapter's manifest, newest first."""
    keys = [o.key for o in await storage.list(LORAS) if o.key.endswith(f"/{MANIFEST}")]
    found = await asyncio.gather(*(read_manifest(storage, key.split("/")[1]) for key in keys))
    manifests = [m for m in found if m is not None]
    return sorted(manifests, key=lambda m: m.created_at, reverse=True)


async def delete_lora(storage: Storage, lora_id: str) -> bool:
    """Remove an adapter (manifest first, so it stops counting as finished); False if it did not exist."""
    if await storage.stat(manifest_key(lora_id)) is None:
        return False
    await storage.delete(manifest_key(lora_id))
    await storage.delete_prefix(lora_prefix(lora_id))
    return True
