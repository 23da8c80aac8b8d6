"""The tenant behaviours of issue 12 as the simulator models them (docs/tenant-behaviours.md):
each test pins one behaviour the product must survive, on the wire, against the running simulator.
"""
from __future__ import annotations

import base64

import pytest

from localdev.simulator.client import EXO_RESOURCE, GRAPH_RESOURCE

TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
ADMIN = "admin@contoso.onmicrosoft.com"
ADMIN_ID = "075d3865-4472-51e6-aa9f-e91e5c89bd22"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
MEGAN_ID = "db5829ad-8269-5e33-bdbb-564d04662a23"
GLOBAL_ADMIN_TEMPLATE = "62e90394-69f5-4237-9190-012177145e10"
ATTACKER_PHONE = "3179e48a-750b-4051-897c-87b9720928f7"
SYSTEM_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@" + TENANT


@pytest.fixture
def gtoken(sim):
    return sim.get_token(GRAPH_RESOURCE)


@pytest.fixture
def xtoken(sim):
    return sim.get_token(EXO_RESOURCE)


def graph(sim, token, method, path, body=None, query=None, headers=None):
    return sim.client.raw(method, path, body=body, token=token, query=query, headers=headers)


def exo(sim, token, cmdlet, anchor=SYSTEM_ANCHOR, **params):
    headers = {"X-AnchorMailbox": anchor} if anchor else {}
    return sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=token, headers=headers,
                          body={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})


# ---------------------------------------------------------------------- privileged users

def test_privileged_user_password_reset_is_403_for_a_user_administrator_app(sim, gtoken):
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADMIN}",
                            body={"passwordProfile": {"password": "Tr0ub4dor&3-horse-Battery"}})
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"
    # revoking the admin's sessions is allowed (User.RevokeSessions.All is an application permission)
    assert graph(sim, gtoken, "POST", f"/v1.0/users/{ADMIN}/revokeSignInSessions")[0] == 200


def test_directory_roles_are_read_with_a_transitive_member_of_cast_and_consistency_level(sim, gtoken):
    path = f"/v1.0/users/{ADMIN_ID}/transitiveMemberOf/microsoft.graph.directoryRole"
    # an OData cast is an advanced query: ConsistencyLevel: eventual and $count are required
    status, _, body = graph(sim, gtoken, "GET", path)
    assert status == 400 and body["error"]["code"] == "Request_UnsupportedQuery"
    status, _, body = graph(sim, gtoken, "GET", path, query={"$count": "true"},
                            headers={"ConsistencyLevel": "eventual"})
    assert status == 200 and body["@odata.count"] == 1
    role = body["value"][0]
    assert role["@odata.type"] == "#microsoft.graph.directoryRole"
    assert role["roleTemplateId"] == GLOBAL_ADMIN_TEMPLATE and role["displayName"] == "Global Administrator"
    _, _, mine = graph(sim, gtoken, "GET", f"/v1.0/users/{MEGAN}/transitiveMemberOf/microsoft.graph.directoryRole",
                       query={"$count": "true"}, headers={"ConsistencyLevel": "eventual"})
    assert mine["value"] == [] and mine["@odata.count"] == 0


def test_role_assignments_and_eligibility_are_read_with_their_own_permissions(sim, gtoken):
    # Directory.Read.All (granted for revoke-app-consent's reads) reads role assignments too: without it,
    # RoleManagement.Read.Directory is what the responder lacks.
    sim.client.set_permissions(denied=["Directory.Read.All"])
    query = {"$filter": f"principalId eq '{ADMIN_ID}'"}
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/roleManagement/directory/roleAssignments", query=query)
    assert status == 403  # RoleManagement.Read.Directory is not granted to the responder
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances",
                            query={"$filter": f"principalId eq '{MEGAN_ID}'"})
    assert status == 200 and body["value"] == []
    sim.client.set_permissions(denied=["RoleEligibilitySchedule.Read.Directory"])
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances",
                            query=query)
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"


