"""The ports a handler needs, bundled. bootstrap.py builds the real ones once per worker;
tests pass hand-written fakes that satisfy the same protocols (shared/ports.py). The calls
shared across incidents (tenant_calls.py) are made once per Deps, on first use."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from .errors import ConfigError
from .ports import ExchangePort, GraphPort, LedgerPort, QueuePort, ScoreStorePort
from .settings import Settings
from .tenant_calls import TenantCalls
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
    shared_calls: TenantCalls | None = None
    intake_slots: asyncio.Semaphore | None = None

    def intake_slot(self) -> asyncio.Semaphore:
        """How many intakes this worker runs at once (INTAKE_CONCURRENCY): a storm's hundreds of alerts
        must not take the worker's CPU from the first incidents' snapshot and password reset."""
        if self.intake_slots is None:
            self.intake_slots = asyncio.Semaphore(self.settings.intake_concurrency)
        return self.intake_slots

    def tenant_calls(self) -> TenantCalls:
        """Identity Protection and directory-audit calls shared by this worker's incidents."""
        if self.shared_calls is None:
            self.shared_calls = TenantCalls(self.require_graph(), batch_s=self.settings.idp_batch_s,
                                            detection_lookback_days=self.settings.risk_detection_lookback_days,
                                            clock=self.clock)
        return self.shared_calls

    def require_graph(self) -> GraphPort:
        if self.graph is None:
            raise ConfigError("this operation needs Microsoft Graph, and none is wired here")
        return self.graph

    def require_exchange(self) -> ExchangePort:
        if self.exchange is None:
            raise ConfigError("this operation needs the Exchange admin API, and none is wired here")
        return self.exchange
