"""One retry policy for calls to Microsoft 365: the Graph adapter, the Exchange adapter and the
runner's verify-then-repeat (shared/steps/base.py) all decide "wait and try again, or give
up" here, the same way.

- 429 (throttled): the request was not processed, so it is always safe to repeat.
- 408/5xx, timeouts and transport errors (transient): repeated only when the request is safe
  to repeat (a read, or a write whose outcome is verified first); a write that may have
  landed goes back to the step, whose checkpoint/verify decides.
- ``Retry-After`` is honoured as given (fractions included: Graph sends "2.128"): the next
  try never comes sooner. Without one, the wait doubles from a base per kind, capped.
- A call never waits more than ``budget_s`` in total: when honouring Retry-After would pass
  it, the error is raised instead (as a TransientError carrying the Retry-After, so the
  platform's retry can wait for it).
- A little jitter de-synchronises retries of many workers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

__all__ = [
    "ADAPTER_POLICY",
    "EFFECT_POLICY",
    "TRANSIENT_STATUS",
    "Retrier",
    "RetryKind",
    "RetryPolicy",
    "kind_of_status",
    "parse_retry_after",
]

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RetryKind(StrEnum):
    THROTTLED = "throttled"  # 429
    TRANSIENT = "transient"  # 408, 5xx, timeout, transport error


def kind_of_status(status: int | None) -> RetryKind | None:
    """The kind of a failed HTTP status, or None when retrying cannot help (4xx)."""
    if status == 429:
        return RetryKind.THROTTLED
    if status in TRANSIENT_STATUS:
        return RetryKind.TRANSIENT
    return None


def parse_retry_after(value: Any) -> float | None:
    """Retry-After as seconds (a header value, or a list of them); None when absent or not a
    number of seconds (an HTTP date is not used by Graph or Exchange)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    throttle_retries: int = 6
    transient_retries: int = 2
    budget_s: float = 60.0
    throttle_base_s: float = 0.5
    transient_base_s: float = 0.25
    max_backoff_s: float = 8.0
    max_jitter_s: float = 0.1

    def retries(self, kind: RetryKind) -> int:
        return self.throttle_retries if kind is RetryKind.THROTTLED else self.transient_retries

    def backoff(self, kind: RetryKind, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based) when the service gave no Retry-After."""
        base = self.throttle_base_s if kind is RetryKind.THROTTLED else self.transient_base_s
        return min(self.max_backoff_s, base * 2 ** (retry - 1))

    def jitter(self, delay: float, rng: Callable[[], float]) -> float:
        return rng() * min(self.max_jitter_s, delay / 4 + 0.01)


#: Graph and Exchange requests: up to 6 throttled and 2 transient retries, 60 s of waiting.
ADAPTER_POLICY = RetryPolicy()
#: The runner's verify-then-repeat of a side effect: 2 repeats within 5 s, then the step is
#: released and the platform retries the message (after its own visibility timeout).
EFFECT_POLICY = RetryPolicy(throttle_retries=2, transient_retries=2, budget_s=5.0)


@dataclass
class Retrier:
    """The retries of one call under a policy: ask ``next_delay`` after each failure."""

    policy: RetryPolicy = ADAPTER_POLICY
    rng: Callable[[], float] = random.random
    waited: float = 0.0
    counts: dict[RetryKind, int] = field(default_factory=lambda: {RetryKind.THROTTLED: 0, RetryKind.TRANSIENT: 0})

    def next_delay(self, kind: RetryKind, retry_after: float | None = None, *, safe: bool = True) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise.

        ``safe``: may this request be repeated after a transient failure (a read, or a write
        whose outcome is checked before repeating)? Throttled requests always may."""
        if kind is RetryKind.TRANSIENT and not safe:
            return None
        retry = self.counts[kind] + 1
        if retry > self.policy.retries(kind):
            return None
        delay = retry_after if retry_after is not None else self.policy.backoff(kind, retry)
        if self.waited + delay > self.policy.budget_s:
            return None
        delay += self.policy.jitter(delay, self.rng)
        self.counts[kind] = retry
        self.waited += delay
        return delay
