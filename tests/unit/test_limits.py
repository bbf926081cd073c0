from __future__ import annotations

import asyncio

import pytest

from scheduler_service.viewer_gate import ViewerBusy, ViewerGate
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


async def test_viewer_calls_wait_behind_their_own_user_s_only() -> None:
    gate = ViewerGate(running=2, waiting=1)
    release = asyncio.Event()
    started: list[str] = []

    async def call(user: str, name: str) -> None:
        async with gate.turn(user):
            started.append(name)
            await release.wait()

    first = [asyncio.create_task(call("burst", f"b{k}")) for k in range(3)]
    await asyncio.sleep(0)
    assert started == ["b0", "b1"] and gate.holding("burst") == 3  # b2 waits its turn
    with pytest.raises(ViewerBusy, match="2 viewer calls of yours are running and 1 more"):
        async with gate.turn("burst"):
            pass
    other = asyncio.create_task(call("quiet", "q0"))
    await asyncio.sleep(0)
    assert "q0" in started  # another user's call does not wait behind the burst
    release.set()
    await asyncio.gather(*first, other)
    assert started[-1] == "b2"  # the burst's third call ran once a turn was free
    assert gate.holding("burst") == gate.holding("quiet") == 0 and gate._lanes == {}


async def test_a_cancelled_waiting_call_gives_its_place_back() -> None:
    gate = ViewerGate(running=1, waiting=1)
    hold = asyncio.Event()

    async def call() -> None:
        async with gate.turn("u"):
            await hold.wait()

    running = asyncio.create_task(call())
    waiting = asyncio.create_task(call())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert gate.holding("u") == 1
    hold.set()
    await running
    assert gate._lanes == {}


async def test_a_full_viewer_lane_is_answered_as_a_limit_with_a_retry_hint() -> None:
    """Through the one mapping of domain errors: RESOURCE_EXHAUSTED and a
    retry hint of 1 s (the gateway's 429 and Retry-After: 1)."""
    import grpc

    from scheduler_service.service import domain_errors
    from wsi_protocol.status import RETRY_AFTER_METADATA

    class Ended(Exception):
        pass

    class Context:
        async def abort(
            self, code: grpc.StatusCode, message: str, trailing_metadata: object
        ) -> None:
            self.code, self.trailing = code, trailing_metadata
            raise Ended(message)

    gate, context = ViewerGate(running=1, waiting=0), Context()
    hold = asyncio.Event()

    async def viewing() -> None:
        async with gate.turn("u"):
            await hold.wait()

    first = asyncio.create_task(viewing())
    await asyncio.sleep(0)
    with pytest.raises(Ended, match="1 viewer calls of yours are running"):
        async with domain_errors(context), gate.turn("u"):  # type: ignore[arg-type]
            pass
    assert context.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (RETRY_AFTER_METADATA, "1") in context.trailing  # type: ignore[operator]
    hold.set()
    await first
