"""Issue 17 end to end through the real Graph and Exchange adapters against the simulator: mailbox
delegates (own and held), SendAs, SendOnBehalf, trusted senders, consent grants, app role
assignments, admin consent, the audit reads, the optional sign-in block, dry-run, redelivery,
refusals and unreadable sections. The ledger and queues are the hand-written fakes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.cli import render_incident
from shared.errors import TransientError
from shared.model import OperatorTask, StepTask
from shared.signin import OPERATOR_QUEUE, enable_sign_in, request_enable_sign_in
from tests.plugins.tenant_world import SEED, World

ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
HELPDESK = "helpdesk.sync@contoso.onmicrosoft.com"
SYNCED = "synced.user@contoso.onmicrosoft.com"
ATTACKER_GRANT = "UjwfJbPm2U2rN8XqQx3kLd1Yk5mQ6n7o8p9q0r1s2t3"
TRAVEL_GRANT = "Tr4vEl0Gr4nT0AdElE0vAnCe0Cal0Read0UsErRd1"
ASSIGNMENT = "lHz3Ws9l1kS0Yc1Vb2wQm3P6tA8xN2Rf"
HASH = "#Exchange.GenericHashTable"
SIM_GRANTED = json.loads((Path(__file__).resolve().parents[1] / "localdev" / "simulator" / "seed.json").read_text()
                         )["managedIdentity"]["permissions"]


def seed_user(seed: dict, upn: str) -> dict:
    return next(u for u in seed["users"] if u["userPrincipalName"] == upn)


async def drive_until(world: World, step: str) -> StepTask:
    """Run the playbook up to (not including) ``step``; return that step's task."""
    while True:
        pending = [(q, b) for q, b, _ in world.deps.queues.sent if q.startswith("step-")]
        world.deps.queues.sent = [m for m in world.deps.queues.sent if not m[0].startswith("step-")]
        assert pending, f"the playbook ended before {step}"
        for queue, body in pending:
            data = json.loads(body)
            task = StepTask(**{k: v for k, v in data.items() if k not in ("schema", "version")})
            if task.step == step:
                world.deps.queues.sent.append((queue, body, None))
                return task
            await world.runner.run(task)


async def block_world(make_world, policy: str, seed: dict | None = None) -> World:
    """BLOCK_SIGN_IN on, and the permission a deployment then grants (not in the default seed)."""
    world = await make_world(seed=seed, BLOCK_SIGN_IN=policy)
    world.sim.client.set_permissions(granted=[*SIM_GRANTED, "User.EnableDisableAccount.All"])
    return world


def mail(world: World) -> dict:
    return world.outbox()[-1]


# ---------------------------------------------------------------------- the demo user, whole playbook

async def test_adeles_attacker_delegates_are_removed_and_the_legitimate_one_kept(make_world):
    world = await make_world()
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "succeeded"
    state = world.sim.client.user_state(ADELE)
    assert [a["trustee_upn"] for a in state["mailbox_permissions"]] == [MEGAN]  # the legitimate delegate stays
    assert state["send_as"] == []
    detail = world.detail(incident_id, "remove-delegates")
    removed = {(e["kind"], e["trustee"]) for e in detail["removed"]}
    assert removed == {("full-access", HELPDESK), ("send-as", HELPDESK)}
    full = next(e for e in detail["removed"] if e["kind"] == "full-access")
    # recorded so it can be undone: what, where, who, rights, when, and the call that gives it back
    assert full["mailbox"] == ADELE and full["access_rights"] == ["FullAccess"] and full["granted_at"]
    assert full["undo"] == {"service": "exo", "cmdlet": "Add-MailboxPermission",
                            "parameters": {"Identity": ADELE, "User": HELPDESK, "AccessRights": ["FullAccess"],
                                           "InheritanceType": "All"}}
    assert [e["trustee"] for e in detail["kept"]] == [MEGAN] and detail["untouched_system_entries"] > 0
    removal = world.sim.client.requests(service="exo", cmdlet="Remove-MailboxPermission")[0]["body"]["CmdletInput"]["Parameters"]
    assert removal == {"Identity": ADELE, "User": HELPDESK, "AccessRights": ["FullAccess"], "InheritanceType": "All",
                       "Confirm": False}
    # the "before" picture of every foothold is in the evidence, taken before any change
    evidence = await world.ledger.list_evidence(incident_id)
    assert HELPDESK in {r["User"] for r in evidence["mailbox_permissions"]}
    assert HELPDESK in {r["Trustee"] for r in evidence["send_as"]}
    assert ATTACKER_GRANT in {g["id"] for g in evidence["consent_grants"]}
    assert "secure-docs-share.example" in evidence["junk_email"][0]["TrustedSendersAndDomains"]
    assert evidence["app_role_assignments"][0]["id"] == ASSIGNMENT
    # the SOC mail and `responder status` list what was removed, kept and left for review
    text = mail(world)["body"]["content"]
    assert f"removed FullAccess of {HELPDESK} on {ADELE}" in text and f"kept FullAccess of {MEGAN}" in text
    assert "app role assignment to 'Outlook Sync Assistant'" in text
    rendered = render_incident(world.view(incident_id))
    assert f"removed SendAs of {HELPDESK}" in rendered and "for review:" in rendered
    assert world.ledger.step_state(incident_id, "unblock-sender") == "succeeded"


