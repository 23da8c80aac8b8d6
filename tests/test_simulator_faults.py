"""Fault injection of the tenant simulator: throttling, one-shot faults, after-effect faults, latency, hangs,
and the loopback-only bind rule."""
from __future__ import annotations

import http.client
import subprocess
import sys
import time

import pytest

from localdev.simulator import LoopbackError, Simulator, check_loopback
from localdev.simulator.client import EXO_RESOURCE, REPO_ROOT

ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
GOOD_PASSWORD = "Tr0ub4dor&3-horse-Battery"


@pytest.fixture
def gtoken(sim):
    return sim.get_token()


def get_user(sim, token):
    return sim.client.raw("GET", f"/v1.0/users/{ADELE}", token=token, query={"$select": "id"})


def test_token_bucket_throttles_with_retry_after(sim, gtoken):
    sim.client.set_faults({"graph": {"rate_per_s": 4, "burst": 3}})
    statuses, throttled = [], None
    for _ in range(6):
        status, hdrs, body = get_user(sim, gtoken)
        statuses.append(status)
        if status == 429 and throttled is None:
            throttled = (hdrs, body)
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    hdrs, body = throttled
    retry_after = float(hdrs["Retry-After"])
    assert 0 < retry_after <= 0.25 + 1e-9
    assert body["error"]["code"] == "TooManyRequests"
    assert body["error"]["message"] == "Please retry again later."
    assert body["error"]["innerError"]["status"] == "429" and body["error"]["innerError"]["code"] == "429"
    time.sleep(retry_after + 0.02)
    assert get_user(sim, gtoken)[0] == 200
    logged = sim.client.requests(service="graph", status=429)
    assert logged and logged[0]["fault"] == "throttle:429"
    assert sim.client.faults()["counters"]["graph"]["throttled"] >= 1


def test_one_shot_503_then_success_without_side_effect(sim, gtoken):
    sim.client.fault_once(service="graph", method="POST", path_contains="/revokeSignInSessions", status=503,
                          count=1, retry_after="0.1")
    # a request that does not match is untouched
    assert get_user(sim, gtoken)[0] == 200
    status, hdrs, body = sim.client.raw("POST", f"/v1.0/users/{ADELE}/revokeSignInSessions", token=gtoken)
    assert status == 503 and hdrs["Retry-After"] == "0.1"
    assert body["error"]["code"] == "ServiceUnavailable" and "innerError" in body["error"]
    assert sim.client.user_state(ADELE)["revocations"] == 0  # the fault answered before doing the work
    status, _, body = sim.client.raw("POST", f"/v1.0/users/{ADELE}/revokeSignInSessions", token=gtoken)
    assert status == 200 and body["value"] is True
    assert sim.client.user_state(ADELE)["revocations"] == 1
    assert sim.client.faults()["once"] == []


def test_after_effect_fault_applies_the_mutation_then_fails(sim, gtoken):
    sim.client.fault_once(service="graph", method="PATCH", path_contains="/users/", status=500, after_effect=True)
    status, _, body = sim.client.raw("PATCH", f"/v1.0/users/{ADELE}", token=gtoken,
                                     body={"passwordProfile": {"password": GOOD_PASSWORD}})
    assert status == 500 and body["error"]["code"] == "InternalServerError"
    assert sim.client.user_state(ADELE)["password_changes"] == 1
    entry = sim.client.requests(method="PATCH")[-1]
    assert entry["fault"] == "once:500:after_effect"
    assert entry["body"]["passwordProfile"]["password"] == "<redacted>"


def test_exo_one_shot_matches_cmdlet(sim):
    xtoken = sim.get_token(EXO_RESOURCE)
    sim.client.fault_once(service="exo", cmdlet="Set-Mailbox", status=429, retry_after="0.35")

    def call(cmdlet, **params):
        return sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=xtoken,
                              headers={"X-AnchorMailbox": f"UPN:{ADELE}"},
                              body={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})
    assert call("Get-Mailbox", Identity=ADELE)[0] == 200
    status, hdrs, body = call("Set-Mailbox", Identity=ADELE, AuditEnabled=True)
    assert status == 429 and hdrs["Retry-After"] == "0.35" and body["error"]["code"] == "TooManyRequests"
    assert sim.client.user_state(ADELE)["mailbox"]["AuditEnabled"] is False
    assert call("Set-Mailbox", Identity=ADELE, AuditEnabled=True)[0] == 200
    assert sim.client.user_state(ADELE)["mailbox"]["AuditEnabled"] is True


