"""Microsoft's throttles, keyed the way Microsoft keys them: per service and per scope.

A *profile* is a set of quotas. ``published`` holds the numbers of Microsoft Graph's
service-specific throttling limits (learn.microsoft.com/graph/throttling-limits;
microsoft-graph-docs-contrib ``concepts/throttling-limits.md``), the Exchange admin API's
being assumed (Microsoft publishes none); ``none`` throttles nothing (the default: the tests
that are not about throttling). Any quota's numbers can be overridden
(``{"dir-write-tenant": {"limit": 1800}}``: the bench's ``--write-share 0.1``).

Each request is *classified* into the quotas it draws on, with its cost:

- ``graph``: every Graph request, per app (130,000 requests / 10 s);
- ``dir-ru``: identity and access (users, groups, roles, ...) per app + tenant, in resource units
  from the docs' cost table (``GET users`` 2, ``checkMemberGroups`` 4, ``transitiveMemberOf`` 2, ...;
  ``$select`` -1, ``$expand`` +1, ``$top`` < 20 -1, never below 1): 3,500 / 5,000 / 8,000 RU per
  10 s for a tenant of < 50 / 50-500 / > 500 users (the simulator counts its users);
- ``dir-write`` / ``dir-write-tenant``: identity writes, 3,000 per 150 s per app + tenant and
  18,000 per 300 s per tenant (every app together: the bench gives this app a share of it);
- ``reports``: directory audits and sign-ins (and, with ``auth_methods_bucket: reports``,
  the per-user authentication methods the docs' include names ambiguously), 5 requests per 10 s
  per app + tenant;
- ``idp``: Identity Protection and Conditional Access, 1 request per second per tenant (all apps),
  answered **without Retry-After**;
- ``outlook`` / ``outlook-concurrency``: mail, rules and sendMail per app and mailbox, 10,000
  requests per 10 min and 4 concurrent requests (``outlook_concurrency_scope: app`` keeps the
  older text's reading: 4 concurrent per app whatever the mailbox);
- ``security``: alerts and secure scores, 150 requests per minute per app + tenant;
- ``exo`` / ``exo-concurrency``: the Exchange admin API (InvokeCommand), 300 cmdlets per 10 s and 10
  concurrent per app + tenant (**assumed**).

A rate quota is a token bucket refilled at limit / window per second. Microsoft does not publish
the bucket's depth; the simulator allows one second's worth (never less than one request's cost):
the strict side, so a client that only stays under the average in bursts is throttled.
A throttled request does no work and costs nothing. Identity 429s carry ``x-ms-throttle-scope``
and ``x-ms-throttle-information`` as the docs describe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

DOCS = "https://learn.microsoft.com/graph/throttling-limits"


class LimitsConfigError(ValueError):
    """Invalid limits configuration."""


@dataclasses.dataclass(frozen=True)
class Quota:
    """One published (or assumed) limit: ``limit`` units per ``window_s`` (0: concurrent requests)."""

    name: str
    service: str
    scope: str  # "app" | "tenant" | "app_tenant" | "app_mailbox"
    limit: float
    window_s: float
    unit: str  # "requests" | "resource units" | "writes" | "concurrent requests" | "cmdlets"
    retry_after: bool = True
    assumed: bool = False
    information: str = ""  # x-ms-throttle-information on a 429 (identity quotas)
    throttle_limit: str = ""  # the <Limit> part of x-ms-throttle-scope: Read | Write | ReadWrite

    @property
    def concurrent(self) -> bool:
        return self.window_s == 0

    @property
    def rate(self) -> float:
        """Units per second (0 for a concurrency quota)."""
        return self.limit / self.window_s if self.window_s else 0.0


# Resource units of a tenant's identity reads per 10 s, by size (docs: S < 50, M 50-500, L > 500 users).
RU_BY_SIZE = ((50, 3500.0), (501, 5000.0), (None, 8000.0))

PUBLISHED: tuple[Quota, ...] = (
    Quota("graph", "graph", "app", 130_000, 10, "requests"),
    Quota("dir-ru", "directory", "app_tenant", 5000, 10, "resource units", information="ResourceUnitLimitExceeded",
          throttle_limit="Read"),
    Quota("dir-write", "directory", "app_tenant", 3000, 150, "writes", information="WriteLimitExceeded",
          throttle_limit="Write"),
    Quota("dir-write-tenant", "directory", "tenant", 18_000, 300, "writes", information="WriteLimitExceeded",
          throttle_limit="Write"),
    Quota("reports", "reports", "app_tenant", 5, 10, "requests"),
    Quota("idp", "idp", "tenant", 1, 1, "requests", retry_after=False),
    Quota("outlook", "outlook", "app_mailbox", 10_000, 600, "requests"),
    Quota("outlook-concurrency", "outlook", "app_mailbox", 4, 0, "concurrent requests"),
    Quota("security", "security", "app_tenant", 150, 60, "requests"),
    Quota("exo", "exo", "app_tenant", 300, 10, "cmdlets", assumed=True),
    Quota("exo-concurrency", "exo", "app_tenant", 10, 0, "concurrent requests", assumed=True),
)
PROFILES: dict[str, tuple[Quota, ...]] = {"published": PUBLISHED, "none": ()}
_OVERRIDABLE = ("limit", "window_s", "retry_after")
OUTLOOK_SEGMENTS = frozenset({"mailfolders", "messages", "sendmail", "mailboxsettings", "events", "calendar",
                              "calendars", "contacts", "contactfolders", "inferenceclassification", "outlook"})
READ_ACTIONS = {"checkmembergroups": 4, "checkmemberobjects": 4, "getmembergroups": 2, "getmemberobjects": 2,
                "getbyids": 3, "getobjectsbyid": 3, "ismemberof": 4}
MEMBERSHIP_READS = frozenset({"memberof", "transitivememberof", "ownedobjects", "licensedetails"})


@dataclasses.dataclass(frozen=True)
class Charge:
    """What one request costs on one quota, and the key of the bucket it draws from."""

    quota: Quota
    cost: float
    key: str


@dataclasses.dataclass
class Throttled:
    """A 429 decided by a quota."""

    quota: Quota
    retry_after: str | None
    headers: dict[str, str]


def identity_cost(method: str, segments: Sequence[str], query: Mapping[str, str]) -> tuple[int, int]:
    """(resource units, writes) of an identity-and-access request, per the docs' cost table."""
    segs = [s.lower() for s in segments]
    if segs and segs[0] == "me":
        segs = ["users", "me", *segs[1:]]
    last = segs[-1] if segs else ""
    if method == "POST" and last in READ_ACTIONS:
        return READ_ACTIONS[last], 0
    write = 1 if method in ("POST", "PATCH", "PUT", "DELETE") else 0
    base = 1
    if method == "GET":
        if segs == ["users"]:
            base = 2
        elif len(segs) == 3 and segs[0] == "groups" and segs[2] == "members":
            base = 3
        elif len(segs) == 3 and segs[0] == "groups" and segs[2] == "transitivemembers":
            base = 5
        elif len(segs) >= 3 and segs[0] == "users" and segs[2] in MEMBERSHIP_READS:
            base = 2
        elif segs and segs[0] == "oauth2permissiongrants":
            base = 2
        elif len(segs) == 3 and segs[0] == "serviceprincipals" and segs[2] == "approleassignments":
            base = 2
    if write:
        return 1, 1
    cost = base
    if "$select" in query:
        cost -= 1
    if "$expand" in query:
        cost += 1
    top = query.get("$top")
    if top is not None and top.isdigit() and int(top) < 20:
        cost -= 1
    return max(cost, 1), 0