async def test_the_attackers_consent_grant_is_removed_with_app_scopes_and_consent_time(make_world):
    world = await make_world()
    incident_id = await world.open(ADELE)
    await world.drive()
    grants = {g["id"] for g in world.sim.client.user_state(ADELE)["oauth2_grants"]}
    assert grants == {TRAVEL_GRANT}  # the attacker's app lost its grant; the older legitimate one stays
    detail = world.detail(incident_id, "revoke-app-consent")
    (removed,) = detail["removed"]
    assert removed["client_app"]["displayName"] == "Outlook Sync Assistant"
    assert removed["resource_app"]["displayName"] == "Microsoft Graph"
    assert removed["scopes"] == ["offline_access", "Mail.ReadWrite", "Mail.Send", "MailboxSettings.ReadWrite", "User.Read"]
    assert removed["consented_at"] and removed["dated_by"].startswith("directory audit")
    assert removed["undo"]["body"] == {"clientId": removed["clientId"], "consentType": "Principal", "principalId": ADELE_ID,
                                       "resourceId": removed["resourceId"], "scope": removed["scope"]}
    assert [e["id"] for e in detail["kept"]] == [TRAVEL_GRANT]
    # the app role assignment is only listed (REMOVE_APP_ROLE_ASSIGNMENTS defaults to false)
    assert [e["id"] for e in detail["review"]] == [ASSIGNMENT]
    assert world.sim.client.user_state(ADELE)["app_role_assignments"][0]["id"] == ASSIGNMENT
    assert world.sim.client.requests(service="graph", method="DELETE", path_contains="appRoleAssignments") == []


async def test_admin_consent_is_reported_and_never_touched(make_world):
    seed = copy.deepcopy(SEED)
    seed["oauth2PermissionGrants"].append({"id": "AdMiNcOnSeNt0OuTlOoKsYnC0AlLpRiNcIpAlS01", "client": "Outlook Sync Assistant",
                                           "resource": "Microsoft Graph", "scope": "User.Read Mail.Read",
                                           "consentedAt": "@now-10d", "consentedBy": "admin"})
    world = await make_world(seed=seed)
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "revoke-app-consent")
    assert [a["id"] for a in detail["admin_consents"]] == ["AdMiNcOnSeNt0OuTlOoKsYnC0AlLpRiNcIpAlS01"]
    grants = {g["id"] for g in world.sim.client.state(users=False)["oauth2_grants"]}
    assert "AdMiNcOnSeNt0OuTlOoKsYnC0AlLpRiNcIpAlS01" in grants and ATTACKER_GRANT not in grants
    assert "admin consent (AllPrincipals) of app 'Outlook Sync Assistant'" in mail(world)["body"]["content"]
    assert "ACTION REQUIRED" in mail(world)["subject"]


async def test_app_role_assignments_are_removed_only_with_the_setting_and_its_permission(make_world):
    world = await make_world(REMOVE_APP_ROLE_ASSIGNMENTS="true")
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "revoke-app-consent")
    assert [e["id"] for e in detail["not_removed"]] == [ASSIGNMENT] and "403" in detail["not_removed"][0]["error"]
    assert world.ledger.step_state(incident_id, "unblock-sender") == "skipped"  # an access path is still open
    assert "NOT REMOVED app role assignment" in mail(world)["body"]["content"]

    world = await make_world(seed=copy.deepcopy(SEED), REMOVE_APP_ROLE_ASSIGNMENTS="true")  # the tenant as seeded again
    world.sim.client.set_permissions(granted=[*SIM_GRANTED, "AppRoleAssignment.ReadWrite.All"])
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "revoke-app-consent")
    assert {e["id"] for e in detail["removed"]} == {ATTACKER_GRANT, ASSIGNMENT}
    assert world.sim.client.user_state(ADELE)["app_role_assignments"] == []
    assert world.ledger.step_state(incident_id, "unblock-sender") == "succeeded"


