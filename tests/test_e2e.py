"""End to end through the local Functions host, real Azurite and the tenant simulator:
queue → intake → every step → Table storage; poison handling; HTTP identity and approval;
and a scan of every log line, table row and queue body for the password and tokens."""
from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest
from azure.storage.queue.aio import QueueServiceClient

from localdev.host.launcher import start_host
from localdev.stack import REPO, SEED_FILE, tenant_settings
from shared.adapters.ledger import TABLES
from shared.model import IncidentRequest
from shared.playbook import DEFAULT_PLAYBOOK, STEP_NAMES
from tests.helpers.secretscan import find_leaks
from tests.helpers.storage import peek, rows, wait_for

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"
GLASS = "breakglass@contoso.onmicrosoft.com"
QUEUES = ["alerts", "alerts-poison"] + [f"step-{s}" for s in STEP_NAMES] + [f"step-{s}-poison" for s in STEP_NAMES]


@pytest.fixture(scope="module")
def host(azurite, simulator, tmp_path_factory):
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "GRAPH_BASE_URL": simulator.url,
        "EXO_BASE_URL": simulator.url,
        **simulator.identity_env(),
        **simulator.easyauth_env(),
        **tenant_settings(SEED),
        "RESPONDER_MODE": "auto",
        "LOCALDEV_QUEUE_LEASE_SECONDS": "30",
    }
    log = tmp_path_factory.mktemp("host") / "host.log"
    proc = start_host(str(REPO), env=env, port=0, log_path=str(log))
    yield proc
    proc.stop()


@pytest.fixture
def storage(fresh_storage, host, sim):
    """Empty tables and queues before each test (the host keeps running)."""
    return fresh_storage


async def put(queues: QueueServiceClient, queue: str, text: str) -> None:
    await queues.get_queue_client(queue).send_message(base64.b64encode(text.encode()).decode())


async def incident_for(tables, upn: str, states=("succeeded", "failed", "held")) -> dict | None:
    for row in await rows(tables, "incidents"):
        if row.get("user_principal_name") == upn and row.get("state") in states:
            return row
    return None


def http(host, method: str, path: str, body: dict | None = None, token: str | None = None,
         key: str | None = None) -> tuple[int, dict]:
    url = f"{host.url}/api/{path}" + (f"?code={key}" if key else "")
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, (json.loads(payload) if payload[:1] == b"{" else {})


async def test_alert_on_the_queue_runs_the_whole_playbook_and_leaks_nothing(host, storage, sim):
    tables, queues = storage
    await put(queues, "alerts", IncidentRequest(user_id=None, user_principal_name=ADELE).to_json())
    incident = await wait_for(lambda: incident_for(tables, ADELE))
    assert incident["state"] == "succeeded"
    steps = {r["RowKey"]: r for r in await rows(tables, "steps") if r["PartitionKey"] == incident["incident_id"]}
    assert {name: steps[name]["state"] for name in DEFAULT_PLAYBOOK} == {name: "succeeded" for name in DEFAULT_PLAYBOOK}
    assert all(int(steps[n]["attempts"]) == 1 and steps[n]["finished_at"] for n in DEFAULT_PLAYBOOK)
    user_id = incident["user_id"]
    patches = sim.client.requests(service="graph", method="PATCH", path_contains=f"/users/{user_id}")
    patches = [r for r in patches if r["path"].rstrip("/").endswith(user_id)]
    revokes = sim.client.requests(service="graph", method="POST", path_contains="revokeSignInSessions")
    assert len(patches) == 1 and len(revokes) == 1

    # Secret scan: host log, every table entity, every queue message (incl. poison).
    state = sim.client.user_state(ADELE)
    texts = [host.log_text()]
    for name in TABLES:
        texts += [json.dumps(r, default=str) for r in await rows(tables, name)]
    for name in QUEUES:
        for message in await peek(queues, name):
            texts.append(base64.b64decode(message.content).decode(errors="replace"))
    texts += [json.dumps(r) for r in sim.client.requests()]  # the simulator's own log is redacted too
    tokens = set(sim.client.issued_token_sha256())
    assert tokens, "the host authenticated with simulator-issued tokens"
    assert find_leaks(texts, {state["last_password_sha256"]}, tokens) == []


