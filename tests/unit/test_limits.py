from __future__ import annotations

from wsi_runtime.limits import RateLimiter, retry_after


def test_burst_then_refill_at_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.acquire("u", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("u", 0.0)
    assert wait == 0.5  # one token every 0.5 s
    assert limiter.acquire("u", 0.5) == 0.0
    assert limiter.acquire("u", 0.5) > 0


def test_users_do_not_share_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.acquire("greedy", 0.0) == 0.0
    assert limiter.acquire("greedy", 0.0) > 0
    assert limiter.acquire("polite", 0.0) == 0.0


def test_disabled_and_idle_cleanup() -> None:
    assert RateLimiter(rate=0, burst=0).acquire("u", 0.0) == 0.0
    limiter = RateLimiter(rate=1.0, burst=2)
    limiter.acquire("u", 0.0)
    limiter.forget_idle(10.0)
    assert limiter._buckets == {}
    assert retry_after(0.2) == 1 and retry_after(2.1) == 3


def test_table_of_buckets_stays_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_tracked=3)
    for index in range(10):
        limiter.acquire(f"user{index}", float(index * 2))  # each older one is full again
    assert len(limiter._buckets) <= 3
