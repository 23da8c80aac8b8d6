"""The protected-account gate holds whichever way an alert arrives, against the tenant simulator.

Every entry point ends in one of two calls, and both are driven here with the real Graph and
Exchange adapters: ``intake.submit`` (what the alerts queue and ``POST /api/incidents`` call)
and ``ingest.ingest_payload`` with an Event Hub batch (the polling reconciler and ``responder
ingest`` call it too; they are not driven separately here). A hand-crafted step task cannot
jump the gate, and a forged task for a later step does nothing. Nothing changes in the tenant."""
from __future__ import annotations

import json

import pytest

from localdev.restamp import restamp
from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.credentials import build_credential
from shared.adapters.exchange import ExchangeAdapter
from shared.adapters.graph import GraphAdapter
from shared.deps import Deps
from shared.gate import protection_gate
from shared.ingest import ingest_payload
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.settings import Settings
from shared.steps import StepRunner, registry
from tests.helpers.fakes import FakeLedger, FakeQueues

SEED = json.loads(SEED_FILE.read_text())
GLASS = next(u for u in SEED["users"] if u["userPrincipalName"].startswith("breakglass"))
# The demo's capture, its times moved to now (intake refuses signals older than LOOKBACK_DAYS).
DEMO_BATCH = restamp((SEED_FILE.parent.parent / "samples" / "entra-userriskevents-demo.json").read_bytes())


@pytest.fixture
async def world(sim_identity_env):
    sim = sim_identity_env
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "GRAPH_BASE_URL": sim.url, "EXO_BASE_URL": sim.url,
                                  **tenant_settings(SEED)})
    credential = build_credential()
    graph = GraphAdapter(credential, sim.url, timeout_s=10)
    exchange = ExchangeAdapter(credential, sim.url, settings.tenant_id, settings.tenant_domain, timeout_s=10)
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
    try:
        yield deps, StepRunner(deps, registry(), gate=protection_gate), sim
    finally:
        await graph.close()
        await exchange.close()
        await credential.close()


async def run_all(deps, runner) -> list[str]:
    outcomes = []
    while True:
        pending = [json.loads(b) for q, b, _ in deps.queues.sent if q.startswith("step-")]
        deps.queues.sent = []
        if not pending:
            return outcomes
        for body in pending:
            outcomes.append(await runner.run(StepTask(**{k: v for k, v in body.items() if k not in ("schema", "version")})))


def glass_incident(deps) -> dict:
    return next(i for i in deps.ledger.incidents.values() if GLASS["id"] in (i.get("user_id"), i.get("user_key")))


@pytest.mark.parametrize("entry", ["queue-or-http", "event-hub-batch"])
async def test_break_glass_is_held_whatever_the_entry_point(world, entry):
    deps, runner, sim = world
    if entry == "queue-or-http":
        await submit(deps, IncidentRequest(user_id=GLASS["id"], user_principal_name=None, source="http"))
    else:
        report = await ingest_payload(deps, DEMO_BATCH, source="entra-diagnostics")
        assert len(report.outcomes) == 2  # the batch also names the demo user
    mark = len(sim.client.mutations())
    await run_all(deps, runner)
    incident = glass_incident(deps)
    assert incident["state"] == "held" and "protected" in incident["held_reason"]
    assert not [m for m in sim.client.mutations()[mark:] if m.get("user") == GLASS["id"]]


async def test_a_hand_crafted_step_task_cannot_skip_the_gate(world):
    deps, runner, sim = world
    result = await submit(deps, IncidentRequest(user_id=GLASS["id"], user_principal_name=None))
    await run_all(deps, runner)
    assert deps.ledger.incidents[result.incident_id]["state"] == "held"
    forged = StepTask(incident_id=result.incident_id, step="reset-password", user_key=GLASS["id"], correlation_id="forged")
    mark = len(sim.client.mutations())
    assert await runner.run(forged) == "held"
    assert sim.client.mutations()[mark:] == []


async def test_a_forged_task_for_a_later_step_does_nothing_until_the_earlier_steps_finished(world):
    deps, runner, sim = world
    adele = next(u for u in SEED["users"] if u["userPrincipalName"].startswith("adele"))
    result = await submit(deps, IncidentRequest(user_id=adele["id"], user_principal_name=None))
    forged = StepTask(incident_id=result.incident_id, step="unblock-sender", user_key=adele["id"], correlation_id="forged")
    deps.ledger.incidents[result.incident_id]["user_resolved"] = True
    mark = len(sim.client.mutations())
    assert await runner.run(forged) == "ignored"
    assert sim.client.mutations()[mark:] == [] and sim.client.user_state(adele["userPrincipalName"])["blocked"] is True
    assert any("out-of-order" in e["reason"] for e in deps.ledger.errors)
