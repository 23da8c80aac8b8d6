"""Who may do what, end to end: the local host playing Easy Auth with the tenant simulator as Entra
ID, real Azurite, the real app. Each route against each kind of caller (401 / 403 / 2xx), the
submitter refused, a protected account held after one approval and released after a second by a
different approver, forged and broken tokens refused, intake refusals, rejection, the CLI."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localdev.host.launcher import start_host
from localdev.stack import REPO, SEED_FILE, tenant_settings
from shared.bootstrap import open_storage
from shared.timestamps import iso
from tests.helpers.operator import ALL_ROLES, APPROVE, READ, SUBMIT, api, host_env
from tests.helpers.storage import peek, rows, wait_for

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"
GLASS = next(u for u in SEED["users"] if u["userPrincipalName"].startswith("breakglass"))


@pytest.fixture(scope="module")
def host(azurite, simulator, tmp_path_factory):
    env = host_env(azurite.connection_string, simulator, tenant_settings(SEED), RESPONDER_MODE="approval",
                   PLAYBOOK_STEPS="snapshot,reset-password")
    proc = start_host(str(REPO), env=env, port=0, log_path=str(tmp_path_factory.mktemp("host-auth") / "host.log"))
    yield proc
    proc.stop()


@pytest.fixture
def storage(fresh_storage, host, sim):
    return fresh_storage


def token(sim, who: str, *roles: str, **overrides) -> str:
    if "@" in who:
        return sim.client.operator_token(who, list(roles), **overrides)
    return sim.client.operator_token(app=who, roles=list(roles), **overrides)


def call(host, method, path, **kw):
    return api(host.url, method, path, **kw)


async def acall(host, method, path, **kw):
    return await asyncio.to_thread(api, host.url, method, path, **kw)


def held_incident(host, sim, upn=ADELE, submitter=("sentinel", SUBMIT)) -> str:
    status, body = call(host, "POST", "incidents", token=token(sim, *submitter),
                        body={"version": 1, "user_principal_name": upn})
    assert status == 202 and body["outcome"] == "held", body
    return body["incident_id"]


async def blocked_incident(connection: str, incident_id: str, sign_in: str = "blocked") -> str:
    """An incident that left the user's sign-in blocked (BLOCK_SIGN_IN=until-approved), as the steps write it."""
    storage = open_storage({"AzureWebJobsStorage": connection})
    try:
        await storage.ledger.ensure()
        await storage.ledger.create_incident({"incident_id": incident_id, "user_key": SEED["users"][0]["id"],
                                              "user_id": SEED["users"][0]["id"], "state": "succeeded",
                                              "correlation_id": "c-1", "sign_in": sign_in})
    finally:
        await storage.close()
    return incident_id


# -- route x role ------------------------------------------------------------------------------

ROUTES = [
    ("POST", "incidents", SUBMIT, {"version": 1, "user_principal_name": ADELE}, 202),
    ("GET", "incidents", READ, None, 200),
    ("GET", "incidents/{id}", READ, None, 200),
    ("POST", "incidents/{id}/approve", APPROVE, None, 202),
    ("POST", "incidents/{id}/reject", APPROVE, {"reason": "false positive"}, 200),
    ("GET", "storm", READ, None, 200),
    ("POST", "storm/reset", APPROVE, None, 200),
    ("POST", "incidents/{blocked}/enable-sign-in", APPROVE, None, 202),
    ("GET", "incidents/{id}/undo", READ, None, 200),
    ("POST", "incidents/{id}/undo", APPROVE, {}, 409),  # a held incident changed nothing: nothing to undo
    ("GET", "securescore?days=30", READ, None, 200),
    ("GET", "securescore/chart.svg?days=30", READ, None, 200),
]


