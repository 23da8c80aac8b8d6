"""Which work goes first when a throttled service has a queue: containment before the rest.

Everything from the alert up to and including reset-password (the password reset and the session
revoke) waits ahead of the later steps' calls at the pacing buckets (shared/adapters/pacing.py), and
within it the incident nearest to being contained goes first: ``CONTAINMENT`` (the reset-password
step itself), then ``APPROACH`` (the steps before it: the snapshot), then ``INTAKE`` (the alert
becoming an incident), then ``NORMAL`` (every later step). A storm's 300 intakes then no longer
queue ahead of the first incidents' snapshot and reset reads: the directory write quota, which sets
how fast a storm is contained, gets its first password reset within seconds and is never left idle
while intakes are still being read (docs/benchmarks.md). The mark travels with the task in a context
variable, so the adapters need no per-call wiring.
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


def current() -> Priority:
    return CURRENT.get()


@contextlib.contextmanager
def priority(level: Priority) -> Iterator[None]:
    """Run the block (and every task it starts) at ``level``."""
    token = CURRENT.set(level)
    try:
        yield
    finally:
        CURRENT.reset(token)
