"""One HTTP POST to a webhook target, within the time and size limits, to checked addresses only.

Every connection goes through `CheckingResolver`, which refuses a name whose addresses are not all public
(unless WEBHOOK_ALLOW_PRIVATE), so a target that resolved to a public address at submit cannot be
re-pointed at the farm's own network later (DNS rebinding). IP literals skip resolvers in aiohttp and
are checked before each attempt. Redirects are not followed; at most `MAX_RESPONSE_BYTES` of an answer
are read.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from acefarm.infra.settings import Settings
from acefarm.infra.webhook_targets import TargetRefused, check_addresses, check_target

MAX_RESPONSE_BYTES = 4096
"""The most of a receiver's answer ever read (it only goes into the error message)."""
MAX_CONNECTIONS = 64


class CheckingResolver(AbstractResolver):
    """The default resolver, refusing (as a connection error) any name with a non-public address."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` and check every address it has."""
        results = await self._inner.resolve(host, port, family)
        try:
            check_addresses(host, [result["host"] for result in results], self._allow_private)
        except TargetRefused as refused:
            raise OSError(str(refused)) from None
        return results

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: the HTTP status when there was an answer, and the error unless it was 2xx."""

    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.error is None


class Sender:
    """POSTs bodies to webhook targets over one connection pool (start it before use, close it after)."""

    def __init__(self, settings: Settings) -> None:
        self._allow_private = settings.webhook_allow_private
        self._timeout = aiohttp.ClientTimeout(
            total=settings.webhook_timeout_s,
            connect=settings.webhook_connect_timeout_s,
            sock_connect=settings.webhook_connect_timeout_s,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        connector = aiohttp.TCPConnector(resolver=CheckingResolver(self._allow_private), limit=MAX_CONNECTIONS)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """POST `body` to `url`; never raises for anything the target or the network does."""
        assert self._session is not None, "start the sender first"
        try:
            await check_target(url, self._allow_private)
            async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as answer:
                if 200 <= answer.status < 300:
                    return Outcome(answer.status, None)
                text = (await answer.content.read(MAX_RESPONSE_BYTES)).decode(errors="replace").strip()
                detail = f": {text[:300]}" if text else ""
                return Outcome(answer.status, f"HTTP {answer.status}{detail}")
        except TargetRefused as refused:
            return Outcome(None, f"refused target: {refused}")
        except TimeoutError:
            return Outcome(None, f"no answer within {self._timeout.total} s")
        except (aiohttp.ClientError, OSError) as error:
            return Outcome(None, f"{type(error).__name__}: {error}"[:500])