@pytest.mark.parametrize("method, path, role, body, ok", ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES])
async def test_each_route_needs_a_validated_principal_holding_its_role(host, storage, sim, azurite_connection_string,
                                                                      method, path, role, body, ok):
    if "{id}" in path:
        path = path.format(id=await asyncio.to_thread(held_incident, host, sim))
    if "{blocked}" in path:
        path = path.format(blocked=await blocked_incident(azurite_connection_string, "inc-0blockedmatrix"))
    others = [r for r in ALL_ROLES if r != role]
    nobody = await acall(host, method, path, body=body)
    key_only = await acall(host, method, path, body=body, key=host.function_key)
    wrong_role = await acall(host, method, path, body=body, token=token(sim, "mallory@contoso.onmicrosoft.com", *others))
    no_roles = await acall(host, method, path, body=body, token=token(sim, "nobody@contoso.onmicrosoft.com"))
    right = await acall(host, method, path, body=body, token=token(sim, "olivia@contoso.onmicrosoft.com", role))
    assert (nobody[0], key_only[0], wrong_role[0], no_roles[0]) == (401, 401, 403, 403)
    assert role in wrong_role[1]["error"]
    assert right[0] == ok, right


async def test_a_reader_can_read_but_not_approve_and_a_function_key_can_do_neither(host, storage, sim):
    incident_id = await asyncio.to_thread(held_incident, host, sim)
    reader = token(sim, "reader@contoso.onmicrosoft.com", READ)
    status, view = await acall(host, "GET", f"incidents/{incident_id}", token=reader)
    assert status == 200 and view["state"] == "held"
    assert (await acall(host, "POST", f"incidents/{incident_id}/approve", token=reader))[0] == 403
    for method, path in (("GET", f"incidents/{incident_id}"), ("GET", "incidents"),
                         ("POST", f"incidents/{incident_id}/approve")):
        assert (await acall(host, method, path, key=host.function_key))[0] == 401, path
        assert (await acall(host, method, path, key=host.master_key))[0] == 401, path
    assert (await acall(host, "GET", f"incidents/{incident_id}", token=reader))[1]["approvals"] == []


# -- separation of duties ----------------------------------------------------------------------


async def test_the_submitter_cannot_approve_their_own_incident(host, storage, sim):
    carol = token(sim, "carol@contoso.onmicrosoft.com", SUBMIT, APPROVE, READ)
    incident_id = await asyncio.to_thread(held_incident, host, sim, ADELE, ("carol@contoso.onmicrosoft.com", SUBMIT, APPROVE))
    status, body = await acall(host, "POST", f"incidents/{incident_id}/approve", token=carol)
    assert status == 403 and "submitter" in body["reason"]
    status, view = await acall(host, "GET", f"incidents/{incident_id}", token=carol)
    assert view["state"] == "held" and view["approvals"] == []
    assert view["submitted_by"]["upn"] == "carol@contoso.onmicrosoft.com"
    status, body = await acall(host, "POST", f"incidents/{incident_id}/approve",
                               token=token(sim, "alice@contoso.onmicrosoft.com", APPROVE))
    assert status == 202 and body["outcome"] == "approved"


async def test_a_protected_account_is_held_after_one_approval_and_released_by_a_second_different_approver(host, storage, sim):
    tables, _ = storage
    alice = token(sim, "alice@contoso.onmicrosoft.com", APPROVE, READ)
    bob = token(sim, "bob@contoso.onmicrosoft.com", APPROVE)
    status, body = await acall(host, "POST", "incidents", token=token(sim, "sentinel", SUBMIT),
                               body={"version": 1, "user_principal_name": GLASS["userPrincipalName"]})
    assert status == 202 and body["outcome"] == "held"
    assert body["protection"] == "protected: yes, because the account is a member of PROTECTED_GROUP_ID"
    incident_id = body["incident_id"]

    status, first = await acall(host, "POST", f"incidents/{incident_id}/approve", token=alice)
    assert status == 202 and first["outcome"] == "approval-recorded" and first["approvals_required"] == 2
    status, again = await acall(host, "POST", f"incidents/{incident_id}/approve", token=alice)
    assert status == 409 and again["outcome"] == "already-approved"
    status, view = await acall(host, "GET", f"incidents/{incident_id}", token=alice)
    assert view["state"] == "held" and [a["upn"] for a in view["approvals"]] == ["alice@contoso.onmicrosoft.com"]
    assert await peek(storage[1], "step-snapshot") == [] and sim.client.tenant_changes() == []

    status, second = await acall(host, "POST", f"incidents/{incident_id}/approve", token=bob)
    assert status == 202 and second["outcome"] == "approved"

    async def left_held():
        row = next((r for r in await rows(tables, "incidents") if r["PartitionKey"] == incident_id), {})
        return row if row.get("state") not in (None, "held", "queued", "running") else None

    done = await wait_for(left_held)
    # Released: the steps ran (the break-glass account is an administrator, so the app's User
    # Administrator role cannot reset it: the reset step says which role is missing).
    assert done["state"] == "failed" and "Privileged Authentication Administrator" in done["stop_reason"]
    status, view = await acall(host, "GET", f"incidents/{incident_id}", token=alice)
    assert [a["upn"] for a in view["approvals"]] == ["alice@contoso.onmicrosoft.com", "bob@contoso.onmicrosoft.com"]
    assert all(a["object_id"] and a["at"] for a in view["approvals"])
    assert view["submitted_by"]["upn"].startswith("app:") and view["submitted_by"]["kind"] == "app"
    assert view["protection"].startswith("protected: yes")


