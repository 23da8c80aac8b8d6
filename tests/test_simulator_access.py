"""Issue 17's tenant behaviours as the simulator models them (docs/tenant-behaviours.md): mailbox and
recipient permissions, GrantSendOnBehalfTo, the junk-mail lists, the unified audit log, delegated
permission grants, app role assignments and service principals — each pinned on the wire."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from localdev.simulator.client import EXO_RESOURCE, GRAPH_RESOURCE

TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
HELPDESK = "helpdesk.sync@contoso.onmicrosoft.com"
ATTACKER_GRANT = "UjwfJbPm2U2rN8XqQx3kLd1Yk5mQ6n7o8p9q0r1s2t3"
ATTACKER_APP = "7e1f3c52-8a9d-5b04-a6c2-3d9e4f5a6b70"
EXPENSES_APP = "5b6c7d8e-9f0a-5b1c-8d2e-3f4a5b6c7d8e"
SYSTEM_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@" + TENANT
HASH = "#Exchange.GenericHashTable"
SIM_GRANTED = json.loads((Path(__file__).resolve().parents[1] / "localdev" / "simulator" / "seed.json").read_text()
                         )["managedIdentity"]["permissions"]


@pytest.fixture
def gtoken(sim):
    return sim.get_token(GRAPH_RESOURCE)


@pytest.fixture
def xtoken(sim):
    return sim.get_token(EXO_RESOURCE)


def graph(sim, token, method, path, body=None, query=None):
    return sim.client.raw(method, path, body=body, token=token, query=query)


def exo(sim, token, cmdlet, anchor=SYSTEM_ANCHOR, **params):
    return sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=token,
                          headers={"X-AnchorMailbox": anchor}, body={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})


def inner(body) -> str:
    return body["error"]["innererror"]["internalexception"]["message"]


def test_get_mailbox_permission_lists_the_documented_default_entries(sim, xtoken):
    status, _, body = exo(sim, xtoken, "Get-MailboxPermission", Identity=ADELE)
    assert status == 200
    rows = {r["User"]: r for r in body["value"]}
    self_row = rows["NT AUTHORITY\\SELF"]
    # "FullAccess and ReadPermission are directly assigned to NT AUTHORITY\SELF": not inherited
    assert self_row["AccessRights"] == ["FullAccess", "ReadPermission"] and self_row["IsInherited"] is False
    assert rows["NT AUTHORITY\\SYSTEM"]["IsInherited"] is True
    assert rows["EURPRD01\\Domain Admins"]["Deny"] is True
    assert rows[HELPDESK]["AccessRights"] == ["FullAccess"] and rows[HELPDESK]["IsInherited"] is False
    assert MEGAN in rows
    # -User filters within the mailbox; a missing Identity returns every mailbox's entries (the docs' caution)
    _, _, one = exo(sim, xtoken, "Get-MailboxPermission", Identity=ADELE, User=HELPDESK)
    assert [r["User"] for r in one["value"]] == [HELPDESK]
    _, _, every = exo(sim, xtoken, "Get-MailboxPermission")
    assert {r["Identity"] for r in every["value"]} >= {"adele.vance", "megan.bowen", "helpdesk.sync"}


def test_removing_a_missing_ace_warns_and_changes_nothing(sim, xtoken):
    params = {"Identity": ADELE, "User": HELPDESK, "AccessRights": ["FullAccess"], "InheritanceType": "All", "Confirm": False}
    status, _, body = exo(sim, xtoken, "Remove-MailboxPermission", anchor=f"UPN:{ADELE}", **params)
    assert status == 200 and body["@adminapi.warnings"] == []
    mark = len(sim.client.mutations())
    status, _, body = exo(sim, xtoken, "Remove-MailboxPermission", anchor=f"UPN:{ADELE}", **params)
    assert status == 200 and body["value"] == []
    assert "because the ACE doesn't exist on the object" in body["@adminapi.warnings"][0]
    assert sim.client.mutations()[mark:] == []
    status, _, body = exo(sim, xtoken, "Remove-MailboxPermission", Identity=ADELE, User=MEGAN, AccessRights="FullControl")
    assert status == 400 and "MailboxRights" in inner(body)
    status, _, body = exo(sim, xtoken, "Remove-MailboxPermission", Identity=ADELE, User=MEGAN)
    assert status == 400 and "AccessRights" in inner(body)
    records = sim.client.state(users=False)["unified_audit"]
    assert [r["Operation"] for r in records].count("Remove-MailboxPermission") == 1


def test_send_as_is_listed_by_recipient_or_by_trustee_and_a_missing_ace_warns(sim, xtoken):
    _, _, own = exo(sim, xtoken, "Get-RecipientPermission", Identity=ADELE, AccessRights="SendAs")
    assert [(r["Trustee"], r["AccessRights"]) for r in own["value"]] == [("NT AUTHORITY\\SELF", ["SendAs"]),
                                                                         (HELPDESK, ["SendAs"])]
    # Example 1: -Trustee alone lists the recipients the trustee has SendAs on
    _, _, held = exo(sim, xtoken, "Get-RecipientPermission", Trustee=HELPDESK)
    assert [r["Identity"] for r in held["value"]] == ["adele.vance"]
    status, _, body = exo(sim, xtoken, "Get-RecipientPermission", Identity=ADELE, AccessRights="FullAccess")
    assert status == 400  # "The only valid value for this parameter is SendAs."
    params = {"Identity": ADELE, "Trustee": HELPDESK, "AccessRights": ["SendAs"], "Confirm": False}
    assert exo(sim, xtoken, "Remove-RecipientPermission", **params)[2]["@adminapi.warnings"] == []
    status, _, body = exo(sim, xtoken, "Remove-RecipientPermission", **params)
    assert status == 200 and "because the ACE isn't present" in body["@adminapi.warnings"][0]


def test_grant_send_on_behalf_takes_the_hashtable_form_and_the_filter_needs_a_dn(sim, xtoken):
    anchor = f"UPN:{MEGAN}"
    status, _, body = exo(sim, xtoken, "Set-Mailbox", anchor=anchor, Identity=MEGAN,
                          GrantSendOnBehalfTo={"@odata.type": HASH, "Add": [ADELE, HELPDESK]})
    assert status == 200 and body["@adminapi.warnings"] == []
    _, _, mailbox = exo(sim, xtoken, "Get-Mailbox", anchor=anchor, Identity=MEGAN)
    row = mailbox["value"][0]
    assert row["GrantSendOnBehalfTo"] == [ADELE_ID, "3b8e6f14-2c7d-5e9a-b0f1-6a2d4c8e0f13"]  # object ids
    # without the hashtable marker the object is not a hashtable
    status, _, body = exo(sim, xtoken, "Set-Mailbox", anchor=anchor, Identity=MEGAN, GrantSendOnBehalfTo={"Remove": ADELE})
    assert status == 400 and "GrantSendOnBehalfTo" in inner(body)
    # the reverse lookup: by distinguished name only
    _, _, adele = exo(sim, xtoken, "Get-Mailbox", anchor=f"UPN:{ADELE}", Identity=ADELE)
    dn = adele["value"][0]["DistinguishedName"]
    _, _, found = exo(sim, xtoken, "Get-Mailbox", Filter=f"GrantSendOnBehalfTo -eq '{dn}'")
    assert [r["UserPrincipalName"] for r in found["value"]] == [MEGAN]
    status, _, body = exo(sim, xtoken, "Get-Mailbox", Filter=f"GrantSendOnBehalfTo -eq '{ADELE}'")
    assert status == 400 and "distinguished name" in inner(body)
    status, _, body = exo(sim, xtoken, "Set-Mailbox", anchor=anchor, Identity=MEGAN,
                          GrantSendOnBehalfTo={"@odata.type": HASH, "remove": ADELE})
    assert status == 200 and body["@adminapi.warnings"] == []
    status, _, body = exo(sim, xtoken, "Set-Mailbox", anchor=anchor, Identity=MEGAN,
                          GrantSendOnBehalfTo={"@odata.type": HASH, "Remove": ADELE})
    assert "no settings of" in body["@adminapi.warnings"][0]
    assert sim.client.user_state(MEGAN)["send_on_behalf"] == [HELPDESK]


def test_junk_email_configuration_hashtable_own_domain_and_no_change(sim, xtoken):
    anchor = f"UPN:{ADELE}"
    _, _, body = exo(sim, xtoken, "Get-MailboxJunkEmailConfiguration", anchor=anchor, Identity=ADELE)
    assert body["value"][0]["TrustedSendersAndDomains"] == ["northwindtraders.com", "secure-docs-share.example"]
    status, _, body = exo(sim, xtoken, "Set-MailboxJunkEmailConfiguration", anchor=anchor, Identity=ADELE,
                          TrustedSendersAndDomains={"@odata.type": HASH, "Remove": "secure-docs-share.example"})
    assert status == 200 and body["@adminapi.warnings"] == []
    status, _, body = exo(sim, xtoken, "Set-MailboxJunkEmailConfiguration", anchor=anchor, Identity=ADELE,
                          TrustedSendersAndDomains={"@odata.type": HASH, "Remove": "secure-docs-share.example"})
    assert "no settings of" in body["@adminapi.warnings"][0]
    # "You can't add sender email addresses from the same domain as the recipient's email address."
    status, _, body = exo(sim, xtoken, "Set-MailboxJunkEmailConfiguration", anchor=anchor, Identity=ADELE,
                          TrustedSendersAndDomains={"@odata.type": HASH, "Add": "megan.bowen@contoso.onmicrosoft.com"})
    assert status == 400 and "own domain" in inner(body)
    assert sim.client.user_state(ADELE)["junk_email"]["TrustedSendersAndDomains"] == ["northwindtraders.com"]


def test_search_unified_audit_log_requires_dates_and_caps_the_result_size(sim, xtoken):
    status, _, body = exo(sim, xtoken, "Search-UnifiedAuditLog", EndDate="2099-01-01T00:00:00Z")
    assert status == 400 and "StartDate" in inner(body)
    status, _, body = exo(sim, xtoken, "Search-UnifiedAuditLog", StartDate="2000-01-01T00:00:00Z",
                          EndDate="2099-01-01T00:00:00Z", ResultSize=5001)
    assert status == 400 and "5000" in inner(body)
    status, _, body = exo(sim, xtoken, "Search-UnifiedAuditLog", StartDate="2000-01-01T00:00:00Z",
                          EndDate="2099-01-01T00:00:00Z", RecordType="ExchangeAdmin",
                          Operations=["Add-MailboxPermission", "Add-RecipientPermission"], ResultSize=5000)
    assert status == 200
    rows = body["value"]
    assert [r["Operations"] for r in rows] == ["Add-RecipientPermission", "Add-MailboxPermission", "Add-MailboxPermission"]
    data = json.loads(rows[0]["AuditData"])  # a JSON string
    assert data["Operation"] == "Add-RecipientPermission" and data["ObjectId"] == ADELE
    assert {"Name": "Trustee", "Value": HELPDESK} in data["Parameters"] and "Z" not in data["CreationTime"]
    _, _, default = exo(sim, xtoken, "Search-UnifiedAuditLog", StartDate="2000-01-01T00:00:00Z",
                        EndDate="2099-01-01T00:00:00Z", Operations="Set-MailboxJunkEmailConfiguration")
    assert len(default["value"]) == 2 and all(r["ResultCount"] == 2 for r in default["value"])


def test_the_users_grants_leave_out_admin_consent(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}/oauth2PermissionGrants")
    assert status == 200
    assert {g["consentType"] for g in body["value"]} == {"Principal"} and len(body["value"]) == 2
    attacker = next(g for g in body["value"] if g["id"] == ATTACKER_GRANT)
    assert set(attacker) == {"clientId", "consentType", "id", "principalId", "resourceId", "scope"}  # no timestamp
    assert attacker["scope"].startswith(" ")  # as the documented example
    status, _, body = graph(sim, gtoken, "GET", "/v1.0/oauth2PermissionGrants",
                            query={"$filter": f"clientId eq '{EXPENSES_APP}' and consentType eq 'AllPrincipals'"})
    assert status == 200 and [g["principalId"] for g in body["value"]] == [None]
    sim.client.set_permissions(denied=["Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All"])
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}/oauth2PermissionGrants")
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"


def test_deleting_a_grant_answers_204_and_is_audited_as_the_apps_doing(sim, gtoken):
    status, _, body = graph(sim, gtoken, "DELETE", f"/v1.0/oauth2PermissionGrants/{ATTACKER_GRANT}")
    assert (status, body) == (204, None)
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/oauth2PermissionGrants/{ATTACKER_GRANT}")
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"
    assert graph(sim, gtoken, "DELETE", f"/v1.0/oauth2PermissionGrants/{ATTACKER_GRANT}")[0] == 404
    _, _, audits = graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits",
                         query={"$filter": "activityDisplayName eq 'Remove delegated permission grant'"})
    assert len(audits["value"]) == 1 and audits["value"][0]["initiatedBy"]["app"]["displayName"]
    consent = graph(sim, gtoken, "GET", "/v1.0/auditLogs/directoryAudits",
                    query={"$filter": f"initiatedBy/user/id eq '{ADELE_ID}' and activityDisplayName eq 'Consent to application'"})[2]
    target = consent["value"][0]["targetResources"][0]
    assert target["type"] == "ServicePrincipal"
    props = {p["displayName"]: json.loads(p["newValue"]) for p in target["modifiedProperties"]}
    assert f"[[Id: {ATTACKER_GRANT}, ClientId: {ATTACKER_APP}, PrincipalId: {ADELE_ID}" in props["ConsentAction.Permissions"]
    assert "ConsentType: Principal" in props["ConsentAction.Permissions"] and props["ConsentContext.IsAdminConsent"] == "False"
    sim.client.set_permissions(denied=["DelegatedPermissionGrant.ReadWrite.All"])
    status, _, _ = graph(sim, gtoken, "DELETE", "/v1.0/oauth2PermissionGrants/Tr4vEl0Gr4nT0AdElE0vAnCe0Cal0Read0UsErRd1")
    assert status == 403


def test_service_principals_answer_the_selected_properties(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/servicePrincipals/{ATTACKER_APP}",
                            query={"$select": "id,appId,displayName"})
    assert status == 200 and body["displayName"] == "Outlook Sync Assistant" and "publisherName" not in body
    assert graph(sim, gtoken, "GET", f"/v1.0/servicePrincipals/{ATTACKER_APP}", query={"$select": "secret"})[0] == 400
    assert graph(sim, gtoken, "GET", "/v1.0/servicePrincipals/00000000-0000-0000-0000-000000000000")[0] == 404


def test_app_role_assignments_include_group_rows_and_deletion_needs_its_permission(sim, gtoken):
    status, _, body = graph(sim, gtoken, "GET", f"/v1.0/users/{ADELE_ID}/appRoleAssignments")
    assert status == 200 and body["value"][0]["principalType"] == "User" and body["value"][0]["createdDateTime"]
    assignment = body["value"][0]["id"]
    status, _, body = graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE_ID}/appRoleAssignments/{assignment}")
    assert status == 403  # AppRoleAssignment.ReadWrite.All is not in the seed (REMOVE_APP_ROLE_ASSIGNMENTS is off)
    sim.client.set_permissions(granted=[*SIM_GRANTED, "AppRoleAssignment.ReadWrite.All"])
    assert graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE_ID}/appRoleAssignments/{assignment}")[0] == 204
    assert graph(sim, gtoken, "DELETE", f"/v1.0/users/{ADELE_ID}/appRoleAssignments/{assignment}")[0] == 404


def test_account_enabled_of_a_synced_user_is_refused(sim, gtoken):
    sim.client.set_permissions(granted=[*SIM_GRANTED, "User.EnableDisableAccount.All"])  # BLOCK_SIGN_IN deployments
    status, _, body = graph(sim, gtoken, "PATCH", "/v1.0/users/synced.user@contoso.onmicrosoft.com",
                            body={"accountEnabled": False})
    assert status == 400 and "on-premises mastered" in body["error"]["message"]
    assert graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADELE_ID}", body={"accountEnabled": False})[0] == 204
    assert sim.client.user_state(ADELE)["accountEnabled"] is False
    sim.client.set_permissions(denied=["User.EnableDisableAccount.All"])
    assert graph(sim, gtoken, "PATCH", f"/v1.0/users/{ADELE_ID}", body={"accountEnabled": True})[0] == 403


MFA_GROUP = "4889d933-f4ca-5590-b917-e07ec631c0b6"


def _members(sim, token) -> set[str]:
    status, _, body = graph(sim, token, "GET", f"/v1.0/groups/{MFA_GROUP}/members")
    assert status == 200
    return {m["id"] for m in body["value"]}


def test_a_group_takes_up_to_twenty_members_in_one_patch_and_refuses_the_whole_request_otherwise(sim, gtoken):
    users = sim.client.add_users(22, prefix="bind")
    ref = "https://graph.microsoft.com/v1.0/directoryObjects/{}".format
    before = _members(sim, gtoken)
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/groups/{MFA_GROUP}",
                            body={"members@odata.bind": [ref(u["id"]) for u in users[:21]]})
    assert status == 400 and body["error"]["code"] == "Request_BadRequest"  # 21 > 20
    assert _members(sim, gtoken) == before
    status, _, _ = graph(sim, gtoken, "PATCH", f"/v1.0/groups/{MFA_GROUP}",
                         body={"members@odata.bind": [ref(u["id"]) for u in users[:20]]})
    assert status == 204 and _members(sim, gtoken) == before | {u["id"] for u in users[:20]}
    # one of them already a member: the whole request is refused, the newcomer is not added either
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/groups/{MFA_GROUP}",
                            body={"members@odata.bind": [ref(users[0]["id"]), ref(users[21]["id"])]})
    assert status == 400 and "already exist" in body["error"]["message"]
    assert users[21]["id"] not in _members(sim, gtoken)
    sim.client.set_permissions(denied=["GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"])
    status, _, body = graph(sim, gtoken, "PATCH", f"/v1.0/groups/{MFA_GROUP}",
                            body={"members@odata.bind": [ref(users[21]["id"])]})
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"
