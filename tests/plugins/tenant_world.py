"""Pytest fixture ``make_world``: the product wired to the tenant simulator through the real Graph and
Exchange adapters (azure-identity's managed-identity flow), with the hand-written ledger and queue
fakes, and a ``World`` to drive a playbook and read what it did. Shared by the tenant-behaviour tests.
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import pytest

from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.credentials import build_credential
from shared.adapters.exchange import ExchangeAdapter
from shared.adapters.graph import GraphAdapter
from shared.deps import Deps
from shared.gate import protection_gate
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.settings import Settings
from shared.status import build_view
from shared.steps import StepRunner, registry
from tests.helpers.fakes import FakeLedger, FakeQueues

SEED = json.loads(SEED_FILE.read_text())


class World:
    def __init__(self, deps: Deps, runner: StepRunner, sim: Any) -> None:
        self.deps, self.runner, self.sim = deps, runner, sim

    @property
    def ledger(self) -> FakeLedger:
        return self.deps.ledger

    async def open(self, upn: str) -> str:
        result = await submit(self.deps, IncidentRequest(user_id=None, user_principal_name=upn,
                                                         reason="test: compromised"))
        assert result.outcome in ("created", "held"), result
        return result.incident_id

    async def drive(self) -> list[tuple[str, str]]:
        done = []
        while True:
            pending = [(q, b) for q, b, _ in self.deps.queues.sent if q.startswith("step-")]
            self.deps.queues.sent = [m for m in self.deps.queues.sent if not m[0].startswith("step-")]
            if not pending:
                return done
            for _, body in pending:
                data = json.loads(body)
                task = StepTask(**{k: v for k, v in data.items() if k not in ("schema", "version")})
                done.append((task.step, await self.runner.run(task)))

    def detail(self, incident_id: str, step: str) -> dict:
        return self.ledger.step_detail(incident_id, step)

    def view(self, incident_id: str) -> dict:
        rows = [{"RowKey": step, **row} for (iid, step), row in self.ledger.steps.items() if iid == incident_id]
        return build_view(self.ledger.incidents[incident_id], rows)

    def outbox(self) -> list[dict]:
        return self.sim.client.state(users=False)["outbox"]


@pytest.fixture
async def make_world(sim_identity_env) -> AsyncIterator[Callable[..., Any]]:
    sim = sim_identity_env
    closers: list[Any] = []

    async def make(seed: dict | None = None, **env: str) -> World:
        if seed is not None:
            sim.client.reset(seed)
        base = {"RESPONDER_MODE": "auto", "GRAPH_BASE_URL": sim.url, "EXO_BASE_URL": sim.url, **tenant_settings(SEED)}
        base.update(env)
        settings = Settings.from_env({k: v for k, v in base.items() if v is not None})
        credential = build_credential()
        graph = GraphAdapter(credential, sim.url, timeout_s=10)
        exchange = ExchangeAdapter(credential, sim.url, settings.tenant_id, settings.tenant_domain, timeout_s=10)
        closers.extend([graph, exchange, credential])
        deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
        return World(deps, StepRunner(deps, registry(), gate=protection_gate), sim)

    yield make
    for thing in closers:
        await thing.close()
