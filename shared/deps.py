"""The ports a handler needs, bundled. bootstrap.py builds the real ones once per worker;
tests pass hand-written fakes that satisfy the same protocols (shared/ports.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from .errors import ConfigError
from .ports import ExchangePort, GraphPort, LedgerPort, QueuePort, ScoreStorePort
from .settings import Settings
from .timestamps import utcnow


@dataclass
class Deps:
    settings: Settings
    ledger: LedgerPort
    queues: QueuePort
    # None where a caller never talks to the tenant (the operator CLI's approve and ingest).
    graph: GraphPort | None = None
    exchange: ExchangePort | None = None
    # None where Secure Score is not stored (unit tests with fakes): nothing is recorded.
    scores: ScoreStorePort | None = None
    clock: Callable[[], datetime] = field(default=utcnow)

    def require_graph(self) -> GraphPort:
        if self.graph is None:
            raise ConfigError("this operation needs Microsoft Graph, and none is wired here")
        return self.graph

    def require_exchange(self) -> ExchangePort:
        if self.exchange is None:
            raise ConfigError("this operation needs the Exchange admin API, and none is wired here")
        return self.exchange
