"""Pacing per Microsoft service and scope: stay under a known quota instead of probing it with 429s.

Microsoft Graph throttles each service on its own (learn.microsoft.com/graph/throttling-limits):

| bucket | requests | quota (published; the app setting) | scope |
|---|---|---|---|
| ``directory-ru`` | identity reads (users, groups, roles, methods, ...), in resource units from the docs' cost table | 3,500 RU / 10 s (PACING_DIRECTORY_RU_PER_10S; 5,000 / 8,000 for tenants of 50-500 / > 500 users) | app + tenant |
| ``directory-write`` | identity writes (POST/PATCH/PUT/DELETE that change the directory) | min(3,000 / 150 s, 18,000 / 300 s x PACING_DIRECTORY_WRITE_SHARE) | app + tenant, tenant (all apps) |
| ``idp`` | identityProtection/*, identity/conditionalAccess/* | 1 / s (PACING_IDP_PER_S); 429 without Retry-After | tenant (all apps) |
| ``reports`` | auditLogs/*, reports/* (directory audits, sign-ins) | 5 / 10 s (PACING_REPORTS_PER_10S) | app + tenant |
| ``security`` | security/* (alerts_v2, secureScores) | 150 / min (PACING_SECURITY_PER_MIN) | app + tenant |
| ``outlook`` | users/{id}/mailFolders, messages, sendMail, mailboxSettings, ... | 10,000 / 10 min and 4 concurrent (PACING_OUTLOOK_*) | app + mailbox |
| ``exo`` | every Exchange admin API cmdlet (InvokeCommand) | 300 / 10 s and 10 concurrent: **assumed** (PACING_EXO_*) | app + tenant |

A request is classified by its method and path (or its cmdlet): a call added later falls into
its service's bucket with no wiring. Each bucket is a token bucket refilled at its quota per
second, divided by PACING_INSTANCES (the workers expected to share the quota; the platform's
instance count, not discovered at run time: no distributed coordination) and held 2% below it,
banking at most a quarter of a second's worth (no bursts). A waiting request is released on a
100 ms grid shared by the buckets (TICK_S): together with the other requests whose units are there by
then, instead of one timer per token, so the worker wakes once per tick instead of once per request,
which on a mostly idle worker costs far more CPU than the request itself (docs/benchmarks.md). The
pace is unchanged: only a bucket whose bank holds a request's units and a tick's refill is released
on the grid; the slow ones (Identity Protection, the audit logs, a small write share: a bank of one
request) are released when their units are there. Waiters are served first come, first served within a priority class, and containment (shared/priority.py) before everything else: one
worker's incidents share each quota fairly, and no incident's password reset waits behind another
incident's clean-up. A 429 still corrects the pace (AIMD): the bucket it names (identity's
``x-ms-throttle-information``, else the request's own) slows to 70% of its pace, at most once in
2 s and never below a quarter of the ceiling, and stops for Retry-After (or 1-1.5 s when the service sends
none, as Identity Protection does); the rate then grows back to the configured ceiling over 10 s
of quiet. More instances than configured,
or other apps spending the tenant's share, are found out that way.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import math
import random
import time
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

from ..priority import Priority, current, current_order

MARGIN = 0.02  # pace this far below each quota: network jitter must not turn a paced request into a 429
DEPTH_S = 0.25  # seconds of quota a bucket may bank (Microsoft's bucket depth is not published)
TICK_S = 0.1  # waiting requests are released on this grid (loop time), never later than one tick late
RECOVERY_S = 10.0  # after a 429, seconds of quiet to grow back from nothing to the ceiling
FLOOR = 0.25  # a bucket's pace never drops below this share of its ceiling
CUT = 0.7  # a 429 multiplies the pace by this
CUT_INTERVAL_S = 2.0  # one cut per overshoot: 429s within this many seconds of a cut are the same one
DEFAULT_BACKOFF_S = 1.0  # a 429 without Retry-After: wait this long plus up to half of it again

OUTLOOK_SEGMENTS = frozenset({"mailfolders", "messages", "sendmail", "mailboxsettings", "events", "calendar",
                              "calendars", "contacts", "contactfolders", "inferenceclassification", "outlook"})
_READ_ACTIONS = {"checkmembergroups": 4, "checkmemberobjects": 4, "getmembergroups": 2, "getmemberobjects": 2,
                 "getbyids": 3, "getobjectsbyid": 3, "ismemberof": 4}
_MEMBERSHIP = frozenset({"memberof", "transitivememberof", "ownedobjects", "licensedetails"})
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def next_tick(when: float, tick: float = TICK_S) -> float:
    """The first point of the shared release grid at or after ``when`` (loop time)."""
    return math.ceil(when / tick - 1e-9) * tick


@dataclasses.dataclass(frozen=True)
class PacingLimits:
    """The published quotas (the app settings' defaults) and how many workers share them."""

    directory_ru_per_10s: float = 3500
    directory_writes_per_150s: float = 3000
    tenant_writes_per_300s: float = 18_000
    directory_write_share: float = 1.0
    idp_per_s: float = 1.0
    reports_per_10s: float = 5
    security_per_min: float = 150
    outlook_per_10min: float = 10_000
    outlook_concurrency: int = 4
    exo_per_10s: float = 300
    exo_concurrency: int = 10
    instances: int = 1

    @classmethod
    def from_settings(cls, values: Mapping[str, float]) -> "PacingLimits":
        """From Settings.pacing (the PACING_* app settings, validated there)."""
        ints = {"outlook_concurrency", "exo_concurrency", "instances"}
        kwargs: dict[str, Any] = {k: (int(v) if k in ints else float(v)) for k, v in values.items()}
        return cls(**kwargs)

    @classmethod
    def unlimited(cls) -> "PacingLimits":
        """No pacing at all (tools and tests that build an adapter without the worker's pacer)."""
        big = 1e12
        return cls(big, big, big, 1.0, big, big, big, big, 1_000_000, big, 1_000_000, 1)

    def per_worker(self, per_second: float) -> float:
        return per_second / max(1, self.instances) * (1 - MARGIN)

    def rates(self) -> dict[str, float]:
        """Units per second each bucket of one worker refills at."""
        writes = min(self.directory_writes_per_150s / 150, self.tenant_writes_per_300s / 300 * self.directory_write_share)
        return {
            "directory-ru": self.per_worker(self.directory_ru_per_10s / 10),
            "directory-write": self.per_worker(writes),
            "idp": self.per_worker(self.idp_per_s),
            "reports": self.per_worker(self.reports_per_10s / 10),
            "security": self.per_worker(self.security_per_min / 60),
            "outlook": self.per_worker(self.outlook_per_10min / 600),
            "exo": self.per_worker(self.exo_per_10s / 10),
        }

    def concurrency(self) -> dict[str, int]:
        per = max(1, self.instances)
        return {"outlook": max(1, self.outlook_concurrency // per), "exo": max(1, self.exo_concurrency // per)}


def identity_cost(method: str, segments: list[str], query: Mapping[str, str]) -> tuple[int, int]:
    """(resource units, writes) of an identity request, as the throttling docs' cost table says:
    listed paths cost more, ``$select`` -1, ``$expand`` +1, ``$top`` < 20 -1, never below 1;
    writes cost 1 RU and 1 write; the read actions that are POSTs (checkMemberGroups, ...) no write."""
    segs = [s.lower() for s in segments]
    last = segs[-1] if segs else ""
    if method == "POST" and last in _READ_ACTIONS:
        return _READ_ACTIONS[last], 0
    if method in _WRITES:
        return 1, 1
    base = 1
    if segs == ["users"]:
        base = 2
    elif len(segs) == 3 and segs[0] == "groups" and segs[2] in ("members", "transitivemembers"):
        base = 3 if segs[2] == "members" else 5
    elif len(segs) >= 3 and segs[0] == "users" and segs[2] in _MEMBERSHIP:
        base = 2
    elif segs and segs[0] == "oauth2permissiongrants":
        base = 2
    elif len(segs) == 3 and segs[0] == "serviceprincipals" and segs[2] == "approleassignments":
        base = 2
    cost = base - ("$select" in query) + ("$expand" in query)
    top = query.get("$top")
    if top is not None and top.isdigit() and int(top) < 20:
        cost -= 1
    return max(cost, 1), 0


@dataclasses.dataclass(frozen=True)
class Charge:
    bucket: str
    key: str
    cost: float


def classify_graph(method: str, path: str, query: Mapping[str, str]) -> tuple[list[Charge], str | None]:
    """The buckets a Graph request (``path`` without the version) draws on, and its Outlook mailbox."""
    method = method.upper()
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if segments and segments[0] in ("v1.0", "beta"):
        segments = segments[1:]
    segs = [s.lower() for s in segments]
    head = segs[0] if segs else ""
    if head == "identityprotection" or (head == "identity" and len(segs) > 1 and segs[1] == "conditionalaccess"):
        return [Charge("idp", "tenant", 1)], None
    if head in ("auditlogs", "reports"):
        return [Charge("reports", "tenant", 1)], None
    if head == "security":
        return [Charge("security", "tenant", 1)], None
    if head == "users" and len(segs) > 2 and segs[2] in OUTLOOK_SEGMENTS:
        return [Charge("outlook", segs[1], 1)], segs[1]
    ru, writes = identity_cost(method, segments, query)
    charges = [Charge("directory-write", "tenant", writes)] if writes else []
    return charges + [Charge("directory-ru", "tenant", ru)], None


class Bucket:
    """One quota: a token bucket whose waiters are served by priority, then first come, first served."""

    def __init__(self, name: str, rate: float, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.ceiling = self.rate = rate
        self.depth = max(rate * DEPTH_S, 1.0)
        # Released once a tick only when what a tick's releases leave (less than one request's units) and
        # a tick's refill fit the bank: else the cap would eat pace (at 3 units/s a sixth of it), and a
        # deeper bank would let two requests of a one-request-deep quota (Identity Protection's
        # 1/s, the audit logs' 5 / 10 s) go closer together than the quota allows. Those slow buckets
        # are released when their units are there.
        self.tick = TICK_S if self.depth >= 1.0 + rate * TICK_S else 0.0
        self.tokens = self.depth
        self._clock = clock
        self._rng = rng or random.Random()
        self.last = clock()
        self.paused_until = 0.0
        self.last_cut = float("-inf")
        # (priority, incident order, arrival, cost, future): served by priority, then the oldest incident's
        # calls first, then first come first served; a cancelled waiter is dropped when it reaches the top.
        self._waiters: list[tuple[int, float, int, float, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.waited = 0  # requests that had to wait for a token
        self.throttled = 0  # 429s the service answered for this bucket

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.last)
        if self.rate < self.ceiling and now >= self.paused_until:
            self.rate = min(self.ceiling, self.rate + elapsed * self.ceiling / RECOVERY_S)
        self.tokens = min(self.depth, self.tokens + elapsed * self.rate)
        self.last = now

    def _queued(self) -> bool:
        while self._waiters and self._waiters[0][4].done():
            heapq.heappop(self._waiters)
        return bool(self._waiters)

    async def take(self, cost: float, level: Priority = Priority.NORMAL, order: float = 0.0) -> None:
        """Wait until ``cost`` units may be spent (a cost above the depth waits for a full bucket).
        ``order``: the incident's place in line (its creation time): among waiters of one priority the
        oldest incident's calls go first, so a storm's first incidents finish their step (and reach
        the password reset) first instead of every incident advancing a call at a time."""
        now = self._clock()
        self._refill(now)
        if not self._queued() and now >= self.paused_until and self.tokens >= min(cost, self.depth):
            self.tokens -= cost
            self.granted += 1
            return
        self.waited += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(level), order, next(self._arrivals), cost, future))
        self._pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.tokens += cost  # granted as we were cancelled: give the units back
            raise

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        self._refill(now)
        if now < self.paused_until:
            self._arm(self.paused_until - now)
            return
        while self._queued():  # (drops the cancelled waiters on top)
            cost, future = self._waiters[0][3], self._waiters[0][4]
            need = min(cost, self.depth)
            if self.tokens < need:
                self._arm((need - self.tokens) / self.rate)
                return
            heapq.heappop(self._waiters)
            self.tokens -= cost
            self.granted += 1
            future.set_result(None)

    def _arm(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.001)
        self._timer = loop.call_at(next_tick(when, self.tick) if self.tick else when, self._pump)

    def penalize(self, retry_after: float | None) -> None:
        """The service answered 429: halve the pace (once a second at most) and stop for Retry-After."""
        now = self._clock()
        self._refill(now)
        self.throttled += 1
        if now - self.last_cut >= CUT_INTERVAL_S:
            self.rate = max(self.ceiling * FLOOR, self.rate * CUT)
            self.last_cut = now
        pause = retry_after if retry_after is not None else DEFAULT_BACKOFF_S * (1 + self._rng.random() / 2)
        self.paused_until = max(self.paused_until, now + pause)
        self.tokens = min(self.tokens, 0.0)
        if self._queued():
            self._pump()

    def snapshot(self) -> dict[str, float]:
        return {"rate": round(self.rate, 4), "ceiling": round(self.ceiling, 4), "granted": self.granted,
                "waited": self.waited, "throttled": self.throttled}


class KeyedSlots:
    """At most ``limit`` requests in flight per key (Outlook: per mailbox), first come, first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: dict[str, int] = {}
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        if self._busy.get(key, 0) >= self.limit or self._waiters.get(key):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, collections.deque()).append(future)
            try:
                await future  # the slot was handed over: _busy already counts it
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release(key)
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters[key].remove(future)
                raise
        else:
            self._busy[key] = self._busy.get(key, 0) + 1
        try:
            yield
        finally:
            self._release(key)

    def _release(self, key: str) -> None:
        queue = self._waiters.get(key)
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)  # hand the slot over
                return
        self._waiters.pop(key, None)
        left = self._busy.get(key, 1) - 1
        if left > 0:
            self._busy[key] = left
        else:
            self._busy.pop(key, None)


class Ticket:
    """One request's pass through the pacer; tell it when the service answered 429."""

    __slots__ = ("_pacer", "_charges", "_write")

    def __init__(self, pacer: "Pacer", charges: list[Charge], write: bool) -> None:
        self._pacer, self._charges, self._write = pacer, charges, write

    def throttled(self, retry_after: float | None, information: str | None = None) -> None:
        """Slow down the bucket the 429 is about: the one identity's x-ms-throttle-information names,
        else the request's writes (a write) or its first bucket."""
        names = [c.bucket for c in self._charges]
        info = (information or "").lower()
        if "write" in info and "directory-write" in names:
            target = "directory-write"
        elif "resourceunit" in info and "directory-ru" in names:
            target = "directory-ru"
        else:
            target = names[0]
        self._pacer.buckets[target].penalize(retry_after)


class Pacer:
    """Every bucket of one worker; shared by the Graph and Exchange adapters."""

    def __init__(self, limits: PacingLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or PacingLimits()
        self._clock = clock
        self.buckets: dict[str, Bucket] = {name: Bucket(name, rate, clock) for name, rate in self.limits.rates().items()}
        self._outlook_buckets: dict[str, Bucket] = {}
        slots = self.limits.concurrency()
        self.outlook_slots = KeyedSlots(slots["outlook"])
        self.exo_slots = KeyedSlots(slots["exo"])

    def _bucket(self, charge: Charge) -> Bucket:
        if charge.bucket != "outlook":
            return self.buckets[charge.bucket]
        bucket = self._outlook_buckets.get(charge.key)
        if bucket is None:
            if len(self._outlook_buckets) > 10_000:  # forget idle mailboxes
                self._outlook_buckets = {k: b for k, b in self._outlook_buckets.items() if b.tokens < b.depth}
            bucket = self._outlook_buckets[charge.key] = Bucket("outlook", self.buckets["outlook"].ceiling, self._clock)
        return bucket

    async def _take(self, charges: Iterable[Charge]) -> None:
        level, order = current(), current_order()
        for charge in charges:
            await self._bucket(charge).take(charge.cost, level, order)

    @contextlib.asynccontextmanager
    async def graph(self, method: str, path: str, query: Mapping[str, str] | None = None) -> AsyncIterator[Ticket]:
        """Wait for the request's turn at every bucket it draws on (and its mailbox's slot)."""
        charges, mailbox = classify_graph(method, path, query or {})
        await self._take(charges)
        ticket = _GraphTicket(self, charges, mailbox)
        if mailbox is None:
            yield ticket
            return
        async with self.outlook_slots.slot(mailbox):
            yield ticket

    @contextlib.asynccontextmanager
    async def exo(self, cmdlet: str) -> AsyncIterator[Ticket]:
        """Every cmdlet: one unit of the Exchange admin API's (assumed) quota and one of its slots."""
        charges = [Charge("exo", "tenant", 1)]
        await self._take(charges)
        async with self.exo_slots.slot("tenant"):
            yield Ticket(self, charges, write=not cmdlet.startswith("Get-"))

    def snapshot(self) -> dict[str, Any]:
        return {name: bucket.snapshot() for name, bucket in self.buckets.items()}


class _GraphTicket(Ticket):
    __slots__ = ("_mailbox",)

    def __init__(self, pacer: Pacer, charges: list[Charge], mailbox: str | None) -> None:
        super().__init__(pacer, charges, write=any(c.bucket == "directory-write" for c in charges))
        self._mailbox = mailbox

    def throttled(self, retry_after: float | None, information: str | None = None) -> None:
        if self._mailbox is not None:
            self._pacer._bucket(Charge("outlook", self._mailbox, 1)).penalize(retry_after)
            return
        super().throttled(retry_after, information)
