"""The acefarm Python client: `Client` (sync) and `AsyncClient` (asyncio) over httpx, typed with the contract.

```python
from acefarm.client import Client

with Client() as farm:  # ACEFARM_URL, ACEFARM_API_KEY
    result = farm.generate(prompt="warm lofi", duration=30, download_to="song.wav")
```

It imports only `schemas` and libraries, so it works without the server's dependencies being used
(see docs/client.md). `verify_webhook` checks a webhook's signature (`schemas.webhooks.verify_signature`).
"""

from acefarm.client.aio import AsyncClient
from acefarm.client.config import API_KEY_ENV, DEFAULT_URL, URL_ENV, RetryPolicy
from acefarm.client.errors import AcefarmError, TaskFailed
from acefarm.client.models import GenerateResult, TrainingResult, UploadedAudio
from acefarm.client.sync import Client
from schemas.webhooks import InvalidSignature
from schemas.webhooks import verify_signature as verify_webhook

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