async def test_reject_ends_a_held_incident_without_any_change_and_records_who(host, storage, sim):
    incident_id = await asyncio.to_thread(held_incident, host, sim)
    alice = token(sim, "alice@contoso.onmicrosoft.com", APPROVE, READ)
    status, body = await acall(host, "POST", f"incidents/{incident_id}/reject", token=alice,
                               body={"reason": "known travel\n\x1b[31mnot a compromise\u202e"})
    assert status == 200 and body["outcome"] == "rejected"
    status, view = await acall(host, "GET", f"incidents/{incident_id}", token=alice)
    assert view["state"] == "rejected" and view["rejected_by"]["upn"] == "alice@contoso.onmicrosoft.com"
    assert view["reject_reason"] == "known travel [31mnot a compromise"
    assert (await acall(host, "POST", f"incidents/{incident_id}/approve", token=alice))[0] == 409
    assert (await acall(host, "POST", f"incidents/{incident_id}/reject", token=alice, body={}))[0] == 400
    assert sim.client.tenant_changes() == []  # (the SOC was mailed that it was held: not a tenant change)


# -- tokens ------------------------------------------------------------------------------------


def _tampered(good: str) -> str:
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = [SUBMIT, READ, APPROVE]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def _signed_elsewhere(good: str) -> str:
    """The same claims and key id, signed with a key the issuer never published."""
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    return jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                      headers={"kid": kid})


def _unsigned(good: str) -> str:
    claims = jwt.decode(good, options={"verify_signature": False})
    return jwt.encode(claims, None, algorithm="none")


@pytest.mark.parametrize("kind", ["tampered", "expired", "not-yet-valid", "wrong-audience", "other-tenant",
                                  "other-key", "unsigned", "not-a-jwt"])
async def test_a_broken_token_is_refused_with_401(host, storage, sim, kind):
    upn, roles = "eve@contoso.onmicrosoft.com", [READ]
    if kind == "expired":
        bad = token(sim, upn, *roles, lifetime_s=-3600)
    elif kind == "not-yet-valid":
        bad = token(sim, upn, *roles, not_before_s=3600)
    elif kind == "wrong-audience":
        bad = token(sim, upn, *roles, audience="api://someone-elses-api")
    elif kind == "other-tenant":
        bad = token(sim, upn, *roles, tenant="11111111-2222-3333-4444-555555555555")
    elif kind == "not-a-jwt":
        bad = "definitely-not-a-token"
    else:
        good = token(sim, upn, *roles)
        bad = {"tampered": _tampered, "other-key": _signed_elsewhere, "unsigned": _unsigned}[kind](good)
    status, body = await acall(host, "GET", "incidents", token=bad)
    assert status == 401, body
    if kind == "tampered":  # the same token untouched is fine: the refusal is the tampering
        assert (await acall(host, "GET", "incidents", token=token(sim, upn, *roles)))[0] == 200