# ---------------------------------------------------------------------- rights on other mailboxes, SendOnBehalf

async def test_rights_the_user_holds_on_other_mailboxes_are_found_and_removed(make_world):
    seed = copy.deepcopy(SEED)
    seed_user(seed, HELPDESK)["sendAs"] = [{"trustee": ADELE}]  # old, no audit record: listed for review
    world = await make_world(seed=seed)
    exo = world.deps.exchange
    # during the compromise Adele was given rights on Megan's mailbox (audited now: after the cut-off)
    await exo.invoke("Add-MailboxPermission", {"Identity": MEGAN, "User": ADELE, "AccessRights": ["FullAccess"],
                                               "InheritanceType": "All"})
    await exo.invoke("Add-RecipientPermission", {"Identity": MEGAN, "Trustee": ADELE, "AccessRights": ["SendAs"],
                                                 "Confirm": False})
    await exo.invoke("Set-Mailbox", {"Identity": MEGAN, "GrantSendOnBehalfTo": {"@odata.type": HASH, "Add": ADELE}})
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "remove-delegates")
    held = {(e["kind"], e["mailbox"].lower()) for e in detail["removed"] if e["scope"] == "held"}
    assert held == {("full-access", MEGAN), ("send-as", "megan.bowen"), ("send-on-behalf", MEGAN)}
    megan = world.sim.client.user_state(MEGAN)
    assert megan["mailbox_permissions"] == [] and megan["send_as"] == [] and megan["send_on_behalf"] == []
    review = [(e["kind"], e["mailbox"]) for e in detail["review"]]
    assert review == [("send-as", "helpdesk.sync")]
    assert world.sim.client.user_state(HELPDESK)["send_as"] == [ADELE]
    assert any("reverse lookup" in note for note in detail["notes"])


async def test_send_on_behalf_is_removed_with_the_hashtable_form(make_world):
    seed = copy.deepcopy(SEED)
    seed_user(seed, ADELE)["sendOnBehalf"] = [{"trustee": MEGAN, "grantedAt": "@now-30d"},
                                              {"trustee": HELPDESK, "grantedAt": "@now-150m"}]
    world = await make_world(seed=seed)
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.sim.client.user_state(ADELE)["send_on_behalf"] == [MEGAN]
    detail = world.detail(incident_id, "remove-delegates")
    (entry,) = [e for e in detail["removed"] if e["kind"] == "send-on-behalf"]
    assert entry["trustee"] == "3b8e6f14-2c7d-5e9a-b0f1-6a2d4c8e0f13" and entry["trustee_upn"] == HELPDESK
    sets = [r["body"]["CmdletInput"]["Parameters"] for r in world.sim.client.requests(service="exo", cmdlet="Set-Mailbox")
            if "GrantSendOnBehalfTo" in r["body"]["CmdletInput"]["Parameters"]]
    assert sets == [{"Identity": ADELE, "GrantSendOnBehalfTo": {"@odata.type": HASH, "Remove": HELPDESK}}]
    assert entry["undo"]["parameters"]["GrantSendOnBehalfTo"] == {"@odata.type": HASH, "Add": HELPDESK}


# ---------------------------------------------------------------------- trusted senders

async def test_a_trusted_sender_added_after_the_cutoff_is_removed_and_the_others_kept(make_world):
    seed = copy.deepcopy(SEED)
    seed_user(seed, ADELE)["junkEmail"]["TrustedSendersAndDomains"].append(
        {"value": "fabrikam-billing.example", "addedAt": "@now-100m", "via": "outlook"})
    world = await make_world(seed=seed)
    incident_id = await world.open(ADELE)
    await world.drive()
    junk = world.sim.client.user_state(ADELE)["junk_email"]["TrustedSendersAndDomains"]
    assert junk == ["northwindtraders.com", "fabrikam-billing.example"]
    trusted = world.detail(incident_id, "clean-mailbox")["trusted_senders"]
    assert [e["entry"] for e in trusted["removed"]] == ["secure-docs-share.example"]
    assert [e["entry"] for e in trusted["kept"]] == ["northwindtraders.com"]
    assert [e["entry"] for e in trusted["review"]] == ["fabrikam-billing.example"]  # Outlook leaves no audit record
    assert trusted["before"]["TrustedSendersAndDomains"] == ["northwindtraders.com", "secure-docs-share.example",
                                                            "fabrikam-billing.example"]
    assert "trusted sender 'fabrikam-billing.example'" in mail(world)["body"]["content"]