async def test_malformed_alert_goes_to_poison_with_an_error_row_and_the_host_keeps_running(host, storage, sim):
    tables, queues = storage
    await put(queues, "alerts", '{"version": 1, "user_principal_name": "x\' or 1 eq 1"}')
    await put(queues, "alerts", "this is not json")

    async def poisoned():
        messages = await peek(queues, "alerts-poison")
        return messages if len(messages) == 2 else None

    messages = await wait_for(poisoned)
    bodies = {base64.b64decode(m.content).decode() for m in messages}
    assert bodies == {"this is not json", '{"version": 1, "user_principal_name": "x\' or 1 eq 1"}'}
    errors = await rows(tables, "errors")
    reasons = sorted(e["reason"] for e in errors if e["PartitionKey"] == "alerts")
    assert any("not JSON" in r for r in reasons) and any("user principal name" in r for r in reasons)
    assert sim.client.mutations() == []
    # Still serving: a good alert after the bad ones is processed.
    await put(queues, "alerts", IncidentRequest(user_id=None, user_principal_name=ADELE).to_json())
    assert (await wait_for(lambda: incident_for(tables, ADELE)))["state"] == "succeeded"


async def test_http_requires_a_signed_in_principal_and_validates_the_body(host, storage, sim):
    submitter = sim.client.operator_token(app="sentinel", roles=["Incident.Submit"])
    reader = sim.client.operator_token("reader@contoso.onmicrosoft.com", ["Incident.Read"])
    request = {"version": 1, "user_principal_name": ADELE}
    assert (await asyncio.to_thread(http, host, "POST", "incidents", request))[0] == 401
    assert (await asyncio.to_thread(http, host, "POST", "incidents", request, key=host.function_key))[0] == 401
    status, body = await asyncio.to_thread(http, host, "POST", "incidents", {"version": 1, "user_id": "not-a-guid"}, submitter)
    assert status == 400 and "GUID" in body["error"]
    status, body = await asyncio.to_thread(http, host, "GET", "incidents/inc-..%2F..", token=reader)
    assert status in (400, 404)


async def test_break_glass_alert_is_held_and_runs_only_after_two_approvals(host, storage, sim):
    tables, _ = storage
    submitter = sim.client.operator_token(app="sentinel", roles=["Incident.Submit"])
    alice = sim.client.operator_token("alice@contoso.onmicrosoft.com", ["Incident.Read", "Incident.Approve"])
    bob = sim.client.operator_token("bob@contoso.onmicrosoft.com", ["Incident.Approve"])
    status, body = await asyncio.to_thread(http, host, "POST", "incidents", {"version": 1, "user_principal_name": GLASS},
                                           submitter)
    assert status == 202 and body["outcome"] == "created"
    assert body["protection"].startswith("protected: yes, because")  # known at intake, before any step ran
    incident_id = body["incident_id"]
    held = await wait_for(lambda: incident_for(tables, GLASS, ("held",)))
    assert held["incident_id"] == incident_id and "protected" in held["held_reason"]
    # nothing changed in the tenant: the one mutation is the SOC's mail about the hold (one per event),
    # sent just after the held row is written, so wait for it rather than race it
    async def mail_about_the_hold():
        return [m["action"] for m in await asyncio.to_thread(sim.client.mutations)]
    assert await wait_for(mail_about_the_hold) == ["mail_sent"] and sim.client.tenant_changes() == []
    status, view = await asyncio.to_thread(http, host, "GET", f"incidents/{incident_id}", token=alice)
    assert status == 200 and view["state"] == "held" and view["steps"][0]["state"] == "held"

    status, body = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/approve", token=alice)
    assert status == 202 and body["outcome"] == "approval-recorded"
    assert sim.client.tenant_changes() == [] and len(sim.client.mutations()) == 1
    status, body = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/approve", token=bob)
    assert status == 202 and body["outcome"] == "approved"
    # The break-glass account is an administrator: the identity only holds User Administrator,
    # so the reset is refused, and the failure says which role is missing.
    done = await wait_for(lambda: incident_for(tables, GLASS, ("succeeded", "failed")))
    assert done["state"] == "failed" and done["stopped_at"] == "reset-password"
    assert "Privileged Authentication Administrator" in done["stop_reason"]
    status, _ = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/approve", token=alice)
    assert status == 409  # not held any more
