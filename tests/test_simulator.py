"""Tests of the local M365 tenant simulator: auth, permissions, Graph and Exchange wire formats, state."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from localdev.simulator.client import EXO_RESOURCE, GRAPH_RESOURCE

ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
ADMIN = "admin@contoso.onmicrosoft.com"
BREAKGLASS = "breakglass@contoso.onmicrosoft.com"
SYNCED = "synced.user@contoso.onmicrosoft.com"
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
PROTECTED_GROUP = "89078a84-e02e-5b70-aba6-bc307cb73a0e"
MFA_GROUP = "4889d933-f4ca-5590-b917-e07ec631c0b6"
ATTACKER_METHOD = "6622d290-1cbd-5b3b-aa49-5c40e2640073"
GOOD_PASSWORD = "Tr0ub4dor&3-horse-Battery"  # 3+ classes, 25 chars
GRAPH_CT = "application/json;odata.metadata=minimal"


@pytest.fixture
def gtoken(sim):
    return sim.get_token(GRAPH_RESOURCE)


@pytest.fixture
def xtoken(sim):
    return sim.get_token(EXO_RESOURCE + "/.default")


def graph(sim, token, method, path, body=None, query=None, headers=None):
    status, hdrs, parsed = sim.client.raw(method, path, body=body, token=token, query=query, headers=headers)
    return status, hdrs, parsed


SYSTEM_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@" + TENANT


def exo(sim, token, cmdlet, tenant=TENANT, anchor=SYSTEM_ANCHOR, **params):
    headers = {"X-AnchorMailbox": anchor} if anchor else {}
    return sim.client.raw("POST", f"/adminapi/beta/{tenant}/InvokeCommand", token=token, headers=headers,
                          body={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})


def assert_graph_error(body, code):
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    inner = err["innerError"]
    assert {"date", "request-id", "client-request-id"} <= set(inner)
    dt.datetime.strptime(inner["date"], "%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------- tokens and auth

def test_token_endpoint_requires_identity_header(sim):
    q = {"api-version": "2019-08-01", "resource": GRAPH_RESOURCE}
    status, _, body = sim.client.raw("GET", "/msi/token", query=q)
    assert status == 400 and "access_token" not in body
    status, _, body = sim.client.raw("GET", "/msi/token", query=q, headers={"X-IDENTITY-HEADER": "wrong"})
    assert status == 401 and "access_token" not in body
    status, _, body = sim.client.raw("GET", "/msi/token", query=q, headers={"X-IDENTITY-HEADER": sim.identity_header})
    assert status == 200
    assert body["resource"] == GRAPH_RESOURCE and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) > dt.datetime.now().timestamp()
    assert isinstance(body["expires_on"], str)
    # unknown resource / wrong client id are refused
    status, _, _ = sim.client.raw("GET", "/msi/token", headers={"X-IDENTITY-HEADER": sim.identity_header},
                                  query={"api-version": "2019-08-01", "resource": "https://vault.azure.net"})
    assert status == 400
    status, _, _ = sim.client.raw("GET", "/msi/token", headers={"X-IDENTITY-HEADER": sim.identity_header},
                                  query={**q, "client_id": "00000000-0000-0000-0000-000000000000"})
    assert status == 400
    tokens = sim.client.requests(service="token")
    assert [t["status"] for t in tokens] == [400, 401, 200, 400, 400]
    assert body["access_token"] not in json.dumps(tokens)


def test_bearer_token_required_and_audience_bound(sim, gtoken, xtoken):
    status, hdrs, body = graph(sim, None, "GET", f"/v1.0/users/{ADELE}")
    assert status == 401
    assert_graph_error(body, "InvalidAuthenticationToken")
    assert "Bearer" in hdrs["WWW-Authenticate"]
    status, _, body = graph(sim, "not-a-token", "GET", f"/v1.0/users/{ADELE}")
    assert status == 401
    assert_graph_error(body, "InvalidAuthenticationToken")
    # EXO token on Graph and Graph token on EXO: wrong audience
    status, _, body = graph(sim, xtoken, "GET", f"/v1.0/users/{ADELE}")
    assert status == 401 and "audience" in body["error"]["message"]
    status, _, body = exo(sim, gtoken, "Get-OrganizationConfig")
    assert status == 401 and "audience" in body["error"]["message"]
    # the right tokens work
    assert graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")[0] == 200
    assert exo(sim, xtoken, "Get-OrganizationConfig")[0] == 200
    # Authorization headers are never recorded
    log = json.dumps(sim.client.requests())
    assert gtoken not in log and xtoken not in log
    # invalidated tokens stop working
    sim.client.clear_tokens()
    assert graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")[0] == 401


def test_permission_denied_is_403_authorization_request_denied(sim, gtoken):
    granted = [p for p in sim.client.permissions()["granted"] if p != "Directory.Read.All"]  # it reads users too
    sim.client.set_permissions(granted=granted, denied=["User.Read.All"])
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")
    assert status == 403
    assert_graph_error(body, "Authorization_RequestDenied")
    assert body["error"]["message"] == "Insufficient privileges to complete the operation."
    entry = sim.client.requests(service="graph")[-1]
    assert entry["permission"].startswith("missing:") and "User.Read.All" in entry["permission"]
    # any-of: a higher-privileged alternative satisfies the same endpoint
    perms = sim.client.permissions()
    sim.client.set_permissions(granted=perms["granted"] + ["Directory.Read.All"])
    status, _, _ = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")
    assert status == 200
    assert sim.client.requests(service="graph")[-1]["permission"] == "Directory.Read.All"
    # EXO needs Exchange.ManageAsApp
    sim.client.set_permissions(denied=["Exchange.ManageAsApp"])
    status, _, body = exo(sim, sim.get_token(EXO_RESOURCE), "Get-Mailbox", Identity=ADELE)
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"


# ---------------------------------------------------------------------- users

def test_get_user_select_shape(sim, gtoken):
    select = "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled"
    status, hdrs, body = graph(sim, gtoken, "GET", "/v1.0/users/Adele.Vance@CONTOSO.onmicrosoft.com",
                               query={"$select": select})
    assert status == 200
    assert hdrs["Content-Type"].startswith(GRAPH_CT)
    assert body == {
        "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users({select})/$entity",
        "id": ADELE_ID, "userPrincipalName": ADELE, "accountEnabled": True, "onPremisesSyncEnabled": None,
    }
    _, _, synced = graph(sim, gtoken, "GET", f"/v1.0/users/{SYNCED}", query={"$select": select})
    assert synced["onPremisesSyncEnabled"] is True
    # default property set: no accountEnabled / onPremisesSyncEnabled
    _, _, default = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}")
    assert default["id"] == ADELE_ID and default["displayName"] == "Adele Vance"
    assert "accountEnabled" not in default and "onPremisesSyncEnabled" not in default
    assert set(default) - {"@odata.context"} == {"businessPhones", "displayName", "givenName", "jobTitle", "mail",
                                                 "mobilePhone", "officeLocation", "preferredLanguage", "surname",
                                                 "userPrincipalName", "id"}
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}", query={"$select": "id,nonsense"})
    assert status == 400
    assert_graph_error(body, "Request_BadRequest")


def test_user_errors_404_and_400(sim, gtoken):
    status, hdrs, body = graph(sim, gtoken, "GET", "/v1.0/users/68be84bf-a585-4776-80b3-30aa5207aa22")
    assert status == 404
    assert_graph_error(body, "Request_ResourceNotFound")
    assert body["error"]["message"] == ("Resource '68be84bf-a585-4776-80b3-30aa5207aa22' does not exist or one of "
                                        "its queried reference-property objects are not present.")
    assert body["error"]["innerError"]["request-id"] == hdrs["request-id"]
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/users/not-an-id")
    assert status == 400
    assert_graph_error(body, "Request_BadRequest")
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/nonsense/path")
    assert status == 400
    assert_graph_error(body, "BadRequest")
    assert "nonsense" in body["error"]["message"]
    status, _, body = graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE}")
    assert status == 405
    status, _, body = graph(sim, gtoken, "GET", "/v2.0/whatever")
    assert status == 404 and "error" in body
    assert "Traceback" not in json.dumps(body)


def test_password_reset_never_stores_the_password(sim, gtoken):
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADELE}", body={
        "passwordProfile": {"forceChangePasswordNextSignIn": True, "password": GOOD_PASSWORD}})
    assert (status, body) == (204, None)
    user = sim.client.user_state(ADELE)
    assert user["password_changes"] == 1
    assert user["force_change"] is True
    assert user["last_password_sha256"] == hashlib.sha256(GOOD_PASSWORD.encode()).hexdigest()
    assert user["password_change_records"][0]["writeback"] is None  # cloud-only user
    entry = sim.client.requests(service="graph", method="PATCH")[-1]
    assert entry["body"]["passwordProfile"]["password"] == "<redacted>"
    assert entry["user"] == ADELE_ID
    assert entry["permission"] == "User-PasswordProfile.ReadWrite.All"
    everything = json.dumps(sim.client.requests()) + json.dumps(sim.client.state()) + sim.log_tail(10_000)
    assert GOOD_PASSWORD not in everything
    # a password reset remediates the user's risk (Entra: adminGeneratedTemporaryPassword)
    assert user["risk"]["riskState"] == "remediated"


@pytest.mark.parametrize("password", ["short1A!", "alllowercaseletters", "ALLUPPER1234567", "Pässwörd-ÜmlautX1",
                                      "Aa1!"])
def test_password_complexity_is_enforced(sim, gtoken, password):
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{MEGAN}",
                            body={"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": True}})
    if password == "short1A!":  # exactly 8 chars, 4 classes: valid
        assert status == 204
        return
    assert status == 400
    assert_graph_error(body, "Request_BadRequest")
    assert "complexity" in body["error"]["message"]
    assert sim.client.user_state(MEGAN)["password_changes"] == 0
    assert password not in json.dumps(sim.client.requests())


def test_password_reset_of_admin_needs_privileged_authentication_administrator(sim, gtoken):
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADMIN}",
                            body={"passwordProfile": {"password": GOOD_PASSWORD}})
    assert status == 403
    assert_graph_error(body, "Authorization_RequestDenied")
    assert sim.client.user_state(ADMIN)["password_changes"] == 0
    assert "Privileged Authentication Administrator" in sim.client.requests(method="PATCH")[-1]["permission"]
    sim.client.set_permissions(directory_roles=["User Administrator", "Privileged Authentication Administrator"])
    status, _, _ = graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADMIN}",
                         body={"passwordProfile": {"password": GOOD_PASSWORD}})
    assert status == 204
    assert sim.client.user_state(ADMIN)["password_changes"] == 1
    # a non-admin needs at least User Administrator
    sim.client.set_permissions(directory_roles=[])
    assert graph(sim, gtoken, "PATCH", f"/v1.0/users/{MEGAN}",
                 body={"passwordProfile": {"password": GOOD_PASSWORD}})[0] == 403


def test_synced_and_federated_users_password_reset_is_refused_with_the_documented_400(sim, gtoken):
    for upn, text in ((SYNCED, "on-premises mastered Directory Sync objects"),
                      ("federated.user@fabrikam.com", "originated within an external service")):
        status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{upn}",
                                body={"passwordProfile": {"password": GOOD_PASSWORD, "forceChangePasswordNextSignIn": True}})
        assert status == 400
        assert_graph_error(body, "Request_BadRequest")
        assert text in body["error"]["message"]
        assert sim.client.user_state(upn)["password_changes"] == 0
    # sessions can still be revoked
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{SYNCED}/revokeSignInSessions")[0] == 200


def test_patch_user_account_enabled_needs_its_own_permission(sim, gtoken):
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{MEGAN}", body={"accountEnabled": False})
    assert status == 403  # seed grants no User.EnableDisableAccount.All / User.ReadWrite.All
    sim.client.set_permissions(granted=sim.client.permissions()["granted"] + ["User.EnableDisableAccount.All"])
    assert graph(sim, gtoken, "PATCH", f"/v1.0/users/{MEGAN}", body={"accountEnabled": False})[0] == 204
    assert sim.client.user_state(MEGAN)["accountEnabled"] is False
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{MEGAN}", body={"city": "Paris"})
    assert status == 400


def test_revoke_sign_in_sessions(sim, gtoken):
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/users/{ADELE}/revokeSignInSessions")
    assert status == 200
    assert body == {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": True}
    graph(sim, gtoken, "POST", f"/beta/users/{ADELE_ID}/revokeSignInSessions")
    user = sim.client.user_state(ADELE)
    assert user["revocations"] == 2 and user["last_revoked_at"]
    sim.client.set_permissions(denied=["User.RevokeSessions.All"])
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{ADELE}/revokeSignInSessions")[0] == 403
    assert sim.client.user_state(ADELE)["revocations"] == 2


# ---------------------------------------------------------------------- groups

def test_group_membership(sim, gtoken):
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{ADELE_ID}"}
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/groups/{MFA_GROUP}/members/$ref", body=ref)
    assert (status, body) == (204, None)
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/groups/{MFA_GROUP}/members/$ref", body=ref)
    assert status == 400
    assert_graph_error(body, "Request_BadRequest")
    assert body["error"]["message"] == ("One or more added object references already exist for the following "
                                        "modified properties: 'members'.")
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/groups/{MFA_GROUP}/members/$ref",
                            body={"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/"
                                               "11111111-2222-3333-4444-555555555555"})
    assert status == 404
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/groups/{MFA_GROUP}/members", query={"$select": "id"})
    assert status == 200
    assert body["value"] == [{"@odata.type": "#microsoft.graph.user", "id": ADELE_ID}]
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/users/{ADELE}/checkMemberGroups",
                            body={"groupIds": [MFA_GROUP, PROTECTED_GROUP]})
    assert status == 200 and body["value"] == [MFA_GROUP]
    _, _, body = graph(sim, gtoken, "POST", f"/v1.0/users/{BREAKGLASS}/checkMemberGroups",
                       body={"groupIds": [MFA_GROUP, PROTECTED_GROUP]})
    assert body["value"] == [PROTECTED_GROUP]
    assert MFA_GROUP in sim.client.user_state(ADELE)["groups"]


# ---------------------------------------------------------------------- authentication

def test_beta_per_user_mfa_requirements(sim, gtoken):
    path = f"/beta/users/{ADELE_ID}/authentication/requirements"
    status, _, body = graph(sim, gtoken, "GET", path)
    assert status == 200 and body["perUserMfaState"] == "disabled"
    status, _, body = graph(sim, gtoken, "PATCH", path, body={"perUserMfaState": "enforced"})
    assert (status, body) == (204, None)
    assert graph(sim, gtoken, "GET", path)[2]["perUserMfaState"] == "enforced"
    assert sim.client.user_state(ADELE)["per_user_mfa"] == "enforced"
    assert graph(sim, gtoken, "PATCH", path, body={"perUserMfaState": "on"})[0] == 400
    # beta only
    assert graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}/authentication/requirements")[0] == 400
    # GET needs Policy.Read.All (or the write scope); PATCH needs Policy.ReadWrite.AuthenticationMethod
    sim.client.set_permissions(denied=["Policy.ReadWrite.AuthenticationMethod"])
    assert graph(sim, gtoken, "PATCH", path, body={"perUserMfaState": "disabled"})[0] == 403
    assert graph(sim, gtoken, "GET", path)[0] == 200
    assert sim.client.user_state(ADELE)["per_user_mfa"] == "enforced"


def test_auth_methods_list_and_delete(sim, gtoken):
    path = f"/v1.0/users/{ADELE}/authentication/methods"
    status, _, body = graph(sim, gtoken, "GET", path)
    assert status == 200
    types = [m["@odata.type"] for m in body["value"]]
    assert types == ["#microsoft.graph.passwordAuthenticationMethod", "#microsoft.graph.phoneAuthenticationMethod",
                     "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
                     "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
                     "#microsoft.graph.phoneAuthenticationMethod",
                     "#microsoft.graph.softwareOathAuthenticationMethod"]
    # v1.0 phone and software OATH methods carry no creation time
    undated = [m for m in body["value"] if "phone" in m["@odata.type"] or "softwareOath" in m["@odata.type"]]
    assert undated and all("createdDateTime" not in m for m in undated)
    authenticators = [m for m in body["value"] if "Authenticator" in m["@odata.type"]]
    assert all("createdDateTime" in m and "displayName" in m for m in authenticators)
    # the attacker's authenticator was registered after the first risk detection
    _, _, dets = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskDetections",
                       query={"$filter": f"userId eq '{ADELE_ID}'"})
    first = min(d["detectedDateTime"] for d in dets["value"])
    newer = [m["id"] for m in authenticators if m["createdDateTime"] > first]
    assert newer == [ATTACKER_METHOD]

    status, _, body = graph(sim, gtoken, "DELETE",
                            f"/v1.0/users/{ADELE}/authentication/microsoftAuthenticatorMethods/{ATTACKER_METHOD}")
    assert (status, body) == (204, None)
    status, _, body = graph(sim, gtoken, "DELETE",
                            f"/v1.0/users/{ADELE}/authentication/microsoftAuthenticatorMethods/{ATTACKER_METHOD}")
    assert status == 404
    # wrong collection for an existing id
    status, _, _ = graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE}/authentication/phoneMethods/"
                                                "b31ebe9d-ecd6-5578-be55-49757d9a0ebc")
    assert status == 404
    status, _, _ = graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE}/authentication/passwordMethods/"
                                                "28c10230-6103-485e-b985-444c60001490")
    assert status == 400
    ids = [m["id"] for m in graph(sim, gtoken, "GET", path)[2]["value"]]
    assert ATTACKER_METHOD not in ids and len(ids) == 5
    user = sim.client.user_state(ADELE)
    assert [m["id"] for m in user["deleted_auth_methods"]] == [ATTACKER_METHOD]


def test_temporary_access_pass_is_returned_once_and_not_stored(sim, gtoken):
    status, _, body = graph(sim, gtoken, "POST", f"/v1.0/users/{ADELE_ID}/authentication/temporaryAccessPassMethods",
                            body={"lifetimeInMinutes": 60, "isUsableOnce": True})
    assert status == 201
    assert body["@odata.type"] == "#microsoft.graph.temporaryAccessPassAuthenticationMethod"
    tap = body["temporaryAccessPass"]
    assert isinstance(tap, str) and len(tap) == 8
    assert body["isUsableOnce"] is True and body["lifetimeInMinutes"] == 60 and body["isUsable"] is True
    _, _, listing = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}/authentication/methods")
    taps = [m for m in listing["value"] if m["@odata.type"].endswith("temporaryAccessPassAuthenticationMethod")]
    assert len(taps) == 1 and taps[0]["temporaryAccessPass"] is None
    assert tap not in json.dumps(sim.client.state()) + json.dumps(sim.client.requests())
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{ADELE_ID}/authentication/temporaryAccessPassMethods",
                 body={"lifetimeInMinutes": 5})[0] == 400


# ---------------------------------------------------------------------- identity protection, alerts

def test_risky_users_filter_paging_and_actions(sim, gtoken):
    created = sim.client.add_users(45, prefix="risky", risky=True)
    assert len(created) == 45
    query = {"$filter": "riskState eq 'atRisk' and riskLevel eq 'high'", "$top": "20"}
    status, _, page = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskyUsers", query=query)
    assert status == 200
    assert page["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#identityProtection/riskyUsers"
    ids = [u["id"] for u in page["value"]]
    pages = 1
    while "@odata.nextLink" in page:
        link = page["@odata.nextLink"]
        assert link.startswith(sim.url + "/v1.0/identityProtection/riskyUsers?")
        status, _, page = graph(sim, gtoken, "GET", link[len(sim.url):])
        assert status == 200
        ids += [u["id"] for u in page["value"]]
        pages += 1
    assert pages == 3 and len(ids) == 46 and len(set(ids)) == 46 and ADELE_ID in ids
    # watermark filter
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _, _, none = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskyUsers",
                       query={"$filter": f"riskLastUpdatedDateTime gt {future}"})
    assert none["value"] == []
    assert graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskyUsers",
                 query={"$filter": "riskState eq"})[0] == 400

    status, _, body = graph(sim, gtoken, "POST", "/v1.0/identityProtection/riskyUsers/confirmCompromised",
                            body={"userIds": [ADELE_ID]})
    assert (status, body) == (204, None)
    _, _, one = graph(sim, gtoken, "GET", f"/v1.0/identityProtection/riskyUsers/{ADELE_ID}")
    assert (one["riskLevel"], one["riskState"]) == ("high", "confirmedCompromised")
    _, _, beta = graph(sim, gtoken, "GET", f"/beta/identityProtection/riskyUsers/{ADELE_ID}")
    assert beta["isGuest"] is False
    assert graph(sim, gtoken, "POST", "/v1.0/identityProtection/riskyUsers/dismiss",
                 body={"userIds": [created[0]["id"]]})[0] == 204
    assert sim.client.user_state(created[0]["userPrincipalName"])["risk"]["riskState"] == "dismissed"


def test_risk_detections_shape(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskDetections",
                            query={"$filter": f"userId eq '{ADELE_ID}'"})
    assert status == 200 and len(body["value"]) == 2
    for det in body["value"]:
        assert det["userPrincipalName"] == ADELE
        assert isinstance(det["additionalInfo"], str)
        assert isinstance(json.loads(det["additionalInfo"]), list)
        assert {"riskEventType", "riskState", "riskLevel", "detectedDateTime", "ipAddress", "location"} <= set(det)
    _, _, other = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskDetections",
                        query={"$filter": "userId eq 'db5829ad-8269-5e33-bdbb-564d04662a23'"})
    assert other["value"] == []


def test_alerts_v2_watermark_and_evidence(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2",
                            query={"$filter": "lastUpdateDateTime gt 2020-01-01T00:00:00Z"})
    assert status == 200 and len(body["value"]) == 2
    user_alert, device_alert = body["value"]
    users = [e["userAccount"] for e in user_alert["evidence"]
             if e["@odata.type"] == "#microsoft.graph.security.userEvidence"]
    assert users[0]["azureAdUserId"] == ADELE_ID and users[0]["userPrincipalName"] == ADELE
    assert {"accountName", "domainName", "userSid"} <= set(users[0])
    assert not [e for e in device_alert["evidence"] if e["@odata.type"].endswith("userEvidence")]
    # the device alert is older than a 2-hour watermark, the user alert is not
    mark = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _, _, recent = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2",
                         query={"$filter": f"lastUpdateDateTime gt {mark}"})
    assert [a["id"] for a in recent["value"]] == [user_alert["id"]]
    _, _, paged = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2", query={"$top": "1"})
    assert len(paged["value"]) == 1 and paged["@odata.nextLink"].startswith(sim.url)
    new = sim.client.add_alert(user=MEGAN, title="Impossible travel")
    _, _, after = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2",
                        query={"$filter": f"lastUpdateDateTime gt {mark}"})
    assert new["id"] in [a["id"] for a in after["value"]]


# ---------------------------------------------------------------------- mail and rules

def test_message_rules_graph_view_and_patch(sim, gtoken, xtoken):
    path = f"/v1.0/users/{ADELE}/mailFolders/inbox/messageRules"
    status, _, body = graph(sim, gtoken, "GET", path)
    assert status == 200
    names = [r["displayName"] for r in body["value"]]
    assert names == ["Sync", "..", "Invoices", "Newsletters", "Archive copy"]  # hidden rules are not listed
    forward = body["value"][0]
    assert forward["actions"]["forwardTo"][0]["emailAddress"]["address"].endswith(".example")
    assert set(forward) == {"id", "displayName", "sequence", "isEnabled", "hasError", "isReadOnly", "conditions",
                            "actions"}
    status, _, rule = graph(sim, gtoken, "PATCH", f"{path}/{forward['id']}", body={"isEnabled": False})
    assert status == 200
    assert rule["@odata.context"].endswith("/messageRules/$entity")
    assert rule["isEnabled"] is False
    assert rule["actions"] == forward["actions"] and rule["conditions"] == forward["conditions"]
    assert rule["displayName"] == "Sync" and rule["id"] == forward["id"]
    # the same rule as Exchange sees it
    _, _, rows = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE)
    sync = [r for r in rows["value"] if r["Name"] == "Sync"][0]
    assert sync["Enabled"] is False
    assert graph(sim, gtoken, "PATCH", f"{path}/{forward['id']}", body={"isEnabled": "no"})[0] == 400
    assert graph(sim, gtoken, "PATCH", f"{path}/AQAAAAAAAAA=", body={"isEnabled": False})[0] == 404
    state_rules = sim.client.user_state(ADELE)["rules"]
    assert [r["isEnabled"] for r in state_rules if r["displayName"] == "Sync"] == [False]


def test_exo_envelope_hidden_rules_and_disable(sim, gtoken, xtoken):
    status, hdrs, body = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE)
    assert status == 200
    assert list(body) == ["@odata.context", "adminapi.warnings@odata.type", "@adminapi.warnings", "value"]
    assert body["@odata.context"] == (f"https://outlook.office365.com/adminapi/beta/{TENANT}/$metadata"
                                      "#Collection(Exchange.GenericHashTable)")
    assert body["adminapi.warnings@odata.type"] == "#Collection(String)" and body["@adminapi.warnings"] == []
    assert len(body["value"]) == 5
    _, _, hidden = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE, IncludeHidden=True)
    rows = hidden["value"]
    assert len(rows) == 10
    for row in rows:
        assert {"Identity", "Name", "Enabled", "Priority", "RuleIdentity", "ForwardTo", "RedirectTo",
                "DeleteMessage", "MoveToFolder", "MarkAsRead"} <= set(row)
    names = {r["Name"] for r in rows}
    assert {"Junk E-Mail Rule", "Microsoft.Exchange.OOF.KnownSenders.Handled"} <= names
    invoices = [r for r in rows if r["Name"] == "Invoices"][0]
    assert invoices["MoveToFolder"].endswith("RSS Subscriptions") and invoices["MarkAsRead"] is True
    redirect = [r for r in rows if r["RedirectTo"] and r["Name"] == " "][0]
    status, _, body = exo(sim, xtoken, "Disable-InboxRule", Identity=redirect["Identity"], Confirm=False)
    assert status == 200 and body["value"] == []
    rules = {r["ruleIdentity"]: r for r in sim.client.user_state(ADELE)["rules"]}
    assert rules[redirect["RuleIdentity"]]["isEnabled"] is False and rules[redirect["RuleIdentity"]]["hidden"]
    junk = [r for r in rules.values() if r["displayName"] == "Junk E-Mail Rule"][0]
    assert junk["isEnabled"] is True
    # Graph still does not list hidden rules
    _, _, graph_rules = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}/mailFolders/inbox/messageRules")
    assert redirect["Name"] not in [r["displayName"] for r in graph_rules["value"]]


def test_exo_errors(sim, xtoken):
    status, _, body = exo(sim, xtoken, "Get-Mailbox", Identity=ADELE, BogusParameter="x")
    assert status == 400
    err = body["error"]
    assert err["code"] == "BadRequest" and err["message"] == "Invalid Operation"
    assert err["details"][0]["code"] == "Client" and "BogusParameter" in err["details"][0]["message"]
    inner = err["innererror"]
    assert inner["type"] == "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
    assert inner["internalexception"]["message"].endswith("Invalid cmdlet parameters specified. BogusParameter")
    assert inner["internalexception"]["type"] == ("Microsoft.Exchange.AdminApi.CommandInvocation."
                                                  "AmbiguousParameterSetException")
    status, _, body = exo(sim, xtoken, "Get-Mailbox", Identity="nobody@contoso.onmicrosoft.com")
    assert status == 404
    assert ("The operation couldn't be performed because object 'nobody@contoso.onmicrosoft.com' couldn't be found"
            in body["error"]["innererror"]["internalexception"]["message"])
    status, _, body = exo(sim, xtoken, "Get-Mailbox", Identity=BREAKGLASS)  # no mailbox
    assert status == 404
    assert exo(sim, xtoken, "Get-Nonsense")[0] == 400
    assert exo(sim, xtoken, "Get-OrganizationConfig", tenant="11111111-1111-1111-1111-111111111111")[0] == 401
    assert exo(sim, xtoken, "Get-OrganizationConfig", tenant="contoso.onmicrosoft.com")[0] == 200
    status, _, body = exo(sim, xtoken, "Set-Mailbox", Identity=ADELE, AuditEnabled="maybe")
    assert status == 400 and "AuditEnabled" in body["error"]["innererror"]["internalexception"]["message"]


def test_exo_mailbox_forwarding_audit_and_blocked_sender(sim, xtoken):
    _, _, body = exo(sim, xtoken, "Get-Mailbox", Identity=ADELE)
    row = body["value"][0]
    assert row["ForwardingSmtpAddress"] == "smtp:adele.vance.archive@outlook-mailsync.example"
    assert row["ForwardingAddress"] is None and row["DeliverToMailboxAndForward"] is False
    assert row["AuditEnabled"] is False and row["AuditLogAgeLimit"] == "90.00:00:00"
    assert row["ExternalDirectoryObjectId"] == ADELE_ID and row["UserPrincipalName"] == ADELE
    status, _, body = exo(sim, xtoken, "Set-Mailbox", Identity=ADELE, ForwardingSmtpAddress=None,
                          ForwardingAddress=None, DeliverToMailboxAndForward=False, AuditEnabled=True)
    assert status == 200 and body["value"] == []
    row = exo(sim, xtoken, "Get-Mailbox", Identity=ADELE_ID)[2]["value"][0]
    assert row["ForwardingSmtpAddress"] is None and row["AuditEnabled"] is True
    assert exo(sim, xtoken, "Get-OrganizationConfig")[2]["value"][0]["AuditDisabled"] is False
    bypass = exo(sim, xtoken, "Get-MailboxAuditBypassAssociation", Identity=ADELE)[2]["value"][0]
    assert bypass["AuditBypassEnabled"] is True and bypass["ObjectClass@odata.type"] == "#Collection(String)"
    assert exo(sim, xtoken, "Set-MailboxAuditBypassAssociation", Identity=ADELE, AuditBypassEnabled=False)[0] == 200
    assert sim.client.user_state(ADELE)["mailbox"]["AuditBypassEnabled"] is False
    # blocked senders
    _, _, blocked = exo(sim, xtoken, "Get-BlockedSenderAddress", SenderAddress=ADELE)
    assert [r["SenderAddress"] for r in blocked["value"]] == [ADELE]
    assert {"Reason", "CreatedDatetime", "ChangedDatetime"} <= set(blocked["value"][0])
    assert sim.client.user_state(ADELE)["blocked"] is True
    status, _, body = exo(sim, xtoken, "Remove-BlockedSenderAddress", SenderAddress=ADELE)
    assert status == 200 and body["value"] == [] and body["@adminapi.warnings"] == []
    status, _, body = exo(sim, xtoken, "Remove-BlockedSenderAddress", SenderAddress=ADELE)
    assert status == 200 and body["value"] == [] and len(body["@adminapi.warnings"]) == 1
    assert exo(sim, xtoken, "Get-BlockedSenderAddress")[2]["value"] == []
    assert sim.client.user_state(ADELE)["blocked"] is False
    actions = [m["action"] for m in sim.client.mutations()]
    assert actions.count("sender_unblocked") == 2 and "mailbox_updated" in actions


def test_send_mail_goes_to_outbox(sim, gtoken):
    message = {"message": {"subject": "Account remediated", "body": {"contentType": "Text", "content": "Summary"},
                           "toRecipients": [{"emailAddress": {"address": "secops@contoso.onmicrosoft.com"}}]},
               "saveToSentItems": False}
    status, hdrs, body = graph(sim, gtoken, "POST", f"/v1.0/users/{ADMIN}/sendMail", body=message)
    assert (status, body) == (202, None)
    outbox = sim.client.state(users=False)["outbox"]
    assert len(outbox) == 1 and outbox[0]["subject"] == "Account remediated"
    assert outbox[0]["toRecipients"] == ["secops@contoso.onmicrosoft.com"] and outbox[0]["from"] == ADMIN
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{ADMIN}/sendMail",
                 body={"message": {"subject": "x"}})[0] == 400
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{BREAKGLASS}/sendMail", body=message)[0] == 404


# ---------------------------------------------------------------------- secure score

def test_secure_scores_history_with_regression(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/security/secureScores")
    assert status == 200
    scores = body["value"]
    assert len(scores) == 90
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert scores[0]["createdDateTime"].startswith(today)
    assert scores[0]["id"] == f"{TENANT}_{today}"
    dates = [s["createdDateTime"] for s in scores]
    assert dates == sorted(dates, reverse=True)
    first = scores[0]
    assert 10 <= len(first["controlScores"]) <= 20
    assert {"controlCategory", "controlName", "description", "score"} <= set(first["controlScores"][0])
    assert {a["basis"] for a in first["averageComparativeScores"]} >= {"AllTenants", "TotalSeats"}
    assert first["vendorInformation"]["provider"] == "SecureScore"
    regressions = []
    for newer, older in zip(scores, scores[1:]):
        if older["currentScore"] - newer["currentScore"] > 5:
            before = {c["controlName"]: c["score"] for c in older["controlScores"]}
            fell = [c["controlName"] for c in newer["controlScores"] if c["score"] < before[c["controlName"]]]
            regressions.append((newer["createdDateTime"], fell))
    assert regressions and all(fell for _, fell in regressions)
    status, _, top = graph(sim, gtoken, "GET", "/v1.0/security/secureScores", query={"$top": "1"})
    assert status == 200 and len(top["value"]) == 1 and top["value"][0]["id"] == first["id"]


# ---------------------------------------------------------------------- $batch

def test_batch_dispatches_each_item(sim, gtoken):
    batch = {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{ADELE}?$select=id,accountEnabled"},
        {"id": "2", "method": "PATCH", "url": f"/users/{MEGAN}", "headers": {"Content-Type": "application/json"},
         "body": {"passwordProfile": {"password": GOOD_PASSWORD, "forceChangePasswordNextSignIn": True}}},
        {"id": "3", "method": "POST", "url": f"users/{ADELE_ID}/revokeSignInSessions"},
        {"id": "4", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000"},
        {"id": "5", "method": "GET", "url": "/users/me", "dependsOn": ["4"]},
    ]}
    status, _, body = graph(sim, gtoken, "POST", "/v1.0/$batch", body=batch)
    assert status == 200
    by_id = {r["id"]: r for r in body["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["accountEnabled"] is True
    assert by_id["2"]["status"] == 204 and "body" not in by_id["2"]
    assert by_id["3"]["status"] == 200 and by_id["3"]["body"]["value"] is True
    assert by_id["4"]["status"] == 404 and by_id["4"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert by_id["5"]["status"] == 424
    items = sim.client.requests(service="graph")
    batch_entry = [e for e in items if e["path"] == "/v1.0/$batch"][0]
    item_entries = [e for e in items if e["batch_id"] == batch_entry["batch_id"] and e["item_id"]]
    assert sorted(e["item_id"] for e in item_entries) == ["1", "2", "3", "4"]
    patch = [e for e in item_entries if e["item_id"] == "2"][0]
    assert patch["body"]["passwordProfile"]["password"] == "<redacted>"
    assert GOOD_PASSWORD not in json.dumps(items)
    assert sim.client.user_state(MEGAN)["password_changes"] == 1
    assert sim.client.user_state(ADELE)["revocations"] == 1


def test_batch_limits(sim, gtoken):
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{ADELE}"} for i in range(21)]}
    status, _, body = graph(sim, gtoken, "POST", "/v1.0/$batch", body=too_many)
    assert status == 400
    assert_graph_error(body, "BadRequest")
    dup = {"requests": [{"id": "1", "method": "GET", "url": "/users/x@y.com"}] * 2}
    assert graph(sim, gtoken, "POST", "/beta/$batch", body=dup)[0] == 400
    no_ct = {"requests": [{"id": "1", "method": "PATCH", "url": f"/users/{ADELE}", "body": {"accountEnabled": True}}]}
    assert graph(sim, gtoken, "POST", "/v1.0/$batch", body=no_ct)[0] == 400


def test_bulk_users_are_deterministic(sim, gtoken):
    first = sim.client.add_users(3, prefix="storm")
    assert [u["userPrincipalName"] for u in first] == [f"storm0000{i}@contoso.onmicrosoft.com" for i in (1, 2, 3)]
    again = sim.client.add_users(3, prefix="storm")
    assert again == first
    sim.client.reset()
    assert sim.client.add_users(3, prefix="storm") == first
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{first[1]['id']}",
                            query={"$select": "userPrincipalName"})
    assert status == 200 and body["userPrincipalName"] == first[1]["userPrincipalName"]
    compromised = sim.client.add_users(2, prefix="pwned", compromised=True)
    st = sim.client.user_state(compromised[0]["userPrincipalName"])
    assert st["risk"]["riskState"] == "atRisk" and st["blocked"] is True
    assert st["mailbox"]["ForwardingSmtpAddress"].startswith("smtp:") and st["rules"]


def test_reset_accepts_a_custom_seed(sim, gtoken):
    seed = {"tenant": {"id": TENANT, "domain": "contoso.onmicrosoft.com"},
            "managedIdentity": {"permissions": ["SecurityEvents.Read.All"]},
            "users": [{"userPrincipalName": "solo@contoso.onmicrosoft.com", "risk": {"riskLevel": "medium"}}],
            "secureScores": {"days": 5, "regressionDaysAgo": 2}}
    sim.client.reset(seed)
    st = sim.client.state()
    assert list(st["users"]) == ["solo@contoso.onmicrosoft.com"]
    _, _, scores = graph(sim, gtoken, "GET", "/v1.0/security/secureScores")
    assert len(scores["value"]) == 5
    assert graph(sim, gtoken, "GET", "/v1.0/users/solo@contoso.onmicrosoft.com")[0] == 403
    sim.client.reset()
    assert ADELE in sim.client.state()["users"]
