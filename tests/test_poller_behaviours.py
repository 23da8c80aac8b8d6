"""The polling reconciler against the tenant as Microsoft serves it (issue 12 items 7 and 9):
alerts_v2 lists the newest first, so the watermark may move only once the whole window was read;
and the responder's own remediation (its confirmCompromised, the remediation its reset causes)
must never open a second incident, while a genuinely new detection after the close does.

Real Azurite tables (ledger, watermarks) and the simulator's Graph; steps run through the real
runner with fake queues.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.credentials import build_credential
from shared.adapters.exchange import ExchangeAdapter
from shared.adapters.graph import GraphAdapter
from shared.adapters.ledger import Ledger
from shared.deps import Deps
from shared.gate import protection_gate
from shared.ingest import ingest_payload
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.poller import poll_once
from shared.settings import Settings
from shared.steps import StepRunner, registry
from tests.helpers.fakes import FakeQueues

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
SYNCED = "synced.user@contoso.onmicrosoft.com"


@pytest.fixture
async def world(sim_identity_env, fresh_storage):
    sim = sim_identity_env
    tables, _ = fresh_storage
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "GRAPH_BASE_URL": sim.url, "EXO_BASE_URL": sim.url,
                                  "STORM_THRESHOLD": "500", **tenant_settings(SEED)})
    credential = build_credential()
    graph = GraphAdapter(credential, sim.url, timeout_s=10)
    exchange = ExchangeAdapter(credential, sim.url, settings.tenant_id, settings.tenant_domain, timeout_s=10)
    ledger = Ledger(tables)
    await ledger.ensure()
    deps = Deps(settings=settings, ledger=ledger, queues=FakeQueues(), graph=graph, exchange=exchange)
    try:
        yield deps, tables, sim
    finally:
        await graph.close()
        await exchange.close()
        await credential.close()


async def drive(deps: Deps) -> None:
    runner = StepRunner(deps, registry(), gate=protection_gate)
    while True:
        pending = [b for q, b, _ in deps.queues.sent if q.startswith("step-")]
        deps.queues.sent = [m for m in deps.queues.sent if not m[0].startswith("step-")]
        if not pending:
            return
        for body in pending:
            data = json.loads(body)
            await runner.run(StepTask(**{k: v for k, v in data.items() if k not in ("schema", "version")}))


async def remediate_by_upn(deps: Deps, upn: str) -> dict:
    result = await submit(deps, IncidentRequest(user_id=None, user_principal_name=upn, reason="manual: compromised"))
    await drive(deps)
    incident = await deps.ledger.get_incident(result.incident_id)
    assert incident["state"] == "succeeded", incident.get("stop_reason")
    return incident


def alert(user: dict, title: str, created: datetime) -> dict:
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"id": "fa" + title.replace(" ", "").lower(), "status": "new", "severity": "high", "title": title,
            "serviceSource": "microsoftDefenderForCloudApps", "createdDateTime": stamp, "lastUpdateDateTime": stamp,
            "evidence": [{"@odata.type": "#microsoft.graph.security.userEvidence", "roles": ["compromised"],
                          "verdict": "suspicious", "userAccount": {"azureAdUserId": user["id"],
                                                                   "userPrincipalName": user["userPrincipalName"]}}]}


async def test_the_watermark_moves_only_after_the_whole_window_was_read(world):
    deps, tables, sim = world
    seed = json.loads(SEED_FILE.read_text())
    users = {u["userPrincipalName"]: u for u in seed["users"]}
    now = datetime.now(timezone.utc)
    seed["alerts"] = [alert(users[MEGAN], "older alert", now - timedelta(minutes=20)),
                      alert(users[SYNCED], "newer alert", now - timedelta(minutes=5))]
    seed.setdefault("settings", {})["alertsPageSize"] = 1  # one alert per page: the window spans two pages
    sim.client.reset(seed)
    # page 2 (the older alert) fails beyond the adapter's in-process retries
    sim.client.fault_once(service="graph", method="GET", path_contains="/security/alerts_v2", status=503, skip=1,
                          count=5, retry_after="0.01")
    summary = await poll_once(deps)
    assert "error" in summary["alerts_v2"]
    marks = [e async for e in tables.get_table_client("watermarks").list_entities()]
    assert "alerts_v2" not in {m["RowKey"] for m in marks}, "a partly read window must not move the watermark"
    sim.client.clear_faults()
    await poll_once(deps)
    ids = {a for i in await deps.ledger.list_incidents() for a in (i.get("alert_ids") or "").split(",") if a}
    assert {"faolderalert", "faneweralert"} <= ids


async def test_polling_after_a_remediation_opens_no_second_incident(world):
    deps, tables, sim = world
    incident = await remediate_by_upn(deps, ADELE)
    summary = await poll_once(deps)
    assert summary["riskyUsers"]["new_incidents"] == 0 and summary["alerts_v2"]["new_incidents"] == 0
    # the detection Identity Protection records for the responder's own confirmation arrives on the stream
    detections = sim.client.state(user=ADELE)["users"][ADELE]["risk_detections"]
    assert "adminConfirmedUserCompromised" in [d["riskEventType"] for d in detections]
    full = [d for d in (await deps.graph.list_risk_detections(ADELE_ID)) if d["riskEventType"] == "adminConfirmedUserCompromised"]
    as_emitted = {**full[0], "riskState": "confirmedCompromised"}  # what the stream carried when it fired
    report = await ingest_payload(deps, json.dumps({"records": [{"time": as_emitted["detectedDateTime"],
                                                                 "tenantId": SEED["tenant"]["id"],
                                                                 "category": "UserRiskEvents", "properties": as_emitted}]}),
                                  source="entra-diagnostics", where="test")
    assert [o.outcome for o in report.outcomes] in (["ignored"], ["attached"])
    incidents = await deps.ledger.list_incidents()
    assert [i["incident_id"] for i in incidents] == [incident["incident_id"]]


async def test_a_replayed_detection_older_than_the_close_does_not_reopen_the_user(world):
    deps, tables, sim = world
    incident = await remediate_by_upn(deps, ADELE)
    old = next(d for d in await deps.graph.list_risk_detections(ADELE_ID) if d["riskEventType"] == "anomalousToken")
    old = {**old, "riskState": "atRisk"}  # replayed as it was when it fired
    await ingest_payload(deps, json.dumps({"records": [{"time": old["detectedDateTime"], "category": "UserRiskEvents",
                                                        "properties": old}]}), source="entra-diagnostics", where="test")
    assert [i["incident_id"] for i in await deps.ledger.list_incidents()] == [incident["incident_id"]]


async def test_a_genuinely_new_detection_after_the_close_opens_a_new_incident(world):
    deps, tables, sim = world
    first = await remediate_by_upn(deps, ADELE)
    assert (await poll_once(deps))["riskyUsers"]["new_incidents"] == 0
    sim.client.set_risk(ADELE, riskLevel="high", riskState="atRisk", riskEventType="unfamiliarFeatures")
    summary = await poll_once(deps)
    assert summary["riskyUsers"]["new_incidents"] == 1
    incidents = await deps.ledger.list_incidents()
    assert len(incidents) == 2 and incidents[-1]["incident_id"] != first["incident_id"]
    assert incidents[-1]["user_id"] == ADELE_ID