def test_batch_item_is_throttled_inside_a_200_batch(sim, gtoken):
    sim.client.set_faults({"graph": {"rate_per_s": 1, "burst": 2}})
    batch = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{ADELE_ID}?$select=id"}
                          for i in range(1, 6)]}
    status, _, body = sim.client.raw("POST", "/v1.0/$batch", token=gtoken, body=batch)
    assert status == 200
    statuses = [r["status"] for r in body["responses"]]
    assert statuses[:2] == [200, 200] and set(statuses[2:]) == {429}
    throttled = body["responses"][2]
    assert float(throttled["headers"]["Retry-After"]) > 0
    assert throttled["body"]["error"]["code"] == "TooManyRequests"


def test_latency_error_rate_and_hang(sim, gtoken):
    sim.client.set_faults({"graph": {"latency_ms": 150}})
    start = time.monotonic()
    assert get_user(sim, gtoken)[0] == 200
    assert time.monotonic() - start >= 0.15
    assert sim.client.requests(service="graph")[-1]["latency_ms"] >= 150
    sim.client.set_faults({"graph": {"error_rate": 1.0, "error_statuses": [503], "error_retry_after": "2",
                                     "seed": 7}})
    status, hdrs, body = get_user(sim, gtoken)
    assert status == 503 and hdrs["Retry-After"] == "2" and body["error"]["code"] == "ServiceUnavailable"
    sim.client.set_faults({"graph": {"hang_rate": 1.0, "hang_s": 0.2}})
    start = time.monotonic()
    status, _, body = get_user(sim, gtoken)
    assert status == 504 and time.monotonic() - start >= 0.2
    sim.client.set_faults({})
    assert get_user(sim, gtoken)[0] == 200
    assert sim.client.raw("PUT", "/_sim/faults", body={"graph": {"error_rate": 2}})[0] == 400
    assert sim.client.raw("PUT", "/_sim/faults", body={"sharepoint": {}})[0] == 400


def test_dropped_connection(sim, gtoken):
    sim.client.fault_once(service="graph", path_contains="/users/", status=0)
    host, port = sim.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", f"/v1.0/users/{ADELE}", headers={"Authorization": f"Bearer {gtoken}"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert get_user(sim, gtoken)[0] == 200


def test_token_endpoint_faults(sim):
    sim.client.fault_once(service="token", path_contains="graph.microsoft.com", status=503, retry_after="1")
    status, hdrs, body = sim.client.raw("GET", "/msi/token", headers={"X-IDENTITY-HEADER": sim.identity_header},
                                        query={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"})
    assert status == 503 and body["statusCode"] == 503 and hdrs["Retry-After"] == "1"
    assert sim.get_token()


def test_non_loopback_bind_is_refused():
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(LoopbackError):
            check_loopback(host)
        with pytest.raises(LoopbackError):
            Simulator(host=host)
    assert check_loopback("localhost") == "127.0.0.1"
    proc = subprocess.run([sys.executable, "-m", "localdev.simulator", "--host", "0.0.0.0", "--port", "0"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert "refusing to bind" in proc.stderr


def test_subprocess_with_custom_seed_and_faults_exits_cleanly():
    from localdev.simulator import start_simulator

    seed = {"tenant": {"id": TENANT, "domain": "contoso.onmicrosoft.com"},
            "managedIdentity": {"permissions": ["User.Read.All"], "directoryRoles": []},
            "users": [{"userPrincipalName": "one@contoso.onmicrosoft.com"}]}
    proc = start_simulator(seed=seed, faults={"graph": {"latency_ms": 5}, "token": {"rate_per_s": 100}})
    try:
        assert proc.client.health()["users"] == 1
        assert proc.client.faults()["config"] == {"graph": {"latency_ms": 5}, "token": {"rate_per_s": 100}}
        token = proc.get_token()
        status, _, body = proc.client.raw("GET", "/v1.0/users/one@contoso.onmicrosoft.com", token=token)
        assert status == 200 and body["userPrincipalName"] == "one@contoso.onmicrosoft.com"
        # reset without a body goes back to the seed the process was started with
        proc.client.add_users(2, prefix="extra")
        proc.client.reset()
        assert proc.client.health()["users"] == 1
        assert "listening on http://127.0.0.1:" in proc.log_tail()
    finally:
        assert proc.stop() == 0
    assert not proc.running()
