"""Per-key limits: farm defaults under a key's own, token bucket with Retry-After, cost ceiling, allowed
priorities, unfinished jobs per owner."""

from acefarm.infra.settings import Settings
from gateway.limits import (
    Limits,
    RateLimiter,
    UnfinishedJobs,
    check_cost,
    check_priority,
    farm_limits,
    generation_cost,
    retry_after,
    training_cost,
)
from schemas.keys import KeyLimits
from schemas.tenancy import Priority

DEFAULTS = Limits(
    requests_per_s=5.0, burst=20, max_unfinished=20, max_cost=38400.0, priorities=(Priority.NORMAL, Priority.BATCH)
)


def limits(**key: object) -> Limits:
    """The farm defaults above, overridden by a key's own limits."""
    return DEFAULTS.with_key(KeyLimits.model_validate(key))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses_with_retry_after_and_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    bucket = limits(requests_per_s=0.5, burst=3)
    assert [limiter.take("k", bucket) for _ in range(3)] == [None, None, None]
    refusal = limiter.take("k", bucket)
    assert refusal is not None
    assert (refusal.status_code, refusal.limit, refusal.retry_after_s) == (429, "rate", 2)
    assert refusal.headers() == {"Retry-After": "2"}
    assert "0.5 requests/s with bursts of 3" in refusal.detail
    clock.now += 1.0  # half a token: still refused, now one second to wait; refusals spend nothing
    again = limiter.take("k", bucket)
    assert again is not None and again.retry_after_s == 1
    clock.now += 1.0
    assert limiter.take("k", bucket) is None
    assert limiter.take("k", bucket) is not None
    assert limiter.take("other", bucket) is None  # buckets are per key
    clock.now += 3600  # refill stops at the burst
    assert [limiter.take("k", bucket) is None for _ in range(4)] == [True, True, True, False]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2)] == [1, 1, 1, 2]


def test_cost_ceiling_is_a_400_naming_the_limit() -> None:
    ceiling = limits(max_cost=1000)
    assert generation_cost(60, 2, 8).value == 960
    assert check_cost(generation_cost(60, 2, 8), ceiling) is None
    refusal = check_cost(generation_cost(60, 2, 9), ceiling)
    assert refusal is not None and refusal.status_code == 400 and refusal.limit == "cost"
    assert "costs 1080 (duration × takes × steps)" in refusal.detail and "at most 1000" in refusal.detail
    assert refusal.headers() == {}
    training = check_cost(training_cost(200, 10), ceiling)
    assert training is not None and "costs 2000 (steps × TRAINING_STEP_COST 10)" in training.detail
    assert "train for fewer steps" in training.detail
    assert check_cost(training_cost(100, 10), ceiling) is None


def test_priority_outside_the_key_is_refused() -> None:
    assert check_priority(Priority.BATCH, DEFAULTS) is None
    refusal = check_priority(Priority.HIGH, DEFAULTS)
    assert refusal is not None and refusal.status_code == 403
    assert refusal.detail == "priority: 'high' is not allowed for this key (allowed: normal, batch)"


def test_unfinished_jobs_are_counted_per_owner_from_status_changes() -> None:
    jobs = UnfinishedJobs()
    two = limits(max_unfinished=2)
    jobs.observe("t1", "alice", finished=False)
    jobs.observe("t1", "alice", finished=False)  # the same task again: counted once
    jobs.observe("t2", "alice", finished=False)
    jobs.observe("t3", "bob", finished=False)
    assert (jobs.count_unfinished("alice"), jobs.count_unfinished("bob"), jobs.count_unfinished("eve")) == (2, 1, 0)
    refusal = jobs.check("alice", two, retry_after_s=2.5)
    assert refusal is not None and (refusal.status_code, refusal.limit, refusal.retry_after_s) == (429, "unfinished", 3)
    assert jobs.check("bob", two) is None
    jobs.observe("t1", "alice", finished=True)
    jobs.observe("t1", "alice", finished=True)
    jobs.observe("never-seen", "alice", finished=True)
    assert jobs.count_unfinished("alice") == 1 and jobs.check("alice", two) is None
    jobs.observe("t2", None, finished=False)  # a row without an owner counts for nobody
    assert jobs.count_unfinished("alice") == 0


def test_reserved_jobs_count_until_released() -> None:
    jobs = UnfinishedJobs()
    jobs.observe("t1", "alice", finished=False)
    with jobs.reserved("alice"):
        assert jobs.count_unfinished("alice") == 2 and jobs.check("alice", limits(max_unfinished=2)) is not None
        jobs.observe("t2", "alice", finished=False)  # recorded while still reserved: briefly counted twice
    assert jobs.count_unfinished("alice") == 2
    try:
        with jobs.reserved("bob"):
            raise RuntimeError
    except RuntimeError:
        pass
    assert jobs.count_unfinished("bob") == 0


def test_a_key_overrides_only_the_farm_defaults_it_sets() -> None:
    settings = Settings(default_rate_per_s=2, default_burst=4, max_job_cost=500, default_priorities="batch")
    farm = farm_limits(settings)
    assert farm == Limits(2.0, 4, 20, 500.0, (Priority.BATCH,))
    assert farm.with_key(KeyLimits()) == farm
    own = farm.with_key(KeyLimits(burst=9, priorities=(Priority.HIGH,)))
    assert own == Limits(2.0, 9, 20, 500.0, (Priority.HIGH,))
