"""Per-key limits: token bucket with Retry-After, cost ceiling, allowed priorities, unfinished jobs per owner."""

from gateway.limits import RateLimiter, UnfinishedJobs, check_cost, check_priority, job_cost, retry_after
from schemas.keys import KeyLimits
from schemas.tenancy import Priority


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses_with_retry_after_and_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(requests_per_s=0.5, burst=3)
    assert [limiter.take("k", limits) for _ in range(3)] == [None, None, None]
    refusal = limiter.take("k", limits)
    assert refusal is not None
    assert (refusal.status_code, refusal.limit, refusal.retry_after_s) == (429, "rate", 2)
    assert refusal.headers() == {"Retry-After": "2"}
    assert "0.5 requests/s with bursts of 3" in refusal.detail
    clock.now += 1.0  # half a token: still refused, now one second to wait; refusals spend nothing
    again = limiter.take("k", limits)
    assert again is not None and again.retry_after_s == 1
    clock.now += 1.0
    assert limiter.take("k", limits) is None
    assert limiter.take("k", limits) is not None
    assert limiter.take("other", limits) is None  # buckets are per key
    clock.now += 3600  # refill stops at the burst
    assert [limiter.take("k", limits) is None for _ in range(4)] == [True, True, True, False]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2)] == [1, 1, 1, 2]


def test_cost_ceiling_is_a_400_naming_the_limit() -> None:
    limits = KeyLimits(max_cost=1000)
    assert job_cost(60, 2, 8) == 960
    assert check_cost(job_cost(60, 2, 8), limits) is None
    refusal = check_cost(job_cost(60, 2, 9), limits)
    assert refusal is not None and refusal.status_code == 400 and refusal.limit == "cost"
    assert "costs 1080" in refusal.detail and "at most 1000" in refusal.detail and refusal.headers() == {}


def test_priority_outside_the_key_is_refused() -> None:
    limits = KeyLimits(priorities=(Priority.NORMAL, Priority.BATCH))
    assert check_priority(Priority.BATCH, limits) is None
    refusal = check_priority(Priority.HIGH, limits)
    assert refusal is not None and refusal.status_code == 403
    assert refusal.detail == "priority: 'high' is not allowed for this key (allowed: normal, batch)"


def test_unfinished_jobs_are_counted_per_owner_from_status_changes() -> None:
    jobs = UnfinishedJobs()
    limits = KeyLimits(max_unfinished=2)
    jobs.observe("t1", "alice", finished=False)
    jobs.observe("t1", "alice", finished=False)  # the same task again: counted once
    jobs.observe("t2", "alice", finished=False)
    jobs.observe("t3", "bob", finished=False)
    assert (jobs.count_unfinished("alice"), jobs.count_unfinished("bob"), jobs.count_unfinished("eve")) == (2, 1, 0)
    refusal = jobs.check("alice", limits, retry_after_s=2.5)
    assert refusal is not None and (refusal.status_code, refusal.limit, refusal.retry_after_s) == (429, "unfinished", 3)
    assert jobs.check("bob", limits) is None
    jobs.observe("t1", "alice", finished=True)
    jobs.observe("t1", "alice", finished=True)
    jobs.observe("never-seen", "alice", finished=True)
    assert jobs.count_unfinished("alice") == 1 and jobs.check("alice", limits) is None
