"""Adaptive concurrency for one throttled service (Graph, Exchange): fill the throttle, not more.

Graph and Exchange Online throttle per app per tenant and answer 429 + Retry-After beyond
their budget. One ``AdaptiveLimiter`` per service per worker bounds the requests in flight:
- additive increase: each success raises the limit by 1/limit (about +1 per round trip);
- multiplicative decrease: a 429 halves it (at most once per ``cut_interval_s``, so a burst
  of 429s from one overshoot counts once);
- Retry-After pauses every new request to that service until it has passed, instead of
  each request discovering the throttle for itself.
The limiter only paces; retrying the throttled request stays with the caller.

The Graph and Exchange adapters use it only as the bound on their requests in flight and do not
mark slots throttled: since issue 15 a 429 goes to the pacer (pacing.py), which slows and pauses
the bucket of the quota that answered. A whole-service pause held the password resets back behind
a directory-audit 429 and then sent them together, over the write quota (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import collections
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
    """Bounds requests in flight; waiters are served first come, first served.

    A freed slot is handed straight to the next waiter (O(1) per request, no wake-up of
    every waiter), which matters when a storm has hundreds of requests queued here.
    """

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
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
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

    def _take(self) -> None:
        self._in_flight += 1
        if self._in_flight > self.peak:
            self.peak = self._in_flight

    def _wake(self) -> None:
        """Hand free slots to waiters, or come back when a pause ends."""
        self._timer = None
        pause = self.paused_for()
        if pause > 0:
            if self._waiters:
                self._timer = asyncio.get_running_loop().call_later(pause, self._wake)
            return
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    async def _acquire(self) -> None:
        while not self._waiters:
            pause = self.paused_for()
            if pause <= 0:
                if self._in_flight < self.limit:
                    self._take()
                    return
                break
            await asyncio.sleep(pause)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._timer is None and self.paused_for() > 0:
            self._wake()  # arms the timer that ends the pause
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(Slot())  # a slot was handed over just as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def _release(self, slot: Slot) -> None:
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
        if self._waiters and self._timer is None:
            self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        await self._acquire()
        slot = Slot()
        try:
            yield slot
        finally:
            self._release(slot)