async def test_client_supplied_principal_headers_are_stripped(host, storage, sim):
    incident_id = await asyncio.to_thread(held_incident, host, sim)
    forged = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "0dc668f6-43fa-5f46-a937-25829277128d"},
        {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": SEED["tenant"]["id"]},
        {"typ": "roles", "val": APPROVE}, {"typ": "preferred_username", "val": "ceo@contoso.onmicrosoft.com"}],
        "name_typ": "", "role_typ": ""}).encode()).decode()
    headers = {"X-MS-CLIENT-PRINCIPAL": forged, "X-MS-CLIENT-PRINCIPAL-ID": "0dc668f6-43fa-5f46-a937-25829277128d",
               "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged"}
    assert (await acall(host, "POST", f"incidents/{incident_id}/approve", headers=headers))[0] == 401
    reader = token(sim, "reader@contoso.onmicrosoft.com", READ)
    status, body = await acall(host, "POST", f"incidents/{incident_id}/approve", headers=headers, token=reader)
    assert status == 403 and APPROVE in body["error"]  # the forged principal was replaced by the real one


# -- intake ------------------------------------------------------------------------------------


def _request(**fields):
    return {"version": 1, **fields}


INTAKE_REFUSALS = [
    ("an id and a UPN of two different users", _request(user_id=GLASS["id"], user_principal_name=ADELE), "different users"),
    ("detected_at in the future", _request(user_principal_name=ADELE,
                                           detected_at=iso(datetime.now(timezone.utc) + timedelta(hours=1))), "in the future"),
    ("detected_at older than LOOKBACK_DAYS", _request(user_principal_name=ADELE,
                                                      detected_at=iso(datetime.now(timezone.utc) - timedelta(days=31))),
     "LOOKBACK_DAYS"),
    ("detected_at 0001-01-01", _request(user_principal_name=ADELE, detected_at="0001-01-01T00:00:00Z"), "LOOKBACK_DAYS"),
    ("a stream source", _request(user_principal_name=ADELE, source="entra-diagnostics"), "may not claim the stream source"),
    ("Identity Protection's riskDetail", _request(user_principal_name=ADELE, risk_detail="adminConfirmedUserCompromised"),
     "risk_detail"),
    ("a user the tenant does not have", _request(user_principal_name="ghost@contoso.onmicrosoft.com"), "no such user"),
]


@pytest.mark.parametrize("body, reason", [(b, r) for _, b, r in INTAKE_REFUSALS], ids=[n for n, _, _ in INTAKE_REFUSALS])
async def test_http_intake_refuses(host, storage, sim, body, reason):
    tables, _ = storage
    status, answer = await acall(host, "POST", "incidents", token=token(sim, "sentinel", SUBMIT), body=body)
    assert status == 400 and reason in answer["error"], answer
    assert await rows(tables, "incidents") == []


async def test_queue_intake_parks_a_refused_request_with_its_reason(host, storage, sim):
    tables, queues = storage
    body = json.dumps(_request(user_principal_name=ADELE, source="defender-stream"))
    await queues.get_queue_client("alerts").send_message(base64.b64encode(body.encode()).decode())

    async def parked():
        return [e for e in await rows(tables, "errors") if e["PartitionKey"] == "alerts"]

    [error] = await wait_for(parked)
    assert "queue callers may not claim the stream source defender-stream" in error["reason"]
    assert len(await peek(queues, "alerts-poison")) == 1 and await rows(tables, "incidents") == []


async def test_free_text_reaches_the_record_without_control_characters(host, storage, sim):
    status, body = await acall(host, "POST", "incidents", token=token(sim, "sentinel", SUBMIT), body=_request(
        user_principal_name=ADELE, reason="phish\r\nBcc: everyone\x00\x1b]8;;evil\x07", alert_ids=["a\u202e1", "\x00\x01", "b\n2"]))
    assert status == 202
    status, view = await acall(host, "GET", f"incidents/{body['incident_id']}", token=token(sim, "r@contoso.onmicrosoft.com", READ))
    assert view["alert_ids"] == ["a1", "b 2"]
    assert all(ord(c) >= 32 for c in json.dumps(view))  # nothing unprintable anywhere in the record
    incident = next(r for r in await rows(storage[0], "incidents") if r["PartitionKey"] == body["incident_id"])
    assert incident["reason"] == "phish Bcc: everyone]8;;evil"


