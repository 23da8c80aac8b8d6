"""Fault injection for the simulator: latency, token-bucket throttling, random errors, hangs, one-shot faults.

Configuration (per service: "graph", "exo", "token"), all keys optional:

    {"graph": {"latency_ms": 20, "latency_jitter_ms": 10,      # fixed + uniform(0, jitter) added latency
               "rate_per_s": 50, "burst": 10,                   # token bucket; beyond it 429 + Retry-After
               "error_rate": 0.05, "error_statuses": [503, 500],# random 5xx (503 carries Retry-After)
               "error_retry_after": "1",
               "hang_rate": 0.01, "hang_s": 30, "hang_mode": "504",   # sleep hang_s then 504 ("drop": close)
               "seed": 42}}                                     # deterministic RNG for the random faults

One-shot faults (`add_once`): {"service", "method", "path_contains", "cmdlet", "status", "count",
"retry_after", "after_effect", "hang_s", "message", "skip"}. After `skip` matching requests have passed
(default 0: e.g. skip 1 fails page 2 of a paged read), the next `count` matching requests fail that way.
Matching text: Graph -> the request path (no query); EXO -> "<path>#<CmdletName>";
token -> "<path>?resource=<resource>". With "after_effect": true the simulator performs the
request's work and then answers the fault (crash-after-side-effect).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

logger = logging.getLogger(__name__)

SERVICES = ("graph", "exo", "token")
_SERVICE_KEYS = {
    "latency_ms", "latency_jitter_ms", "rate_per_s", "burst", "error_rate", "error_statuses",
    "error_retry_after", "hang_rate", "hang_s", "hang_mode", "seed",
}
_ONCE_KEYS = {"service", "method", "path_contains", "cmdlet", "status", "count", "retry_after",
              "after_effect", "hang_s", "message", "skip"}


class FaultConfigError(ValueError):
    """Invalid fault configuration."""


@dataclass
class Decision:
    """What to do instead of (or after) handling a request."""

    kind: str                    # "throttle" | "error" | "hang" | "once"
    status: int                  # HTTP status to answer (0 = drop the connection)
    retry_after: str | None = None
    hang_s: float = 0.0
    after_effect: bool = False
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (x-ms-throttle-*)
    quota: str | None = None  # the limits.py quota that throttled the request

    def describe(self) -> str:
        """Short text for the request log."""
        text = f"{self.kind}:{self.status}"
        if self.quota:
            text += f":{self.quota}"
        if self.after_effect:
            text += ":after_effect"
        return text


def format_retry_after(seconds: float) -> str:
    """Seconds as Graph writes them: integer when whole, otherwise up to 2 decimals ("0.35")."""
    seconds = max(seconds, 0.01)
    if abs(seconds - round(seconds)) < 1e-9:
        return str(int(round(seconds)))
    text = f"{seconds:.2f}".rstrip("0").rstrip(".")
    return text if float(text) > 0 else "0.01"


class ServiceFaults:
    """Runtime fault state of one service (config, token bucket, RNG)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        unknown = set(config) - _SERVICE_KEYS
        if unknown:
            raise FaultConfigError(f"unknown fault keys: {sorted(unknown)}")
        self.config = dict(config)
        self.latency_ms = float(config.get("latency_ms", 0) or 0)
        self.jitter_ms = float(config.get("latency_jitter_ms", 0) or 0)
        self.rate = float(config.get("rate_per_s", 0) or 0)
        self.burst = float(config.get("burst", 0) or 0) or max(self.rate, 1.0)
        self.error_rate = float(config.get("error_rate", 0) or 0)
        self.error_statuses = [int(s) for s in config.get("error_statuses", [503, 500])] or [503]
        self.error_retry_after = str(config.get("error_retry_after", "1"))
        self.hang_rate = float(config.get("hang_rate", 0) or 0)
        self.hang_s = float(config.get("hang_s", 30) or 0)
        self.hang_mode = str(config.get("hang_mode", "504"))
        if self.hang_mode not in ("504", "drop"):
            raise FaultConfigError("hang_mode must be '504' or 'drop'")
        for name, value in (("error_rate", self.error_rate), ("hang_rate", self.hang_rate)):
            if not 0 <= value <= 1:
                raise FaultConfigError(f"{name} must be between 0 and 1")
        if self.rate < 0 or self.latency_ms < 0 or self.jitter_ms < 0:
            raise FaultConfigError("rates and latencies must be >= 0")
        self.rng = random.Random(config.get("seed"))
        self.tokens = self.burst
        self.last = time.monotonic()
        self.counters = {"throttled": 0, "errors": 0, "hangs": 0}

    def latency(self) -> float:
        """Seconds of latency to add to one request."""
        if not self.latency_ms and not self.jitter_ms:
            return 0.0
        extra = self.rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0
        return (self.latency_ms + extra) / 1000.0

    def decide(self) -> Decision | None:
        """Throttle, error or hang decision for one logical request (None = proceed)."""
        if self.rate > 0:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
            else:
                self.counters["throttled"] += 1
                return Decision("throttle", 429, format_retry_after((1.0 - self.tokens) / self.rate))
        if self.hang_rate and self.rng.random() < self.hang_rate:
            self.counters["hangs"] += 1
            return Decision("hang", 0 if self.hang_mode == "drop" else 504, hang_s=self.hang_s)
        if self.error_rate and self.rng.random() < self.error_rate:
            self.counters["errors"] += 1
            status = self.rng.choice(self.error_statuses)
            return Decision("error", status, self.error_retry_after if status in (503, 429) else None)
        return None


