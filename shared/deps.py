"""The ports a handler needs, bundled. bootstrap.py builds the real ones once per worker;
tests pass hand-written fakes with the same methods."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from .settings import Settings


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Deps:
    settings: Settings
    ledger: Any  # adapters.ledger.Ledger or a fake with the same methods
    queues: Any  # adapters.queues.QueueSender or a fake
    graph: Any  # adapters.graph.GraphAdapter or a fake
    exchange: Any = None  # adapters.exchange.ExchangeAdapter or a fake
    clock: Callable[[], datetime] = field(default=_utcnow)