def test_an_eligible_role_shows_in_the_eligibility_schedule_instances_not_in_the_active_roles(sim, gtoken):
    seed = _seed_with(sim, MEGAN, eligibleRoles=["Exchange Administrator"])
    sim.client.reset(seed)
    _, _, active = graph(sim, gtoken, "GET", f"/v1.0/users/{MEGAN}/transitiveMemberOf/microsoft.graph.directoryRole",
                         query={"$count": "true"}, headers={"ConsistencyLevel": "eventual"})
    assert active["value"] == []
    _, _, eligible = graph(sim, gtoken, "GET", "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances",
                           query={"$filter": f"principalId eq '{MEGAN_ID}'"})
    assert [r["roleDefinitionId"] for r in eligible["value"]] == ["29232cdf-9323-42fd-ade2-1d097af3e4de"]
    assert eligible["value"][0]["memberType"] == "Direct"


def _seed_with(sim, upn, **changes):
    import json

    from localdev.stack import SEED_FILE

    seed = json.loads(SEED_FILE.read_text())
    for user in seed["users"]:
        if user["userPrincipalName"] == upn:
            user.update(changes)
    return seed


# ---------------------------------------------------------------------- inbox rules

def test_read_only_rule_is_refused_by_the_graph_rules_api_and_disabled_through_exchange(sim, gtoken, xtoken):
    path = f"/v1.0/users/{ADELE}/mailFolders/inbox/messageRules"
    rules = graph(sim, gtoken, "GET", path)[2]["value"]
    locked = [r for r in rules if r["isReadOnly"]]
    assert [r["displayName"] for r in locked] == ["Archive copy"]
    status, _, body = graph(sim, gtoken, "PATCH", f"{path}/{locked[0]['id']}", body={"isEnabled": False})
    assert status == 403 and body["error"]["code"] == "ErrorAccessDenied"
    rows = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE, IncludeHidden=True)[2]["value"]
    row = next(r for r in rows if r["Name"] == "Archive copy")
    status, _, _ = exo(sim, xtoken, "Disable-InboxRule", Identity=row["Identity"], Confirm=False)
    assert status == 200
    assert graph(sim, gtoken, "GET", f"{path}/{locked[0]['id']}")[2]["isEnabled"] is False


def test_disable_inbox_rule_prompts_when_outlook_client_rules_exist_and_confirm_false_removes_them(sim, xtoken):
    assert len(sim.client.user_state(ADELE)["client_rules"]) == 2
    rows = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE, IncludeHidden=True)[2]["value"]
    target = next(r for r in rows if r["Name"] == "Sync")
    status, _, body = exo(sim, xtoken, "Disable-InboxRule", Identity=target["Identity"])
    assert status == 400
    inner = body["error"]["innererror"]["internalexception"]
    assert inner["type"] == "System.Management.Automation.Host.HostException"
    assert "does not support user interaction" in inner["message"]
    assert sim.client.user_state(ADELE)["client_rules"] != []  # nothing happened
    status, _, body = exo(sim, xtoken, "Disable-InboxRule", Identity=target["Identity"], Confirm=False)
    assert status == 200 and "client-side rule" in body["@adminapi.warnings"][0]
    state = sim.client.user_state(ADELE)
    assert state["client_rules"] == []
    assert [r["isEnabled"] for r in state["rules"] if r["ruleIdentity"] == target["RuleIdentity"]] == [False]


def test_exchange_rule_identity_maps_to_the_graph_rule_id(sim, gtoken, xtoken):
    graph_rules = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}/mailFolders/inbox/messageRules")[2]["value"]
    rows = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE, IncludeHidden=True)[2]["value"]
    by_number = {int.from_bytes(base64.b64decode(r["id"])[4:8], "big"): r for r in graph_rules}
    visible = [row for row in rows if int(row["RuleIdentity"]) >> 32 in by_number]
    assert len(visible) == len(graph_rules)
    for row in visible:
        assert by_number[int(row["RuleIdentity"]) >> 32]["sequence"] == row["Priority"]
    # Exchange Online identities are MailboxAlias\RuleIdentity
    assert all(row["Identity"] == f"adele.vance\\{row['RuleIdentity']}" for row in rows)


def test_a_hidden_rule_named_like_a_visible_one_is_ambiguous_by_name(sim, xtoken):
    status, _, body = exo(sim, xtoken, "Disable-InboxRule", Identity="Newsletters", Mailbox=ADELE, Confirm=False)
    assert status == 400
    assert "matches multiple entries" in body["error"]["innererror"]["internalexception"]["message"]


