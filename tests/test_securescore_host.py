"""Secure Score end to end: the real blueprint on the local Functions host, the real Graph
adapter against the tenant simulator (90-day history with one regression), real Azurite.

The host runs tests/fixtures/securescore/hostapp (the Secure Score blueprint alone, so the
test needs no queues or step functions). The snapshot is started the way the local stack starts it: through
the host's admin API. The simulator throttles the first Graph call (429 + Retry-After: the Graph
adapter retries it) and fails the rerun's first calls with 502s, more than the adapter retries,
so the snapshot's own retry is exercised through the real adapter too.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.data.tables.aio import TableServiceClient

from localdev.host.launcher import start_host
from localdev.securescore import stored_summary, trigger_snapshot
from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.scores import ScoreStore
from shared.retry import ADAPTER_POLICY
from shared.securescore.service import latest_score

HOSTAPP = Path(__file__).resolve().parent / "fixtures" / "securescore" / "hostapp"
SVG = "{http://www.w3.org/2000/svg}"


def get(url: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def close_step_score(conn: str) -> dict | None:
    async with TableServiceClient.from_connection_string(conn) as service:
        return await latest_score(ScoreStore(service))


async def stored_rows(conn: str) -> dict[str, str]:
    async with TableServiceClient.from_connection_string(conn) as service:
        store = ScoreStore(service)
        return {e["RowKey"]: e.metadata["etag"] async for e in store.scores.list_entities()}


def test_snapshot_trend_and_chart_end_to_end(azurite, sim_identity_env, tmp_path):
    sim = sim_identity_env
    sim.client.fault_once(service="graph", method="GET", path_contains="/security/secureScores", status=429,
                          count=1, retry_after="1")
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "GRAPH_BASE_URL": sim.url,
        "EXO_BASE_URL": sim.url,
        "RESPONDER_MODE": "auto",
        **tenant_settings(json.loads(SEED_FILE.read_text())),
        **sim.easyauth_env(),  # the trend is not public: Incident.Read through App Service Authentication
    }
    reader = sim.client.operator_token("reader@contoso.onmicrosoft.com", ["Incident.Read"])
    with start_host(HOSTAPP, env=env, log_path=tmp_path / "host.log") as host:
        assert trigger_snapshot(host.url, host.master_key), (tmp_path / "host.log").read_text()[-3000:]

        calls = [r for r in sim.client.requests() if r.get("path", "").endswith("/security/secureScores")]
        assert [r["status"] for r in calls] == [429, 200]  # throttled, retried (Retry-After), served
        assert calls[-1]["query"].get("$top") == "90"

        rows = asyncio.run(stored_rows(azurite.connection_string))
        assert len(rows) == 90
        today = datetime.now(timezone.utc).date()
        assert max(rows) in (today.isoformat(), (today - timedelta(days=1)).isoformat())

        # a rerun on the same day asks for one object and stores nothing new; 502s beyond what
        # the Graph adapter retries in-process come out as TransientError and the snapshot's
        # own bounded retry (a timer has no platform retry) gets the answer
        failures = ADAPTER_POLICY.transient_retries + 1
        sim.client.fault_once(service="graph", method="GET", path_contains="/security/secureScores", status=502,
                              count=failures)
        assert trigger_snapshot(host.url, host.master_key)
        assert asyncio.run(stored_rows(azurite.connection_string)) == rows
        calls = [r for r in sim.client.requests() if r.get("path", "").endswith("/security/secureScores")]
        assert [(r["status"], r["query"].get("$top")) for r in calls[2:]] == [(502, "1")] * failures + [(200, "1")]

        status, headers, body = get(f"{host.url}/api/securescore?days=30", reader)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        data = json.loads(body)
        assert len(data["days"]) == 30 and data["stored_days"] == 90
        assert len(data["regressions"]) == 1  # the simulator's regression, 18 days ago
        regression = data["regressions"][0]
        assert regression["delta"] < -5 and {c["control"] for c in regression["controls"]} >= {"MFARegistrationV2"}
        assert data["latest"]["date"] == max(rows)

        status, headers, body = get(f"{host.url}/api/securescore/chart.svg?days=90", reader)
        assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
        root = ET.fromstring(body)
        points = [c for c in root.iter(f"{SVG}circle") if "day" in (c.get("class") or "").split()]
        assert len(points) == 90
        assert [c.get("data-date") for c in points if "regression" in c.get("class")] == [regression["date"]]

        assert get(f"{host.url}/api/securescore?days=0", reader)[0] == 400
        assert get(f"{host.url}/api/securescore", None)[0] == 401
        submitter = sim.client.operator_token(app="sentinel", roles=["Incident.Submit"])
        assert get(f"{host.url}/api/securescore", submitter)[0] == 403

    summary = stored_summary(azurite.connection_string)
    assert summary["days"] == 90 and summary["date"] == max(rows)
    assert summary["max"] > 0 and 0 < summary["percentage"] <= 100

    # what the close step records beside an incident
    recorded = asyncio.run(close_step_score(azurite.connection_string))
    assert recorded == {"date": summary["date"], "current": summary["current"], "max": summary["max"],
                        "percentage": summary["percentage"]}
    assert asyncio.run(latest_score(None)) is None  # no score store wired: nothing recorded