class Bucket:
    """A token bucket: ``rate`` units per second, at most ``depth`` units banked."""

    __slots__ = ("rate", "depth", "tokens", "last")

    def __init__(self, rate: float, depth: float, now: float) -> None:
        self.rate, self.depth, self.tokens, self.last = rate, depth, depth, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` units are banked (0: now)."""
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate


class Limits:
    """The throttles of one simulated tenant: profile, per-quota overrides, buckets, counters."""

    def __init__(self, config: Mapping[str, Any] | None = None, *, user_count: Callable[[], int] = lambda: 0,
                 app_id: str = "", tenant_id: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self._user_count = user_count
        self.app_id, self.tenant_id = app_id, tenant_id
        self._clock = clock
        self.configure(config or {"profile": "none"}, announce=False)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, config: Mapping[str, Any], announce: bool = True) -> None:
        """``{"profile": "published"|"none", "overrides": {name: {"limit", "window_s", "retry_after"}},
        "outlook_concurrency_scope": "app_mailbox"|"app", "auth_methods_bucket": "directory"|"reports"}``."""
        if not isinstance(config, Mapping):
            raise LimitsConfigError("limits configuration must be a JSON object")
        unknown = set(config) - {"profile", "overrides", "outlook_concurrency_scope", "auth_methods_bucket"}
        if unknown:
            raise LimitsConfigError(f"unknown limits keys: {sorted(unknown)}")
        profile = config.get("profile", "none")
        if profile not in PROFILES:
            raise LimitsConfigError(f"profile must be one of {sorted(PROFILES)}")
        scope = config.get("outlook_concurrency_scope", "app_mailbox")
        if scope not in ("app_mailbox", "app"):
            raise LimitsConfigError("outlook_concurrency_scope must be 'app_mailbox' or 'app'")
        auth_bucket = config.get("auth_methods_bucket", "directory")
        if auth_bucket not in ("directory", "reports"):
            raise LimitsConfigError("auth_methods_bucket must be 'directory' or 'reports'")
        overrides = config.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise LimitsConfigError("overrides must be an object of quota name -> {limit, window_s, retry_after}")
        quotas = {q.name: q for q in PROFILES[profile]}
        for name, change in overrides.items():
            if name not in quotas:
                raise LimitsConfigError(f"no quota {name!r} in profile {profile!r} (have {sorted(quotas)})")
            if not isinstance(change, Mapping):
                change = {"limit": change}
            bad = set(change) - set(_OVERRIDABLE)
            if bad:
                raise LimitsConfigError(f"{name}: only {list(_OVERRIDABLE)} can be overridden, not {sorted(bad)}")
            try:
                values: dict[str, Any] = {k: (bool(v) if k == "retry_after" else float(v)) for k, v in change.items()}
            except (TypeError, ValueError) as exc:
                raise LimitsConfigError(f"{name}: {exc}") from exc
            if values.get("limit", 1) <= 0 or values.get("window_s", 1) < 0:
                raise LimitsConfigError(f"{name}: limit must be > 0 and window_s >= 0")
            quotas[name] = dataclasses.replace(quotas[name], **values)
        if "dir-ru" in quotas and "dir-ru" in overrides:
            self._ru_fixed = True
        else:
            self._ru_fixed = False
        if "outlook-concurrency" in quotas and scope == "app":
            quotas["outlook-concurrency"] = dataclasses.replace(quotas["outlook-concurrency"], scope="app")
        self.profile = profile
        self.outlook_concurrency_scope = scope
        self.auth_methods_bucket = auth_bucket
        self.overrides = {k: dict(v) if isinstance(v, Mapping) else {"limit": v} for k, v in overrides.items()}
        self.quotas = quotas
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.in_flight: dict[tuple[str, str], int] = {}
        self.counters: dict[str, dict[str, float]] = {
            name: {"requests": 0, "cost": 0.0, "throttled": 0, "peak_in_flight": 0} for name in quotas}
        # per (quota, key): cost spent (rate quotas) or seconds a slot was held (concurrency quotas)
        self.spent: dict[tuple[str, str], float] = {}
        logger.log(logging.INFO if announce else logging.DEBUG, "Throttling profile %s, overrides %s", profile,
                   self.overrides or "none")

    def quota(self, name: str) -> Quota | None:
        """The quota as it applies now (dir-ru follows the tenant's size unless overridden)."""
        q = self.quotas.get(name)
        if q is not None and name == "dir-ru" and not self._ru_fixed:
            users = self._user_count()
            limit = next(ru for bound, ru in RU_BY_SIZE if bound is None or users < bound)
            if limit != q.limit:
                q = self.quotas[name] = dataclasses.replace(q, limit=limit)
        return q

    # -- classification ------------------------------------------------------------------------

    def _charge(self, name: str, cost: float, key: str) -> list[Charge]:
        q = self.quota(name)
        return [Charge(q, cost, key)] if q is not None else []

    def classify_graph(self, method: str, segments: Sequence[str], query: Mapping[str, str],
                       mailbox: Callable[[str], str] = str.lower) -> list[Charge]:
        """The quotas a Graph request draws on (``mailbox`` turns a user key into the mailbox's id)."""
        if not self.quotas:
            return []
        segs = [s.lower() for s in segments]
        charges = self._charge("graph", 1, "app")
        head = segs[0] if segs else ""
        if head == "identityprotection" or (head == "identity" and len(segs) > 1 and segs[1] == "conditionalaccess"):
            return charges + self._charge("idp", 1, "tenant")
        if head in ("auditlogs", "reports"):
            return charges + self._charge("reports", 1, "app_tenant")
        if head == "security":
            return charges + self._charge("security", 1, "app_tenant")
        at = 2 if head == "users" else 1
        if head in ("users", "me") and len(segs) > at and segs[at] in OUTLOOK_SEGMENTS:
            box = mailbox(segments[1]) if head == "users" else "me"
            return (charges + self._charge("outlook", 1, box)
                    + self._charge("outlook-concurrency", 1, "app" if self.outlook_concurrency_scope == "app" else box))
        if (self.auth_methods_bucket == "reports" and head == "users" and len(segs) > 3 and segs[2] == "authentication"
                and segs[3] != "requirements"):
            return charges + self._charge("reports", 1, "app_tenant")
        ru, writes = identity_cost(method.upper(), segments, query)
        charges += self._charge("dir-ru", ru, "app_tenant")
        if writes:
            charges += self._charge("dir-write", writes, "app_tenant") + self._charge("dir-write-tenant", writes, "tenant")
        return charges

    def classify_exo(self, cmdlet: str | None) -> list[Charge]:
        """Every InvokeCommand draws on the Exchange admin API's (assumed) quotas."""
        return self._charge("exo", 1, "app_tenant") + self._charge("exo-concurrency", 1, "app_tenant")

    # -- decisions -----------------------------------------------------------------------------

    def _throttled(self, quota: Quota, wait: float) -> Throttled:
        from .faults import format_retry_after

        self.counters[quota.name]["throttled"] += 1
        headers: dict[str, str] = {}
        if quota.throttle_limit:  # identity and access: throttling-limits.md "Throttling headers"
            scope = {"app_tenant": "Tenant_Application", "tenant": "Tenant"}.get(quota.scope, "Application")
            target = self.tenant_id
            headers["x-ms-throttle-scope"] = f"{scope}/{quota.throttle_limit}/{self.app_id}/{target}"
            headers["x-ms-throttle-information"] = quota.information
        return Throttled(quota, format_retry_after(max(wait, 0.01)) if quota.retry_after else None, headers)

    def take(self, charges: Sequence[Charge]) -> Throttled | None:
        """Spend every rate quota's cost, or none of them and answer the 429 of the first one short."""
        now = self._clock()
        rated = [c for c in charges if not c.quota.concurrent]
        buckets = []
        for charge in rated:
            q = charge.quota
            bucket = self.buckets.get((q.name, charge.key))
            if bucket is None:
                bucket = self.buckets[(q.name, charge.key)] = Bucket(q.rate, max(q.rate, charge.cost, 1.0), now)
            bucket.refill(now)
            wait = bucket.wait_for(charge.cost)
            if wait > 0:
                return self._throttled(q, wait)
            buckets.append(bucket)
        for charge, bucket in zip(rated, buckets):
            bucket.tokens -= charge.cost
            counter = self.counters[charge.quota.name]
            counter["requests"] += 1
            counter["cost"] += charge.cost
            slot = (charge.quota.name, charge.key)
            self.spent[slot] = self.spent.get(slot, 0.0) + charge.cost
        return None

    @contextlib.contextmanager
    def concurrency(self, charges: Sequence[Charge]) -> Iterator[Throttled | None]:
        """Hold a slot of every concurrency quota for the request's life; a full one throttles it."""
        held: list[tuple[str, str]] = []
        denied: Throttled | None = None
        started = self._clock()
        for charge in charges:
            q = charge.quota
            if not q.concurrent:
                continue
            slot = (q.name, charge.key)
            if self.in_flight.get(slot, 0) >= q.limit:
                denied = self._throttled(q, 1.0)
                break
            self.in_flight[slot] = self.in_flight.get(slot, 0) + 1
            counter = self.counters[q.name]
            counter["peak_in_flight"] = max(counter["peak_in_flight"], self.in_flight[slot])
            held.append(slot)
        try:
            yield denied
        finally:
            elapsed = self._clock() - started
            for slot in held:
                self.spent[slot] = self.spent.get(slot, 0.0) + elapsed
                left = self.in_flight[slot] - 1
                if left:
                    self.in_flight[slot] = left
                else:
                    del self.in_flight[slot]
            if denied is None:
                for charge in charges:
                    if charge.quota.concurrent:
                        self.counters[charge.quota.name]["requests"] += 1
                        self.counters[charge.quota.name]["cost"] += charge.cost

    def to_dict(self) -> dict[str, Any]:
        """JSON view: profile, the quotas as they apply now, counters."""
        quotas = {}
        for name in self.quotas:
            q = self.quota(name)
            assert q is not None
            busiest = max((v for (n, _), v in self.spent.items() if n == name), default=0.0)
            quotas[name] = {"service": q.service, "scope": q.scope, "limit": q.limit, "window_s": q.window_s,
                            "unit": q.unit, "rate_per_s": round(q.rate, 6), "retry_after": q.retry_after,
                            "assumed": q.assumed,
                            # The least time the busiest key's traffic needs under this quota: cost / rate, or
                            # slot-seconds / slots for a concurrency quota.
                            "floor_s": round(busiest / q.limit if q.concurrent else busiest / q.rate, 3)}
        return {"profile": self.profile, "overrides": self.overrides,
                "outlook_concurrency_scope": self.outlook_concurrency_scope,
                "auth_methods_bucket": self.auth_methods_bucket, "quotas": quotas,
                "counters": {k: dict(v) for k, v in self.counters.items()}}

    def reset_counters(self) -> None:
        for counter in self.counters.values():
            counter.update(requests=0, cost=0.0, throttled=0, peak_in_flight=0)
        self.spent.clear()


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``["dir-write-tenant=1800", "idp.window_s=2"]`` -> overrides (``NAME=V`` sets the limit)."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise LimitsConfigError(f"--limit expects NAME=VALUE or NAME.FIELD=VALUE, not {item!r}")
        quota, _, field = name.strip().partition(".")
        try:
            out.setdefault(quota, {})[field or "limit"] = float(value)
        except ValueError as exc:
            raise LimitsConfigError(f"--limit {item!r}: {exc}") from exc
    return out