# ---------------------------------------------------------------------- the audit reads

async def test_each_audit_log_is_read_once_per_incident(make_world):
    world = await make_world()
    world.sim.client.clear_requests()
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "succeeded"
    # enforce-mfa dated the undated methods and revoke-app-consent the consents from the same read
    assert len(world.sim.client.requests(service="graph", path_contains="/auditLogs/directoryAudits")) == 1
    # clean-mailbox dated the trusted senders and remove-delegates the rights from the same search
    assert len(world.sim.client.requests(service="exo", cmdlet="Search-UnifiedAuditLog")) == 1
    evidence = await world.ledger.list_evidence(incident_id)
    assert evidence["directory_audits"]["events"] and evidence["exchange_audit"]["events"]
    assert world.detail(incident_id, "enforce-mfa")["removed_methods"]


async def test_the_combined_audit_filter_falls_back_to_two_reads_when_refused(make_world):
    world = await make_world()
    world.sim.client.fault_once(service="graph", method="GET", path_contains="directoryAudits", status=400, count=1,
                                message="Invalid filter clause")
    world.sim.client.clear_requests()
    incident_id = await world.open(ADELE)
    await world.drive()
    reads = world.sim.client.requests(service="graph", path_contains="/auditLogs/directoryAudits")
    assert [r["status"] for r in reads] == [400, 200, 200]
    filters = [r["query"]["$filter"] for r in reads]
    assert " or " in filters[0] and "targetResources/any" in filters[1] and filters[2].startswith("initiatedBy/user/id")
    assert world.detail(incident_id, "revoke-app-consent")["removed"][0]["id"] == ATTACKER_GRANT
    assert world.detail(incident_id, "enforce-mfa")["removed_methods"]


async def test_an_unreadable_unified_audit_log_lists_every_delegate_for_review(make_world):
    world = await make_world()
    world.sim.client.fault_once(service="exo", cmdlet="Search-UnifiedAuditLog", status=400, count=1,
                                message="The unified audit log search is not available")
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "remove-delegates")
    assert detail["removed"] == [] and {e["trustee"] for e in detail["review"]} == {HELPDESK, MEGAN}
    assert "unified audit log" in detail["unverified"]
    assert world.sim.client.requests(service="exo", cmdlet="Remove-MailboxPermission") == []
    assert world.ledger.step_state(incident_id, "unblock-sender") == "skipped"


# ---------------------------------------------------------------------- refusals, dry-run, redelivery

async def test_a_403_on_a_read_makes_the_section_unavailable_and_unblock_sender_waits(make_world):
    world = await make_world()
    # Directory.Read.All (the read the app is granted) and the write permission that also lists grants
    world.sim.client.set_permissions(denied=["Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All"])
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "succeeded"  # containment did not fail
    assert "consent_grants" in world.detail(incident_id, "snapshot")["unavailable"]
    detail = world.detail(incident_id, "revoke-app-consent")
    assert set(detail["unavailable"]) == {"consent_grants", "app_role_assignments"}
    assert "Directory.Read.All" in detail["unavailable"]["consent_grants"]
    assert world.ledger.step_state(incident_id, "unblock-sender") == "skipped"
    assert "revoke-app-consent could not read" in world.detail(incident_id, "unblock-sender")["reason"]
    assert "revoke-app-consent could not read consent_grants" in mail(world)["body"]["content"]


async def test_a_refused_removal_is_recorded_and_keeps_the_sender_blocked(make_world):
    world = await make_world()
    world.sim.client.set_permissions(denied=["DelegatedPermissionGrant.ReadWrite.All"])
    incident_id = await world.open(ADELE)
    await world.drive()
    detail = world.detail(incident_id, "revoke-app-consent")
    assert [e["id"] for e in detail["not_removed"]] == [ATTACKER_GRANT] and detail["open_paths"] == 1
    assert ATTACKER_GRANT in {g["id"] for g in world.sim.client.user_state(ADELE)["oauth2_grants"]}
    assert world.sim.client.user_state(ADELE)["blocked"] is True
    assert "NOT REMOVED consent grant of app 'Outlook Sync Assistant'" in mail(world)["body"]["content"]


