"""BLOCK_SIGN_IN=until-approved end to end through the local Functions host, Azurite and the
simulator: containment blocks sign-in and the incident closes with it blocked; the operator's
``POST /api/incidents/{id}/enable-sign-in`` (a principal with Incident.Approve, like approve) queues
the action, and the ``operator_actions`` queue function, holding the identity, re-enables the account
and records who asked."""
from __future__ import annotations

import asyncio
import json

import pytest

from localdev.host.launcher import start_host
from localdev.stack import REPO, SEED_FILE, tenant_settings
from shared.model import IncidentRequest
from tests.helpers.operator import host_env
from tests.helpers.storage import rows, wait_for
from tests.test_e2e import http, incident_for, put

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"


@pytest.fixture(scope="module")
def host(azurite, simulator, tmp_path_factory):
    env = host_env(azurite.connection_string, simulator, tenant_settings(SEED), RESPONDER_MODE="auto",
                   BLOCK_SIGN_IN="until-approved")
    log = tmp_path_factory.mktemp("host-signin") / "host.log"
    proc = start_host(str(REPO), env=env, port=0, log_path=str(log))
    yield proc
    proc.stop()


async def test_until_approved_the_operator_route_re_enables_sign_in_through_the_worker(host, fresh_storage, sim):
    tables, queues = fresh_storage
    # a deployment with BLOCK_SIGN_IN on is granted User.EnableDisableAccount.All
    sim.client.set_permissions(granted=sim.client.permissions()["granted"] + ["User.EnableDisableAccount.All"])
    await put(queues, "alerts", IncidentRequest(user_id=None, user_principal_name=ADELE).to_json())
    incident = await wait_for(lambda: incident_for(tables, ADELE))
    assert incident["state"] == "succeeded" and incident["sign_in"] == "blocked"
    assert sim.client.user_state(ADELE)["accountEnabled"] is False
    incident_id = incident["incident_id"]

    lead = sim.client.operator_token("soc.lead@contoso.onmicrosoft.com", ["Incident.Approve"])
    reader = sim.client.operator_token("soc.analyst@contoso.onmicrosoft.com", ["Incident.Read"])
    status, _ = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/enable-sign-in", None, None,
                                        host.function_key)
    assert status == 401  # a function key is not a principal
    status, _ = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/enable-sign-in", None, reader)
    assert status == 403  # Incident.Approve, like approve
    status, body = await asyncio.to_thread(http, host, "POST", "incidents/inc-..%2Fx/enable-sign-in", None, lead)
    assert status in (400, 404)
    status, body = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/enable-sign-in", None, lead)
    assert status == 202 and body["outcome"] == "queued"

    async def restored():
        found = await incident_for(tables, ADELE)
        return found if found and found.get("sign_in") == "restored" else None

    done = await wait_for(restored)
    assert done["sign_in_restored_by"] == "soc.lead@contoso.onmicrosoft.com" and done["sign_in_release_requested_by_oid"]
    assert sim.client.user_state(ADELE)["accountEnabled"] is True
    enabled = [m["details"]["accountEnabled"] for m in sim.client.mutations() if m["action"] == "account_enabled"]
    assert enabled == [False, True]
    status, body = await asyncio.to_thread(http, host, "POST", f"incidents/{incident_id}/enable-sign-in", None, lead)
    assert status == 409 and body["outcome"] == "not-blocked"
    assert [e for e in await rows(tables, "errors") if e["PartitionKey"] == "operator-actions"] == []
