"""Links that work without headers (`<audio src>`, downloads): a path signed for one owner until an expiry.

The signature is HMAC-SHA256 over (path, expiry, owner) with `LINK_SIGNING_SECRET`, carried in the
query string as `exp`, `owner` and `sig`. Without the setting each process draws a random secret:
links then break when the gateway restarts and are refused by every other replica, so production sets
it, the same on every replica (compose: `LINK_SIGNING_SECRET: ${LINK_SIGNING_SECRET:?set it}`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from schemas.ids import OWNER_PATTERN

log = get_logger(__name__)

_OWNER = re.compile(OWNER_PATTERN)


class LinkSigner:
    """Signs and verifies (path, expiry, owner) with one secret; lifetimes are capped at `max_ttl_s`."""

    def __init__(self, secret: bytes, max_ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the link signing secret must be at least 32 bytes")
        self._secret = secret
        self.max_ttl_s = max_ttl_s
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        """The signer for `LINK_SIGNING_SECRET`, or for a random per-process secret (logged) when unset."""
        if settings.link_signing_secret is not None:
            secret = settings.link_signing_secret.get_secret_value().encode()
        else:
            log.warning(
                "signed_links.random_secret",
                consequence="signed links break on restart and across gateway replicas; set LINK_SIGNING_SECRET",
            )
            secret = secrets.token_bytes(32)
        return cls(secret, settings.signed_link_ttl_s)

    def signature(self, path: str, expires: int, owner: str) -> str:
        """The urlsafe base64 HMAC-SHA256 of (path, expiry, owner)."""
        message = f"{path}\n{expires}\n{owner}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, path: str, owner: str, ttl_s: int | None = None, stable: bool = False) -> dict[str, str]:
        """Query parameters (`exp`, `owner`, `sig`) granting `owner`'s access to `path` for `ttl_s` seconds.

        `ttl_s` defaults to, and is capped at, `max_ttl_s`. `stable` rounds the expiry down to a step of a
        tenth of the lifetime (at most a minute), so the links signed within one step are identical (a
        status pushed every second does not make an `<audio src>` reload).
        """
        lifetime = self.max_ttl_s if ttl_s is None else min(ttl_s, self.max_ttl_s)
        expires = int(self._clock()) + lifetime
        if stable:
            step = max(1, min(60, lifetime // 10))
            expires -= expires % step
        return {"exp": str(expires), "owner": owner, "sig": self.signature(path, expires, owner)}

    def signed_path(self, path: str, owner: str, ttl_s: int | None = None) -> str:
        """`path` with its signature appended as a query string."""
        return f"{path}?{urlencode(self.sign(path, owner, ttl_s))}"

    def verify(self, path: str, query: Mapping[str, str]) -> str | None:
        """The owner a signed link for `path` grants access as; None when unsigned, forged or expired.

        A link whose expiry lies beyond `max_ttl_s` from now is refused too (the lifetime setting was
        lowered after it was signed).
        """
        owner, sig, exp = query.get("owner"), query.get("sig"), query.get("exp")
        if not owner or not sig or not exp or not exp.isdigit() or not _OWNER.match(owner):
            return None
        expires = int(exp)
        now = self._clock()
        if not now < expires <= now + self.max_ttl_s:
            return None
        if not hmac.compare_digest(sig.encode(), self.signature(path, expires, owner).encode()):
            return None
        return owner
