"""Adaptive concurrency for one throttled service (Graph, Exchange): fill the throttle, not more.

Graph and Exchange Online throttle per app per tenant and answer 429 + Retry-After beyond
their budget. One ``AdaptiveLimiter`` per service per worker bounds the requests in flight:
- additive increase: each success raises the limit by 1/limit (about +1 per round trip);
- multiplicative decrease: a 429 halves it (at most once per ``cut_interval_s``, so a burst
  of 429s from one overshoot counts once);
- Retry-After pauses every new request to that service until it has passed, instead of
  each request discovering the throttle for itself.
The limiter only paces; retrying the throttled request stays with the caller.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable


class Slot:
    """One request in flight; the caller marks it throttled when the service said 429."""

    __slots__ = ("throttled", "retry_after")

    def __init__(self) -> None:
        self.throttled = False
        self.retry_after: float | None = None

    def mark_throttled(self, retry_after: float | None) -> None:
        self.throttled = True
        self.retry_after = retry_after


class AdaptiveLimiter:
    def __init__(
        self,
        initial: int = 16,
        minimum: int = 1,
        maximum: int = 64,
        cut_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("limiter bounds must satisfy 1 <= minimum <= initial <= maximum")
        self.minimum, self.maximum = minimum, maximum
        self._limit = float(initial)
        self._in_flight = 0
        self._paused_until = 0.0
        self._last_cut = float("-inf")
        self._cut_interval = cut_interval_s
        self._clock = clock
        self._cond: asyncio.Condition | None = None
        self.throttled = 0  # 429s seen (for logs and benchmarks)
        self.peak = 0  # most requests in flight at once

    @property
    def limit(self) -> int:
        return max(self.minimum, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def _acquire(self) -> None:
        cond = self._condition()
        async with cond:
            while True:
                pause = self.paused_for()
                if pause > 0:
                    try:
                        await asyncio.wait_for(cond.wait(), timeout=pause)
                    except asyncio.TimeoutError:
                        pass
                    continue
                if self._in_flight < self.limit:
                    self._in_flight += 1
                    self.peak = max(self.peak, self._in_flight)
                    return
                await cond.wait()

    async def _release(self, slot: Slot) -> None:
        cond = self._condition()
        async with cond:
            self._in_flight -= 1
            if slot.throttled:
                self.throttled += 1
                now = self._clock()
                if now - self._last_cut >= self._cut_interval:
                    self._limit = max(float(self.minimum), self._limit / 2)
                    self._last_cut = now
                if slot.retry_after:
                    self._paused_until = max(self._paused_until, now + slot.retry_after)
            else:
                self._limit = min(float(self.maximum), self._limit + 1.0 / max(1.0, self._limit))
            cond.notify_all()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        await self._acquire()
        slot = Slot()
        try:
            yield slot
        finally:
            await asyncio.shield(self._release(slot))
