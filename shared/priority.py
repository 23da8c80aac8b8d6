"""Which work goes first when a throttled service has a queue: containment before the rest.

At the pacing buckets (shared/adapters/pacing.py) calls wait in this order: ``CONTAINMENT`` (the
steps that take the account back: reset-password, and enforce-mfa with its few writes), then
``APPROACH`` (the steps before them: the snapshot), then ``INTAKE`` (an alert becoming an incident),
then ``NORMAL`` (every later step). Within a level the oldest incident's calls go first (``order``:
its creation time), so a storm's first incidents finish their snapshot and reach the reset first
instead of all of them advancing one call at a time, and the directory write quota, which sets how
fast a storm is contained, gets its first password reset within seconds and is never left idle
while intakes are still being read (docs/benchmarks.md). The mark travels with the task in a
context variable, so the adapters need no per-call wiring.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from enum import IntEnum
from typing import Iterator


class Priority(IntEnum):
    CONTAINMENT = 0
    APPROACH = 1
    INTAKE = 2
    NORMAL = 3


CURRENT: ContextVar[Priority] = ContextVar("pacing_priority", default=Priority.NORMAL)
ORDER: ContextVar[float] = ContextVar("pacing_order", default=0.0)


def current() -> Priority:
    return CURRENT.get()


def current_order() -> float:
    return ORDER.get()


@contextlib.contextmanager
def priority(level: Priority, order: float | None = None) -> Iterator[None]:
    """Run the block (and every task it starts) at ``level``; ``order`` is the incident's place in line
    within that level (its creation time, epoch seconds: the older goes first; unchanged if None)."""
    token = CURRENT.set(level)
    order_token = ORDER.set(order) if order is not None else None
    try:
        yield
    finally:
        if order_token is not None:
            ORDER.reset(order_token)
        CURRENT.reset(token)