async def test_a_stream_record_from_another_tenant_is_rejected(host, storage, sim):
    tables, _ = storage
    record = {"time": iso(datetime.now(timezone.utc)), "tenantId": "11111111-2222-3333-4444-555555555555",
              "category": "UserRiskEvents", "operationName": "User Risk Detection",
              "properties": {"userId": SEED["users"][0]["id"], "userPrincipalName": ADELE, "riskLevel": "high",
                             "riskState": "atRisk", "riskEventType": "unfamiliarFeatures", "id": "d-1",
                             "detectedDateTime": iso(datetime.now(timezone.utc))}}
    payload = json.dumps({"input": json.dumps([json.dumps({"records": [record]})])}).encode()

    def invoke():
        import urllib.request
        request = urllib.request.Request(f"{host.url}/admin/functions/entra_stream?wait=true", data=payload, method="POST",
                                         headers={"Content-Type": "application/json", "x-functions-key": host.master_key})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as response:
            return response.status

    assert await asyncio.to_thread(invoke) == 200
    errors = [e for e in await rows(tables, "errors") if e["PartitionKey"] == "eventhub-entra"]
    assert len(errors) == 1 and "not TENANT_ID" in errors[0]["reason"]
    assert await rows(tables, "incidents") == []


# -- key-only intake ---------------------------------------------------------------------------


async def test_key_only_intake_is_off_by_default_and_works_only_when_switched_on(host, storage, sim, azurite, tmp_path):
    sentinel = token(sim, "sentinel", SUBMIT)
    off = await acall(host, "POST", "key-intake", token=sentinel, key=host.function_key, body=_request(user_principal_name=ADELE))
    assert off[0] == 403 and "KEY_ONLY_INTAKE" in off[1]["error"]
    env = host_env(azurite.connection_string, sim, tenant_settings(SEED), RESPONDER_MODE="approval",
                   PLAYBOOK_STEPS="snapshot,reset-password", KEY_ONLY_INTAKE="true", LOCALDEV_EASYAUTH_EXCLUDED_PATHS="/api/key-intake")
    keyed = await asyncio.to_thread(start_host, str(REPO), env, 0, 60.0, log_path=str(tmp_path / "host.log"))
    try:
        assert (await asyncio.to_thread(api, keyed.url, "POST", "key-intake", body=_request(user_principal_name=ADELE)))[0] == 401
        status, body = await asyncio.to_thread(api, keyed.url, "POST", "key-intake", key=keyed.function_key,
                                               body=_request(user_principal_name=ADELE))
        assert status == 202 and body["outcome"] == "held"
        # the identity routes still need a token on this host
        assert (await asyncio.to_thread(api, keyed.url, "GET", "incidents", key=keyed.function_key))[0] == 401
    finally:
        await asyncio.to_thread(keyed.stop)
    incident = next(r for r in await rows(storage[0], "incidents") if r["PartitionKey"] == body["incident_id"])
    assert incident["submitted_via"] == "http" and incident["submitted_by_oid"] == ""


# -- the CLI as a signed-in principal ------------------------------------------------------------


def responder(*args: str, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AzureWebJobsStorage", "RESPONDER_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=60)


