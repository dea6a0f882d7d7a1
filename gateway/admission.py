"""Admission control: whether the gateway takes a request on, decided before anything is stored or published.

Per key (`gateway.limits`): the priority it asks for (403), its cost (400), the farm's backlog (503),
the owner's unfinished jobs (429) and the request rate (429), in that order, so a request refused for
any other reason spends no token. Farm-wide, a `BacklogProbe` tells how many jobs are queued and how
fast the workers drain them; over `MAX_QUEUED_JOBS` the answer is 503 with a `Retry-After` of about
the time the workers need to work off the excess. Every refusal raises `LimitExceeded`, whose JSON
body names the limit (`extra.limit`) and says what to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from acefarm.infra.settings import Settings
from gateway.auth import Principal
from gateway.limits import (
    Cost,
    Limits,
    RateLimiter,
    Refusal,
    UnfinishedJobs,
    check_cost,
    check_priority,
    farm_limits,
    retry_after,
)
from schemas.tenancy import Priority

BACKLOG_RETRY_S = 30.0
"""`Retry-After` of a backlog refusal while the drain rate is unknown (no job finished recently)."""
MAX_RETRY_S = 600.0
"""The longest `Retry-After` a backlog refusal gives, however slowly the queue drains."""


class BacklogProbe(Protocol):
    """What the gateway knows about the farm's queue, from memory (refreshed in the background)."""

    def queued_jobs(self) -> int | None:
        """Jobs queued and not yet done farm-wide; None while unknown."""
        ...

    def drain_rate_per_s(self) -> float | None:
        """Jobs per second the workers worked off recently; None while unknown."""
        ...


class NoBacklog:
    """A probe that knows nothing, so the farm-wide limit never refuses."""

    def queued_jobs(self) -> int | None:
        """Always unknown."""
        return None

    def drain_rate_per_s(self) -> float | None:
        """Always unknown."""
        return None


def check_backlog(probe: BacklogProbe, max_queued: int) -> Refusal | None:
    """A 503 refusal when more than `max_queued` jobs are queued (0: no limit); `Retry-After` is the time
    the recent drain rate needs to work off the excess, at most `MAX_RETRY_S`."""
    queued = probe.queued_jobs() if max_queued > 0 else None
    if queued is None or queued <= max_queued:
        return None
    rate = probe.drain_rate_per_s()
    wait = min((queued - max_queued) / rate, MAX_RETRY_S) if rate and rate > 0 else BACKLOG_RETRY_S
    seconds = retry_after(wait)
    return Refusal(
        503,
        "backlog",
        f"the farm is busy: {queued} jobs are queued and it takes new ones while at most {max_queued} are "
        f"(MAX_QUEUED_JOBS); retry in {seconds} s",
        seconds,
    )


class LimitExceeded(HTTPException):
    """A refused request: the refusal's status code, detail and `Retry-After`; `extra` names the limit."""

    def __init__(self, refusal: Refusal) -> None:
        extra: dict[str, object] = {"limit": refusal.limit}
        if refusal.retry_after_s is not None:
            extra["retry_after_s"] = refusal.retry_after_s
        super().__init__(status_code=refusal.status_code, detail=refusal.detail, headers=refusal.headers(), extra=extra)


class Admission:
    """The gateway's admission control: farm defaults, one token bucket per key, the owners' unfinished
    jobs (from the status view) and the farm's backlog."""

    def __init__(
        self,
        settings: Settings,
        unfinished: UnfinishedJobs,
        statuses_loaded: asyncio.Event,
        backlog: BacklogProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = farm_limits(settings)
        self.max_queued = settings.max_queued_jobs
        self.unfinished = unfinished
        self.backlog: BacklogProbe = backlog or NoBacklog()
        self.rate = RateLimiter(clock)
        self._statuses_loaded = statuses_loaded

    def limits_of(self, principal: Principal) -> Limits:
        """The limits `principal`'s requests are held to: its key's, the farm's defaults where it sets none."""
        return self.defaults.with_key(principal.limits)

    def admit_request(self, principal: Principal) -> None:
        """Spend one of the caller's rate tokens; raises `LimitExceeded` (429) when none is left."""
        refusal = self.rate.take(_bucket(principal), self.limits_of(principal))
        if refusal is not None:
            raise LimitExceeded(refusal)

    @contextmanager
    def admit_job(self, principal: Principal, cost: Cost, priority: Priority | None = None) -> Iterator[None]:
        """Admit one new job or raise `LimitExceeded`; while the block runs (store inputs, publish, record the
        pending row) the job counts against the owner's unfinished jobs."""
        if not self._statuses_loaded.is_set():
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
                detail="the gateway is still reading task statuses after a restart; retry in a moment",
                headers={"Retry-After": "1"},
            )
        limits = self.limits_of(principal)
        refusal = (
            (check_priority(priority, limits) if priority is not None else None)
            or check_cost(cost, limits)
            or check_backlog(self.backlog, self.max_queued)
            or self.unfinished.check(principal.owner, limits)
            or self.rate.take(_bucket(principal), limits)
        )
        if refusal is not None:
            raise LimitExceeded(refusal)
        with self.unfinished.reserved(principal.owner):
            yield


def _bucket(principal: Principal) -> str:
    """Whose token bucket a request spends: its key's (the owner's without a key)."""
    return principal.key_id or f"owner:{principal.owner}"