def test_system_rules_are_not_supported_by_the_inbox_rule_cmdlets(sim, xtoken):
    rows = exo(sim, xtoken, "Get-InboxRule", Mailbox=ADELE, IncludeHidden=True)[2]["value"]
    support = {r["Name"]: r["SupportedByTask"] for r in rows}
    assert support["Junk E-Mail Rule"] is False and support["Microsoft.Exchange.OOF.KnownSenders.Handled"] is False
    assert support["Junk E-Mail Rule (sync)"] is True  # an attacker's rule with a system-like name


# ---------------------------------------------------------------------- authentication methods

def test_directory_audits_date_security_info_registrations_with_graph_filters(sim, gtoken):
    query = {"$filter": f"targetResources/any(t: t/id eq '{ADELE_ID}') and loggedByService eq 'Authentication Methods'"}
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits", query=query)
    assert status == 200
    events = body["value"]
    assert [e["activityDateTime"] for e in events] == sorted((e["activityDateTime"] for e in events), reverse=True)
    registered = {e["resultReason"] for e in events if e["activityDisplayName"] == "User registered security info"}
    assert {"User registered Mobile Phone SMS", "User registered Software OATH token"} <= registered
    assert all(e["category"] == "UserManagement" and e["targetResources"][0]["id"] == ADELE_ID for e in events)
    # a property Graph does not filter on is refused, like Graph
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits",
                            query={"$filter": "resultReason eq 'x'"})
    assert status == 400
    sim.client.set_permissions(denied=["AuditLog.Read.All"])
    assert graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits", query=query)[0] == 403


def test_deleting_the_default_phone_sign_in_method_is_refused_with_400(sim, gtoken):
    path = f"/v1.0/users/{ADELE}/authentication/phoneMethods/{ATTACKER_PHONE}"
    status, _, body = graph(sim, gtoken, "DELETE", path)
    assert status == 400
    assert body["error"]["code"] == "badRequest"
    assert body["error"]["message"].startswith("Cannot delete default method")
    assert body["error"]["innerError"]["message"] == body["error"]["message"]
    ids = [m["id"] for m in graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}/authentication/methods")[2]["value"]]
    assert ATTACKER_PHONE in ids


def test_deleting_a_method_is_audited_as_the_apps_doing(sim, gtoken):
    totp = next(m for m in sim.client.user_state(ADELE)["auth_methods"] if m["type"] == "softwareOath")
    assert graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE}/authentication/softwareOathMethods/{totp['id']}")[0] == 204
    _, _, body = graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits",
                       query={"$filter": "activityDisplayName eq 'Admin deleted security info'"})
    assert body["value"][0]["initiatedBy"]["app"]["servicePrincipalId"] == sim.client.state(users=False)[
        "managedIdentity"]["objectId"]


# ---------------------------------------------------------------------- risk

def test_confirm_compromised_sets_high_risk_moves_the_timestamp_and_records_a_detection(sim, gtoken):
    before = graph(sim, gtoken, "GET", f"/v1.0/identityProtection/riskyUsers/{ADELE_ID}")[2]
    assert graph(sim, gtoken, "POST", "/v1.0/identityProtection/riskyUsers/confirmCompromised",
                 body={"userIds": [ADELE_ID]})[0] == 204
    after = graph(sim, gtoken, "GET", f"/v1.0/identityProtection/riskyUsers/{ADELE_ID}")[2]
    assert (after["riskLevel"], after["riskState"], after["riskDetail"]) == (
        "high", "confirmedCompromised", "adminConfirmedUserCompromised")
    assert after["riskLastUpdatedDateTime"] > before["riskLastUpdatedDateTime"]
    dets = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskDetections",
                 query={"$filter": f"userId eq '{ADELE_ID}'"})[2]["value"]
    assert "adminConfirmedUserCompromised" in [d["riskEventType"] for d in dets]


