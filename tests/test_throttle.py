"""AdaptiveLimiter: grows on success, halves on 429, honours Retry-After, never exceeds its limit."""
import asyncio

import pytest

from shared.adapters.throttle import AdaptiveLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_successes_raise_the_limit_additively_up_to_the_maximum():
    limiter = AdaptiveLimiter(initial=4, maximum=6)
    for _ in range(5):
        async with limiter.slot():
            pass
    assert limiter.limit == 5  # about +1 per `limit` successes
    for _ in range(100):
        async with limiter.slot():
            pass
    assert limiter.limit == 6


async def test_a_429_halves_the_limit_once_per_interval_and_counts_it():
    clock = Clock()
    limiter = AdaptiveLimiter(initial=16, maximum=64, cut_interval_s=1.0, clock=clock)
    for _ in range(3):  # one overshoot answered by a burst of 429s
        async with limiter.slot() as slot:
            slot.mark_throttled(None)
    assert limiter.limit == 8 and limiter.throttled == 3
    clock.now += 1.5
    async with limiter.slot() as slot:
        slot.mark_throttled(None)
    assert limiter.limit == 4


async def test_the_limit_never_falls_below_the_minimum():
    clock = Clock()
    limiter = AdaptiveLimiter(initial=2, minimum=1, clock=clock)
    for _ in range(5):
        clock.now += 2
        async with limiter.slot() as slot:
            slot.mark_throttled(None)
    assert limiter.limit == 1


async def test_requests_in_flight_never_exceed_the_limit():
    limiter = AdaptiveLimiter(initial=3, maximum=3)
    active = 0
    seen = 0

    async def request():
        nonlocal active, seen
        async with limiter.slot():
            active += 1
            seen = max(seen, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(request() for _ in range(20)))
    assert seen == 3 and limiter.peak == 3 and limiter.in_flight == 0


async def test_retry_after_pauses_new_requests_until_it_has_passed():
    limiter = AdaptiveLimiter(initial=4)
    async with limiter.slot() as slot:
        slot.mark_throttled(0.3)
    assert limiter.paused_for() > 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with limiter.slot():
        waited = loop.time() - started
    assert waited >= 0.25


async def test_a_slot_is_released_when_the_request_raises():
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    with pytest.raises(RuntimeError):
        async with limiter.slot():
            raise RuntimeError("boom")
    assert limiter.in_flight == 0
    async with limiter.slot():  # would block forever if the slot leaked
        pass


def test_bounds_are_validated():
    with pytest.raises(ValueError):
        AdaptiveLimiter(initial=0)
    with pytest.raises(ValueError):
        AdaptiveLimiter(initial=10, maximum=5)


async def test_a_cancelled_waiter_neither_leaks_nor_steals_a_slot():
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    release = asyncio.Event()

    async def holder():
        async with limiter.slot():
            await release.wait()

    async def waiter(done: list):
        async with limiter.slot():
            done.append(1)

    hold = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter([]))
    finished: list = []
    patient = asyncio.create_task(waiter(finished))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await asyncio.gather(hold, patient)
    assert finished == [1] and limiter.in_flight == 0 and cancelled.cancelled()


async def test_queued_waiters_resume_after_a_pause_in_arrival_order():
    limiter = AdaptiveLimiter(initial=2, maximum=2)
    order: list[int] = []
    gate = asyncio.Event()

    async def first():
        async with limiter.slot() as slot:
            await gate.wait()
            slot.mark_throttled(0.2)

    async def later(i: int):
        async with limiter.slot():
            order.append(i)
            await asyncio.sleep(0.01)

    head = [asyncio.create_task(first()) for _ in range(2)]
    await asyncio.sleep(0)
    tail = [asyncio.create_task(later(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    gate.set()
    await asyncio.gather(*head, *tail)
    assert order == [0, 1, 2, 3, 4]
    assert loop.time() - started >= 0.18  # nobody went while the service said to wait