@dataclass
class OneShot:
    """A queued fault for the next `count` matching requests."""

    service: str
    status: int
    count: int = 1
    method: str | None = None
    path_contains: str | None = None
    cmdlet: str | None = None
    retry_after: str | None = None
    after_effect: bool = False
    hang_s: float = 0.0
    message: str | None = None
    skip: int = 0
    fired: int = field(default=0)

    def matches(self, service: str, method: str, target: str, cmdlet: str | None) -> bool:
        """Whether this fault applies to the request."""
        if service != self.service:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path_contains and self.path_contains.lower() not in target.lower():
            return False
        if self.cmdlet and (cmdlet or "").lower() != self.cmdlet.lower():
            return False
        return True

    def to_dict(self) -> dict:
        """JSON view."""
        return {k: getattr(self, k) for k in ("service", "method", "path_contains", "cmdlet", "status", "count",
                                              "retry_after", "after_effect", "hang_s", "message", "skip", "fired")}


class FaultInjector:
    """All fault configuration and state of one simulator."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.services: dict[str, ServiceFaults] = {}
        self.once: list[OneShot] = []
        self.fired_once = 0
        if config:
            self.configure(config, announce=False)

    def configure(self, config: Mapping[str, Any], announce: bool = True) -> None:
        """Replace the per-service configuration (services absent from `config` get no faults)."""
        if not isinstance(config, Mapping):
            raise FaultConfigError("fault configuration must be a JSON object")
        unknown = set(config) - set(SERVICES) - {"once"}
        if unknown:
            raise FaultConfigError(f"unknown services: {sorted(unknown)} (expected {list(SERVICES)})")
        services = {}
        for name in SERVICES:
            cfg = config.get(name)
            if cfg:
                if not isinstance(cfg, Mapping):
                    raise FaultConfigError(f"{name}: expected an object")
                services[name] = ServiceFaults(cfg)
        once = [self._make_once(item) for item in config.get("once", [])]
        self.services = services
        self.once = once
        logger.log(logging.INFO if announce else logging.DEBUG, "Fault configuration set: %s",
                   {k: v.config for k, v in services.items()} or "none")

    def clear(self) -> None:
        """Remove every fault, including queued one-shots."""
        self.services = {}
        self.once = []

    @staticmethod
    def _make_once(spec: Mapping[str, Any]) -> OneShot:
        if not isinstance(spec, Mapping):
            raise FaultConfigError("one-shot fault must be a JSON object")
        unknown = set(spec) - _ONCE_KEYS
        if unknown:
            raise FaultConfigError(f"unknown one-shot keys: {sorted(unknown)}")
        service = spec.get("service", "graph")
        if service not in SERVICES:
            raise FaultConfigError(f"service must be one of {list(SERVICES)}")
        try:
            status = int(spec.get("status", 503))
            count = int(spec.get("count", 1))
            hang_s = float(spec.get("hang_s", 0) or 0)
            skip = int(spec.get("skip", 0) or 0)
        except (TypeError, ValueError) as exc:
            raise FaultConfigError(f"invalid one-shot fault: {exc}") from exc
        if count < 1:
            raise FaultConfigError("count must be >= 1")
        if skip < 0:
            raise FaultConfigError("skip must be >= 0")
        if status != 0 and not 400 <= status <= 599:
            raise FaultConfigError("status must be a 4xx/5xx code (or 0 to drop the connection)")
        retry_after = spec.get("retry_after")
        return OneShot(service=service, status=status, count=count, method=spec.get("method"),
                       path_contains=spec.get("path_contains"), cmdlet=spec.get("cmdlet"),
                       retry_after=None if retry_after is None else str(retry_after),
                       after_effect=bool(spec.get("after_effect", False)), hang_s=hang_s,
                       message=spec.get("message"), skip=skip)

    def add_once(self, spec: Mapping[str, Any]) -> OneShot:
        """Queue a one-shot fault."""
        shot = self._make_once(spec)
        self.once.append(shot)
        logger.info("One-shot fault queued: %s", shot.to_dict())
        return shot

    def latency(self, service: str) -> float:
        """Seconds of latency for one request to `service`."""
        svc = self.services.get(service)
        return svc.latency() if svc else 0.0

    def take_once(self, service: str, method: str, target: str, cmdlet: str | None = None) -> Decision | None:
        """Consume the first matching one-shot fault, if any."""
        if not self.once:
            return None
        for shot in self.once:
            if shot.matches(service, method, target, cmdlet):
                if shot.skip > 0:
                    shot.skip -= 1
                    continue
                shot.count -= 1
                shot.fired += 1
                self.fired_once += 1
                if shot.count <= 0:
                    self.once.remove(shot)
                return Decision("once", shot.status, shot.retry_after, hang_s=shot.hang_s,
                                after_effect=shot.after_effect, message=shot.message)
        return None

    def decide(self, service: str) -> Decision | None:
        """Random / rate-limit fault for one logical request."""
        svc = self.services.get(service)
        return svc.decide() if svc else None

    def to_dict(self) -> dict:
        """JSON view: configuration, pending one-shots and counters."""
        return {
            "config": {k: v.config for k, v in self.services.items()},
            "once": [s.to_dict() for s in self.once],
            "counters": {k: dict(v.counters) for k, v in self.services.items()},
            "once_fired": self.fired_once,
        }