async def test_dry_run_records_what_would_be_removed_and_changes_nothing(make_world):
    world = await make_world(RESPONDER_MODE="dry-run")
    incident_id = await world.open(ADELE)
    mark = len(world.sim.client.mutations())
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "dry-run"
    assert world.sim.client.mutations()[mark:] == []
    delegates = world.detail(incident_id, "remove-delegates")
    assert {e["trustee"] for e in delegates["would_remove"]} == {HELPDESK} and delegates["removed"] == []
    assert any("remove FullAccess of helpdesk.sync" in w for w in delegates["would"])
    consent = world.detail(incident_id, "revoke-app-consent")
    assert [e["id"] for e in consent["would_remove"]] == [ATTACKER_GRANT]
    assert [e["entry"] for e in world.detail(incident_id, "clean-mailbox")["trusted_senders"]["would_remove"]] == \
        ["secure-docs-share.example"]
    assert world.ledger.step_state(incident_id, "remove-delegates") == "planned"


async def test_a_crash_after_a_removal_landed_does_not_remove_it_twice(make_world):
    world = await make_world()
    incident_id = await world.open(ADELE)
    task = await drive_until(world, "remove-delegates")
    # the removal is applied, then the answer is lost: the step reads the mailbox before repeating it
    world.sim.client.fault_once(service="exo", cmdlet="Remove-MailboxPermission", status=503, count=1,
                                retry_after="0.01", after_effect=True)
    world.sim.client.clear_requests()
    assert await world.runner.run(task) == "ran"
    removals = world.sim.client.requests(service="exo", cmdlet="Remove-MailboxPermission")
    assert [r["status"] for r in removals] == [503]
    assert world.ledger.step_state(incident_id, "remove-delegates") == "succeeded"
    assert {e["kind"] for e in world.detail(incident_id, "remove-delegates")["removed"]} == {"full-access", "send-as"}
    # a redelivered message for the finished step changes nothing
    mark = len(world.sim.client.mutations())
    world.ledger.incidents[incident_id]["state"] = "running"
    assert await world.runner.run(task) == "done"
    assert world.sim.client.mutations()[mark:] == []


async def test_a_retry_executes_the_saved_plan_and_keeps_its_record(make_world):
    world = await make_world()
    incident_id = await world.open(ADELE)
    task = await drive_until(world, "revoke-app-consent")
    # the first attempt deletes the grant, the answer is lost and the check cannot be made either:
    # the step is released for the platform to retry
    world.sim.client.fault_once(service="graph", method="DELETE", path_contains="oauth2PermissionGrants", status=503,
                                count=1, retry_after="0.01", after_effect=True)
    world.sim.client.fault_once(service="graph", method="GET", path_contains=f"oauth2PermissionGrants/{ATTACKER_GRANT}",
                                status=503, count=50, retry_after="0.01")
    with pytest.raises(TransientError):
        await world.runner.run(task)
    assert world.ledger.step_state(incident_id, "revoke-app-consent") == "retrying"
    world.sim.client.clear_faults()
    assert ATTACKER_GRANT not in {g["id"] for g in world.sim.client.user_state(ADELE)["oauth2_grants"]}
    assert await world.runner.run(task) == "ran"
    detail = world.detail(incident_id, "revoke-app-consent")
    # the grant is gone from the tenant, yet the record of what it was survived (the plan was checkpointed)
    assert [e["id"] for e in detail["removed"]] == [ATTACKER_GRANT]
    assert detail["removed"][0]["client_app"]["displayName"] == "Outlook Sync Assistant"
    assert len(world.sim.client.requests(service="graph", method="DELETE", path_contains="oauth2PermissionGrants")) == 1


# ---------------------------------------------------------------------- the optional sign-in block

async def test_sign_in_is_blocked_first_and_re_enabled_at_close(make_world):
    world = await block_world(make_world, "until-close")
    incident_id = await world.open(ADELE)
    await world.drive()
    actions = [m["action"] for m in world.sim.client.mutations() if m.get("user") == ADELE_ID]
    assert actions.index("account_enabled") < actions.index("password_reset")  # early: the first change
    enabled = [m["details"]["accountEnabled"] for m in world.sim.client.mutations() if m["action"] == "account_enabled"]
    assert enabled == [False, True]
    assert world.sim.client.user_state(ADELE)["accountEnabled"] is True
    block = world.detail(incident_id, "reset-password")["sign_in"]
    assert block["blocked"] is True and block["before"] == {"accountEnabled": True}
    assert block["undo"]["body"] == {"accountEnabled": True}
    assert world.detail(incident_id, "close")["sign_in"]["restored"] is True
    assert world.ledger.incidents[incident_id]["sign_in"] == "restored"
    text = mail(world)["body"]["content"]
    assert "sign-in blocked (accountEnabled false)" in text and "sign-in re-enabled" in text


