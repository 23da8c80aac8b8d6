"""Share one call among the incidents a worker runs: batched writes and windowed reads (pure asyncio).

Some Microsoft services allow a handful of requests per second for the whole tenant (Identity
Protection: 1/s for every app together; directory audits: 5 per 10 s per app), yet their APIs take
many users at once or answer for the whole tenant. Two shapes make one call serve many incidents,
inside one worker, with nothing but the worker's own memory (the platform's queues stay the only
coordination between workers):

- ``WriteBatcher``: callers hand in one user id each; the ids that arrive together are sent in one
  call (at most ``max_ids``; the batch closes when callers stop joining for a moment, or after
  ``interval_s`` under a steady stream), and every caller learns the call's outcome.
- ``SharedRead``: callers ask for one key's value, fresh as of a time; a caller waiting alone gets
  a ``single`` read, several waiting get one ``bulk`` read; both are kept, and a later caller whose
  freshness bound a kept read meets is answered from it without a call.

A storm therefore makes one write per batch and one read per interval, not one per incident.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime
from typing import Any, Awaitable, Callable, Generic, Hashable, Mapping, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
GRACE_S = 0.05  # an idle batcher waits this long for callers that arrive together
MAX_SINGLES = 10_000  # single reads kept per SharedRead (forgotten all at once beyond)


def _deliver(future: asyncio.Future, value: object = None, error: BaseException | None = None) -> None:
    if future.done():
        return  # the caller gave up (cancelled)
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class WriteBatcher:
    """One write that takes a list of user ids (confirmCompromised, dismiss), shared by its callers.

    A batch is sent when it is full (``max_ids``), when no caller joined it for ``quiet_s`` (the
    incidents of the moment are all in), or ``interval_s`` after its first caller (a steady stream
    of callers is cut into one call per interval). With ``expect_more`` (more callers are on their
    way: the worker still has incidents that will join), the quiet rule waits: the batch goes at
    ``interval_s``, when full, or when it holds ``enough`` callers, and at once (after ``quiet_s``)
    when nobody else is expected.
    """

    def __init__(self, call: Callable[[list[str]], Awaitable[Mapping[str, Any] | None]], *, max_ids: int = 60,
                 interval_s: float = 10.0, quiet_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 expect_more: Callable[[], bool] | None = None, enough: int | None = None) -> None:
        self._call = call
        self.max_ids = max_ids
        self.interval_s = interval_s
        self.quiet_s = min(quiet_s, interval_s)
        self._clock = clock
        self._expect_more = expect_more
        self.enough = min(enough or max_ids, max_ids)
        self._pending: dict[str, list[asyncio.Future[Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first = self._latest = 0.0
        self._wake = asyncio.Event()
        self.calls = 0

    async def submit(self, user_id: str) -> Any:
        """Return when a call carrying ``user_id`` succeeded (with what the call said of that id, if it
        answers per id); raise what it raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        now = self._clock()
        if not self._pending:
            self._first = now
        self._latest = now
        self._pending.setdefault(user_id, []).append(future)
        self._wake.set()  # the batch's deadline is decided again: full, or nobody else expected
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._pending:
            while len(self._pending) < self.max_ids:
                deadline = self._first + self.interval_s
                if self._expect_more is None or len(self._pending) >= self.enough or not self._expect_more():
                    deadline = min(deadline, self._latest + self.quiet_s)
                wait = deadline - self._clock()
                if wait <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(wait, GRACE_S))
                except asyncio.TimeoutError:
                    pass
            ids = list(self._pending)[: self.max_ids]
            waiters = [(user_id, f) for user_id in ids for f in self._pending.pop(user_id)]
            self._first = self._latest = self._clock()  # what is left starts a new batch
            self.calls += 1
            try:
                answers = await self._call(ids) or {}
            except BaseException as exc:  # every caller of this batch gets the error
                for _, future in waiters:
                    _deliver(future, error=exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                for user_id, future in waiters:
                    _deliver(future, answers.get(user_id))


@dataclasses.dataclass
class Window(Generic[K, V]):
    """A bulk read: when it started and what it found, by key."""

    started: datetime
    data: Mapping[K, V]


class SharedRead(Generic[K, V]):
    """A read many incidents need, answered once for all of them when several wait.

    ``single(key)`` reads one key; ``bulk()`` reads every key at once (a window), kept as the
    latest window. ``missing(key)`` answers a key the bulk read did not find (None: ``absent``).
    """

    def __init__(self, single: Callable[[K], Awaitable[V]], bulk: Callable[[], Awaitable[Mapping[K, V]]], *,
                 missing: Callable[[K], Awaitable[V]] | None = None, absent: Callable[[], V] | None = None,
                 interval_s: float = 1.0, wall: Callable[[], datetime], clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._single, self._bulk, self._missing, self._absent = single, bulk, missing, absent
        self.interval_s = interval_s
        self._wall, self._clock = wall, clock
        self.window: Window[K, V] | None = None
        self._singles: dict[K, tuple[datetime, V]] = {}  # the latest single read of each key
        self._pending: list[tuple[K, datetime, asyncio.Future[V]]] = []
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")
        # A key's ``missing`` read in flight: whoever else needs it meanwhile (the bulk read's caller
        # and a later one answered from the same window) waits for it instead of reading again.
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self.calls = {"single": 0, "bulk": 0, "missing": 0, "hits": 0}

    async def get(self, key: K, fresh_after: datetime) -> V:
        """``key``'s value from a read that started at or after ``fresh_after``."""
        single = self._singles.get(key)
        if single is not None and single[0] >= fresh_after:
            self.calls["hits"] += 1
            return single[1]
        window = self.window
        if window is not None and window.started >= fresh_after:
            self.calls["hits"] += 1
            return await self._from_window(window, key)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((key, fresh_after, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    def offer(self, window: Window[K, V]) -> None:
        """Keep a bulk read made elsewhere (right after a batched write) as the latest window."""
        if self.window is None or window.started >= self.window.started:
            self.window = window

    async def _from_window(self, window: Window[K, V], key: K) -> V:
        if key in window.data:
            return window.data[key]
        if self._missing is not None:
            return await self._missing_read(key)
        assert self._absent is not None
        return self._absent()

    async def _missing_read(self, key: K) -> V:
        """``missing(key)``, one call at a time per key (it starts after the window it completes)."""
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._read_missing(key))

            def forget(_done: "asyncio.Future[V]") -> None:
                self._inflight.pop(key, None)

            pending.add_done_callback(forget)
        return await asyncio.shield(pending)

    async def _read_missing(self, key: K) -> V:
        assert self._missing is not None
        self.calls["missing"] += 1
        started = self._wall()
        return self._keep(key, started, await self._missing(key))

    def _keep(self, key: K, started: datetime, value: V) -> V:
        if len(self._singles) >= MAX_SINGLES:
            self._singles.clear()
        self._singles[key] = (started, value)
        return value

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(max(GRACE_S, self._last + self.interval_s - self._clock()))
            batch, self._pending = self._pending, []
            started = self._wall()
            self._last = self._clock()
            if len(batch) == 1:
                key, _, future = batch[0]
                self.calls["single"] += 1
                try:
                    value = await self._single(key)
                except Exception as exc:
                    _deliver(future, error=exc)
                    continue
                _deliver(future, self._keep(key, started, value))
                continue
            self.calls["bulk"] += 1
            try:
                window = Window(started, await self._bulk())
            except Exception as exc:
                for _, _, future in batch:
                    _deliver(future, error=exc)
                continue
            self.window = window
            for key, _, future in batch:
                if key in window.data:
                    _deliver(future, window.data[key])
                elif self._missing is None:
                    _deliver(future, self._absent() if self._absent is not None else None)
                else:
                    asyncio.create_task(self._resolve_missing(key, future))

    async def _resolve_missing(self, key: K, future: asyncio.Future[V]) -> None:
        try:
            _deliver(future, await self._missing_read(key))
        except Exception as exc:
            _deliver(future, error=exc)
