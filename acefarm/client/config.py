"""Where the client connects, with which key, and how it retries: shared by `Client` and `AsyncClient`."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

URL_ENV = "ACEFARM_URL"
API_KEY_ENV = "ACEFARM_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "acefarm-client/0.1"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth retrying a request that is safe to repeat."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after connection errors and 429/5xx answers: exponential backoff with jitter, or `Retry-After`."""

    retries: int = 5
    """Retries after the first try (0: none)."""
    backoff_s: float = 0.5
    """The first wait; doubled each retry, each wait drawn between half and all of it."""
    backoff_max_s: float = 15.0
    """The longest backoff wait."""
    retry_after_max_s: float = 120.0
    """The longest wait a `Retry-After` header may ask for."""

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based): `Retry-After` when given, else the backoff."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.retry_after_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_s * 2**retry)
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ClientConfig:
    """The gateway's URL, the API key (None: send none) and the limits of every call."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = 30.0
    """Connect, read and write timeout of ordinary calls."""
    stream_timeout_s: float = 60.0
    """How long an event stream may stay silent (the gateway sends a keep-alive every 15 s) before reconnecting."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, timeout_s: float, retry: RetryPolicy | None) -> ClientConfig:
        """Arguments first, then `ACEFARM_URL` / `ACEFARM_API_KEY`, then the local default URL and no key."""
        chosen_url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        chosen_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        return cls(
            url=chosen_url.rstrip("/"), api_key=chosen_key or None, timeout_s=timeout_s, retry=retry or RetryPolicy()
        )

    def absolute(self, url: str) -> str:
        """`url` made absolute against the gateway's URL (result links may be relative)."""
        return urljoin(self.url + "/", url)

    def auth_headers(self, url: str | None = None) -> dict[str, str]:
        """The key header for a request to `url` (default: the gateway); none for another origin or without a key."""
        if self.api_key is None or (url is not None and not same_origin(self.absolute(url), self.url)):
            return {}
        return {"Authorization": f"Bearer {self.api_key}"}


def same_origin(a: str, b: str) -> bool:
    """Whether two absolute URLs share scheme, host and port."""
    first, second = urlsplit(a), urlsplit(b)
    return (first.scheme, first.hostname, first.port) == (second.scheme, second.hostname, second.port)