async def test_until_approved_keeps_sign_in_blocked_until_the_operator_enables_it(make_world):
    world = await block_world(make_world, "until-approved")
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "succeeded"
    assert world.sim.client.user_state(ADELE)["accountEnabled"] is False
    assert f"responder enable-sign-in {incident_id}" in mail(world)["body"]["content"]
    assert "ACTION REQUIRED" in mail(world)["subject"]
    view = world.view(incident_id)
    assert f"responder enable-sign-in {incident_id}" in view["sign_in_action"]
    assert "ACTION REQUIRED" in render_incident(view)
    # the operator asks (storage only: the CLI has no Graph), the worker does it
    asked = await request_enable_sign_in(world.deps, incident_id, requested_by="alice")
    assert asked.outcome == "queued"
    (body,) = world.deps.queues.on(OPERATOR_QUEUE)
    task = OperatorTask.from_json(json.dumps(body))
    assert (task.action, task.requested_by) == ("enable-sign-in", "alice")
    done = await enable_sign_in(world.deps, task)
    assert done.outcome == "enabled" and world.sim.client.user_state(ADELE)["accountEnabled"] is True
    incident = world.ledger.incidents[incident_id]
    assert (incident["sign_in"], incident["sign_in_restored_by"]) == ("restored", "alice")
    assert (await enable_sign_in(world.deps, task)).outcome == "not-blocked"  # a redelivery does nothing
    assert (await request_enable_sign_in(world.deps, incident_id)).outcome == "not-blocked"
    assert (await request_enable_sign_in(world.deps, "inc-0000000000000000000")).outcome == "not-found"


async def test_a_synced_user_is_never_blocked_and_the_incident_says_so(make_world):
    world = await block_world(make_world, "until-close")
    incident_id = await world.open(SYNCED)
    await world.drive()
    assert world.sim.client.requests(service="graph", method="PATCH", path_contains="users") and not [
        r for r in world.sim.client.requests(service="graph", method="PATCH")
        if "accountEnabled" in json.dumps(r.get("body"))]
    incident = world.ledger.incidents[incident_id]
    assert incident["sign_in"] == "not-blocked" and "on-premises" in incident["sign_in_note"]
    assert "sign-in NOT blocked" in mail(world)["body"]["content"]


async def test_a_refused_sign_in_block_does_not_stop_containment(make_world):
    world = await make_world(BLOCK_SIGN_IN="until-close")
    world.sim.client.set_permissions(denied=["User.EnableDisableAccount.All"])
    incident_id = await world.open(ADELE)
    await world.drive()
    assert world.ledger.incidents[incident_id]["state"] == "succeeded"
    block = world.detail(incident_id, "reset-password")["sign_in"]
    assert block["blocked"] is False and "User.EnableDisableAccount.All" in block["error"]
    assert world.sim.client.user_state(ADELE)["password_changes"] == 1
    assert "close" in world.detail(incident_id, "close")["summary"] or world.detail(incident_id, "close").get("sign_in") is None


async def test_an_account_disabled_before_the_incident_is_never_re_enabled(make_world):
    seed = copy.deepcopy(SEED)
    seed_user(seed, ADELE)["accountEnabled"] = False
    world = await block_world(make_world, "until-close", seed=seed)
    incident_id = await world.open(ADELE)
    await world.drive()
    assert [m for m in world.sim.client.mutations() if m["action"] == "account_enabled"] == []
    assert world.sim.client.user_state(ADELE)["accountEnabled"] is False
    assert world.ledger.incidents[incident_id]["sign_in"] == "was-disabled"


async def test_a_crash_after_the_block_landed_is_not_taken_for_a_disabled_account(make_world):
    world = await block_world(make_world, "until-close")
    incident_id = await world.open(ADELE)
    task = await drive_until(world, "reset-password")
    # the block lands, the answer is lost; the step verifies it instead of reading "already disabled"
    world.sim.client.fault_once(service="graph", method="PATCH", path_contains="/users/", status=503, count=1,
                                retry_after="0.01", after_effect=True)
    assert await world.runner.run(task) == "ran"
    assert world.detail(incident_id, "reset-password")["sign_in"]["blocked"] is True
    await world.drive()
    assert world.sim.client.user_state(ADELE)["accountEnabled"] is True  # re-enabled at close