async def test_cli_decisions_go_through_the_api_and_record_the_signed_in_principal(host, storage, sim):
    first = await asyncio.to_thread(held_incident, host, sim)
    second = await asyncio.to_thread(held_incident, host, sim, "megan.bowen@contoso.onmicrosoft.com")
    dana = {"RESPONDER_API_URL": host.url, "RESPONDER_TOKEN": token(sim, "dana@contoso.onmicrosoft.com", APPROVE, READ)}
    reader = {"RESPONDER_API_URL": host.url, "RESPONDER_TOKEN": token(sim, "reader@contoso.onmicrosoft.com", READ)}
    refused = await asyncio.to_thread(responder, "approve", first, env=reader)
    assert refused.returncode == 1 and "403" in refused.stdout
    unsigned = await asyncio.to_thread(responder, "approve", first, env={"RESPONDER_API_URL": host.url})
    assert unsigned.returncode == 2 and "not signed in" in unsigned.stderr
    approved = await asyncio.to_thread(responder, "approve", first, env=dana)
    assert approved.returncode == 0 and "approved" in approved.stdout and "dana@contoso.onmicrosoft.com" in approved.stdout
    rejected = await asyncio.to_thread(responder, "reject", second, "--reason", "test account", env=dana)
    assert rejected.returncode == 0 and "rejected" in rejected.stdout
    _, view = await acall(host, "GET", f"incidents/{second}", token=dana["RESPONDER_TOKEN"])
    assert view["rejected_by"]["upn"] == "dana@contoso.onmicrosoft.com" and view["reject_reason"] == "test account"
    _, view = await acall(host, "GET", f"incidents/{first}", token=dana["RESPONDER_TOKEN"])
    assert [a["upn"] for a in view["approvals"]] == ["dana@contoso.onmicrosoft.com"]
    storm = await asyncio.to_thread(responder, "storm", "reset", env=dana)
    assert storm.returncode == 0 and "last reset by dana@contoso.onmicrosoft.com" in storm.stdout
    status = await asyncio.to_thread(responder, "storm", "status", "--json", env=reader)
    assert status.returncode == 0 and json.loads(status.stdout)["last_reset_by"]["upn"] == "dana@contoso.onmicrosoft.com"


async def test_operator_tokens_never_reach_a_log_a_table_or_a_queue(host, storage, sim):
    tables, queues = storage
    tokens = [token(sim, "sentinel", SUBMIT), token(sim, "alice@contoso.onmicrosoft.com", APPROVE, READ),
              token(sim, "eve@contoso.onmicrosoft.com", READ, lifetime_s=-3600)]
    status, body = await acall(host, "POST", "incidents", token=tokens[0], body=_request(user_principal_name=ADELE))
    assert status == 202
    assert (await acall(host, "POST", f"incidents/{body['incident_id']}/approve", token=tokens[1]))[0] == 202
    assert (await acall(host, "GET", "incidents", token=tokens[2]))[0] == 401
    assert (await acall(host, "GET", "incidents", token=_tampered(tokens[1])))[0] == 401
    texts = [host.log_text()]
    for table in ("incidents", "steps", "errors", "userincidents", "stormwindow"):
        texts += [json.dumps(r, default=str) for r in await rows(tables, table)]
    for queue in ("alerts", "step-snapshot", "step-reset-password"):
        texts += [base64.b64decode(m.content).decode(errors="replace") for m in await peek(queues, queue)]
    secrets = [t for t in tokens] + [t.rsplit(".", 1)[1] for t in tokens]  # whole tokens and their signatures
    assert not [i for i, text in enumerate(texts) for s in secrets if s in text]


async def test_cli_enable_sign_in_goes_through_the_api_as_an_approver_and_records_who(host, storage, sim,
                                                                                    azurite_connection_string):
    blocked = await blocked_incident(azurite_connection_string, "inc-0blocked")
    restored = await blocked_incident(azurite_connection_string, "inc-0restored", "restored")
    dana = {"RESPONDER_API_URL": host.url, "RESPONDER_TOKEN": token(sim, "dana@contoso.onmicrosoft.com", APPROVE)}
    reader = {"RESPONDER_API_URL": host.url, "RESPONDER_TOKEN": token(sim, "reader@contoso.onmicrosoft.com", READ)}
    refused = await asyncio.to_thread(responder, "enable-sign-in", blocked, env=reader)
    assert refused.returncode == 1 and "403" in refused.stdout
    out = await asyncio.to_thread(responder, "enable-sign-in", blocked, "--json", env=dana)
    assert out.returncode == 0 and json.loads(out.stdout)["outcome"] == "queued"
    incident = next(r for r in await rows(storage[0], "incidents") if r["PartitionKey"] == blocked)
    assert incident["sign_in_release_requested_by"] == "dana@contoso.onmicrosoft.com"
    assert incident["sign_in_release_requested_by_oid"]
    not_blocked = await asyncio.to_thread(responder, "enable-sign-in", restored, env=dana)
    assert not_blocked.returncode == 1 and "not-blocked" in not_blocked.stdout
    unknown = await asyncio.to_thread(responder, "enable-sign-in", "inc-0nothere", env=dana)
    assert unknown.returncode == 1 and "not-found" in unknown.stdout
