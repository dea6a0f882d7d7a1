"""Per-key admission limits: request rate (token bucket), unfinished jobs, cost and priority per request.

`Limits` are a key's limits with every unset field filled from the farm's defaults (`farm_limits`).
All in memory and per gateway process. With N replicas behind a load balancer a key's effective rate
is up to N × its `requests_per_s`; the unfinished-jobs count is fed from the status view every replica
reads, so it holds across replicas up to the few hundred milliseconds a new job takes to appear there.

Each check returns a `Refusal` (status code, which limit, what to do, `Retry-After`) or None. Run
the ones that cannot pass on retry (cost, priority) first and the rate last, so a refused request
does not spend a token.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from acefarm.infra.settings import Settings
from schemas.keys import KeyLimits, parse_priorities
from schemas.tenancy import Priority

Limit = Literal["rate", "unfinished", "cost", "priority", "backlog"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one request is held to: a key's own, the farm's defaults where the key sets none."""

    requests_per_s: float
    burst: int
    max_unfinished: int
    max_cost: float
    priorities: tuple[Priority, ...]

    def with_key(self, key: KeyLimits) -> Limits:
        """These limits (the farm's defaults) overridden by every field `key` sets."""
        return Limits(
            requests_per_s=self.requests_per_s if key.requests_per_s is None else key.requests_per_s,
            burst=self.burst if key.burst is None else key.burst,
            max_unfinished=self.max_unfinished if key.max_unfinished is None else key.max_unfinished,
            max_cost=self.max_cost if key.max_cost is None else key.max_cost,
            priorities=self.priorities if key.priorities is None else key.priorities,
        )


def farm_limits(settings: Settings) -> Limits:
    """The farm's default limits (`DEFAULT_RATE_PER_S`, `DEFAULT_BURST`, `DEFAULT_MAX_UNFINISHED`,
    `MAX_JOB_COST`, `DEFAULT_PRIORITIES`), for keys that set none of their own."""
    return Limits(
        requests_per_s=settings.default_rate_per_s,
        burst=settings.default_burst,
        max_unfinished=settings.default_max_unfinished,
        max_cost=settings.max_job_cost,
        priorities=parse_priorities(settings.default_priorities),
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not admitted: the HTTP status, the limit, a readable detail and `Retry-After`."""

    status_code: int
    limit: Limit
    detail: str
    retry_after_s: int | None = None

    def headers(self) -> dict[str, str]:
        """The `Retry-After` header, when the request may succeed later."""
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def retry_after(seconds: float) -> int:
    """Whole seconds for `Retry-After`: rounded up, at least 1."""
    return max(1, math.ceil(seconds))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """One token bucket per key: `requests_per_s` refill rate, `burst` capacity."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, limits: Limits) -> Refusal | None:
        """Spend one token of `key`'s bucket; a 429 refusal (spending nothing) when it is empty."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(limits.burst), at=now)
        else:
            bucket.tokens = min(float(limits.burst), bucket.tokens + (now - bucket.at) * limits.requests_per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = (1.0 - bucket.tokens) / limits.requests_per_s
        return Refusal(
            429,
            "rate",
            f"rate limit: this key allows {limits.requests_per_s:g} requests/s with bursts of {limits.burst}; "
            f"retry in {retry_after(wait)} s",
            retry_after(wait),
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request weighs against a key's `max_cost`, how that is reckoned, and how to lower it."""

    value: float
    formula: str
    advice: str


def generation_cost(duration_s: float, takes: int, steps: int) -> Cost:
    """A generation request's cost: seconds of audio × takes × diffusion steps."""
    return Cost(
        duration_s * takes * steps,
        "duration × takes × steps",
        "ask for a shorter duration, fewer takes (batch_size) or fewer inference_steps",
    )


def training_cost(steps: int, step_cost: float) -> Cost:
    """A LoRA training request's cost: optimizer steps × `TRAINING_STEP_COST`."""
    return Cost(steps * step_cost, f"steps × TRAINING_STEP_COST {step_cost:g}", "train for fewer steps")


def check_cost(cost: Cost, limits: Limits) -> Refusal | None:
    """A 400 refusal when one request costs more than the key's `max_cost` (retrying cannot help)."""
    if cost.value <= limits.max_cost:
        return None
    return Refusal(
        400,
        "cost",
        f"cost limit: this request costs {cost.value:g} ({cost.formula}) and this key allows at most "
        f"{limits.max_cost:g} per request; {cost.advice}",
    )


def check_priority(priority: Priority, limits: Limits) -> Refusal | None:
    """A 403 refusal when the key may not ask for `priority`."""
    if priority in limits.priorities:
        return None
    allowed = ", ".join(p.value for p in limits.priorities)
    return Refusal(403, "priority", f"priority: '{priority.value}' is not allowed for this key (allowed: {allowed})")


class UnfinishedJobs:
    """owner → tasks pending or running, fed from the status view (`observe` each status change), plus the
    jobs admitted but not yet recorded (`reserved`), so concurrent requests cannot overshoot the limit."""

    def __init__(self) -> None:
        self._owner_of: dict[str, str] = {}
        self._tasks: dict[str, set[str]] = {}
        self._reserved: Counter[str] = Counter()

    def observe(self, task_id: str, owner: str | None, finished: bool) -> None:
        """Note a task's latest state; idempotent, and a finished task (or one without an owner) is forgotten."""
        if finished or owner is None:
            owner_was = self._owner_of.pop(task_id, None)
            if owner_was is not None:
                self._discard(owner_was, task_id)
            return
        if self._owner_of.get(task_id) == owner:
            return
        owner_was = self._owner_of.get(task_id)
        if owner_was is not None:
            self._discard(owner_was, task_id)
        self._owner_of[task_id] = owner
        self._tasks.setdefault(owner, set()).add(task_id)

    def count_unfinished(self, owner: str) -> int:
        """How many of `owner`'s tasks are pending or running, or admitted and on their way."""
        return len(self._tasks.get(owner, ())) + self._reserved[owner]

    @contextmanager
    def reserved(self, owner: str) -> Iterator[None]:
        """Count one more job for `owner` while it is stored and published; leave once it is recorded
        (`observe`) or refused."""
        self._reserved[owner] += 1
        try:
            yield
        finally:
            self._reserved[owner] -= 1
            if not self._reserved[owner]:
                del self._reserved[owner]

    def check(self, owner: str, limits: Limits, retry_after_s: float = 5.0) -> Refusal | None:
        """A 429 refusal when `owner` already has `max_unfinished` jobs pending or running."""
        count = self.count_unfinished(owner)
        if count < limits.max_unfinished:
            return None
        return Refusal(
            429,
            "unfinished",
            f"concurrency limit: {count} of your jobs are pending or running and this key allows "
            f"{limits.max_unfinished} at once; retry when one finishes",
            retry_after(retry_after_s),
        )

    def _discard(self, owner: str, task_id: str) -> None:
        tasks = self._tasks.get(owner)
        if tasks is not None:
            tasks.discard(task_id)
            if not tasks:
                del self._tasks[owner]
