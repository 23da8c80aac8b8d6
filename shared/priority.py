"""Which work goes first when a throttled service has a queue: containment before the rest.

The step runner marks the steps from the alert up to and including reset-password (the password
reset and the session revoke) as ``CONTAINMENT``; every call they make waits ahead of the later
steps' calls at the pacing buckets (shared/adapters/pacing.py). The mark travels with the task in
a context variable, so the adapters need no per-call wiring.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from enum import IntEnum
from typing import Iterator


class Priority(IntEnum):
    CONTAINMENT = 0
    NORMAL = 1


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
