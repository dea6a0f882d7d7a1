"""The acefarm Python client: `Client` (sync) and `AsyncClient` (asyncio) over httpx, typed with the contract.

```python
from acefarm.client import Client

with Client() as farm:  # ACEFARM_URL, ACEFARM_API_KEY
    result = farm.generate(prompt="warm lofi", duration=30, download_to="song.wav")
```

It imports only `schemas` and libraries, so it works without the server's dependencies being used
(see docs/client.md). `verify_webhook` checks a webhook's signature (`schemas.webhooks.verify_signature`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acefarm.client.aio import AsyncClient
    from acefarm.client.config import API_KEY_ENV, DEFAULT_URL, URL_ENV, RetryPolicy
    from acefarm.client.errors import AcefarmError, TaskFailed
    from acefarm.client.models import GenerateResult, TrainingResult, UploadedAudio
    from acefarm.client.sync import Client
    from schemas.webhooks import InvalidSignature
    from schemas.webhooks import verify_signature as verify_webhook

_HOMES = {
    "AsyncClient": ("acefarm.client.aio", "AsyncClient"),
    "API_KEY_ENV": ("acefarm.client.config", "API_KEY_ENV"),
    "DEFAULT_URL": ("acefarm.client.config", "DEFAULT_URL"),
    "URL_ENV": ("acefarm.client.config", "URL_ENV"),
    "RetryPolicy": ("acefarm.client.config", "RetryPolicy"),
    "AcefarmError": ("acefarm.client.errors", "AcefarmError"),
    "TaskFailed": ("acefarm.client.errors", "TaskFailed"),
    "GenerateResult": ("acefarm.client.models", "GenerateResult"),
    "TrainingResult": ("acefarm.client.models", "TrainingResult"),
    "UploadedAudio": ("acefarm.client.models", "UploadedAudio"),
    "Client": ("acefarm.client.sync", "Client"),
    "InvalidSignature": ("schemas.webhooks", "InvalidSignature"),
    "verify_webhook": ("schemas.webhooks", "verify_signature"),
}

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "URL_ENV",
    "AcefarmError",
    "AsyncClient",
    "Client",
    "GenerateResult",
    "InvalidSignature",
    "RetryPolicy",
    "TaskFailed",
    "TrainingResult",
    "UploadedAudio",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    """Names are imported on first use, so `acefarm` commands that never talk to a gateway skip httpx."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _HOMES[name]
    return getattr(importlib.import_module(module), attr)