def test_an_admin_password_reset_after_the_confirmation_remediates_the_risk(sim, gtoken):
    graph(sim, gtoken, "POST", "/v1.0/identityProtection/riskyUsers/confirmCompromised", body={"userIds": [ADELE_ID]})
    assert graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADELE_ID}",
                 body={"passwordProfile": {"password": "Tr0ub4dor&3-horse-Battery"}})[0] == 204
    risky = graph(sim, gtoken, "GET", f"/v1.0/identityProtection/riskyUsers/{ADELE_ID}")[2]
    assert (risky["riskLevel"], risky["riskState"], risky["riskDetail"]) == (
        "none", "remediated", "adminGeneratedTemporaryPassword")
    dets = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskDetections",
                 query={"$filter": f"userId eq '{ADELE_ID}'"})[2]["value"]
    assert {d["riskState"] for d in dets} == {"remediated"}


def test_dismiss_sets_risk_none_and_dismissed(sim, gtoken):
    assert graph(sim, gtoken, "POST", "/v1.0/identityProtection/riskyUsers/dismiss", body={"userIds": [ADELE_ID]})[0] == 204
    risky = graph(sim, gtoken, "GET", f"/v1.0/identityProtection/riskyUsers/{ADELE_ID}")[2]
    assert (risky["riskLevel"], risky["riskState"], risky["riskDetail"]) == ("none", "dismissed",
                                                                             "adminDismissedAllRiskForUser")


# ---------------------------------------------------------------------- Exchange anchoring

def test_exchange_refuses_an_invoke_command_without_an_anchor_mailbox(sim, xtoken):
    status, _, body = exo(sim, xtoken, "Get-OrganizationConfig", anchor=None)
    assert status == 400
    assert body["error"]["innererror"]["internalexception"]["type"].endswith("CmdletProxyNotAvailableException")
    assert exo(sim, xtoken, "Get-OrganizationConfig", anchor="UPN:nobody@contoso.onmicrosoft.com")[0] == 400
    assert exo(sim, xtoken, "Get-OrganizationConfig",
               anchor="APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@other.onmicrosoft.com")[0] == 400
    assert exo(sim, xtoken, "Get-Mailbox", anchor=f"UPN:{ADELE}", Identity=ADELE)[0] == 200
    assert exo(sim, xtoken, "Get-OrganizationConfig")[0] == 200
    logged = sim.client.requests(service="exo")[-1]
    assert logged["headers"]["X-AnchorMailbox"] == SYSTEM_ANCHOR


# ---------------------------------------------------------------------- polling order and error shapes

def test_alerts_v2_lists_the_newest_first_and_filters_only_documented_properties(sim, gtoken):
    first = sim.client.add_alert(user=ADELE, title="older")
    second = sim.client.add_alert(user=MEGAN, title="newer")
    body = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2")[2]
    created = [a["createdDateTime"] for a in body["value"]]
    assert created == sorted(created, reverse=True)
    ids = [a["id"] for a in body["value"]]
    assert ids.index(second["id"]) < ids.index(first["id"])
    assert graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2", query={"$filter": "title eq 'older'"})[0] == 400


def test_identity_protection_throttles_without_retry_after(sim, gtoken):
    sim.client.fault_once(service="graph", path_contains="/identityProtection/", status=429, retry_after="2")
    sim.client.fault_once(service="graph", path_contains="/security/alerts_v2", status=429, retry_after="2")
    status, headers, body = graph(sim, gtoken, "GET", "/v1.0/identityProtection/riskyUsers")
    assert status == 429 and "Retry-After" not in headers and body["error"]["code"] == "TooManyRequests"
    status, headers, _ = graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2")
    assert status == 429 and headers["Retry-After"] == "2"


def test_graph_503_is_json_with_retry_after_and_504_is_the_gateways_html(sim, gtoken):
    sim.client.fault_once(service="graph", path_contains="/users/", status=503, retry_after="1")
    status, headers, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")
    assert status == 503 and headers["Retry-After"] == "1" and body["error"]["code"] == "ServiceUnavailable"
    sim.client.fault_once(service="graph", path_contains="/users/", status=504)
    status, headers, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE}")
    assert status == 504 and headers["Content-Type"].startswith("text/html") and "504" in body


def test_a_one_shot_fault_can_let_the_first_matching_requests_through(sim, gtoken):
    sim.client.fault_once(service="graph", path_contains="/security/alerts_v2", status=503, skip=1)
    assert graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2")[0] == 200
    assert graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2")[0] == 503
    assert graph(sim, gtoken, "GET", "/v1.0/security/alerts_v2")[0] == 200
