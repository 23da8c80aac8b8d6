"""snapshot: the read-only "before" picture, taken before any change.

Attackers create and delete inbox rules before anyone looks, so this runs first. The
sections are read concurrently and stored as rows of the ``evidence`` table (size-bounded
JSON, one table transaction). A section the
identity may not read (403) is recorded as unavailable with the permission to grant; a
throttled or failed read raises so the platform retries. The earliest risk signal found
here (and the earliest risky sign-in) is saved on the incident: the cut-off (shared/cutoff.py).

The "before" picture of every foothold a later step may remove is here too: the mailbox's
FullAccess and SendAs entries, the SendAs and SendOnBehalf rights the user holds on other mailboxes,
the junk-mail configuration (trusted and blocked senders), the user's OAuth consent grants and app
role assignments. The audit logs the steps date them from are not read here (steps/audit_reads.py):
the directory audit quota (5 requests per 10 s per tenant) would delay containment in a storm.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from ..errors import PermanentError
from ..states import StepState
from ..timestamps import iso_exact, parse_timestamp
from ..validation import opath_quote
from .base import Call, Step, StepContext, StepResult


def first_risk_time(detections: list[dict[str, Any]], fallback: str) -> str:
    times = []
    for detection in detections:
        for field in ("activityDateTime", "detectedDateTime"):
            value = detection.get(field)
            if value:
                try:
                    times.append(parse_timestamp(value))
                except ValueError:
                    pass
                break
    if not times:
        return fallback
    return iso_exact(min(times))


class Snapshot(Step):
    name = "snapshot"
    mutates = False
    # The protection gate runs in the first step (this one, in the default playbook): its lookups
    # are declared here so that infra grants them.
    calls = (
        Call("graph", "GET /users/{id}?$select=...", "User.Read.All"),
        Call("graph", "POST /users/{id}/checkMemberGroups (gate: PROTECTED_GROUP_ID)", "GroupMember.Read.All"),
        Call("graph", "GET /users/{id}/transitiveMemberOf/microsoft.graph.directoryRole (gate)", "User.Read.All"),
        Call("graph", "GET /roleManagement/directory/roleEligibilityScheduleInstances?$filter=principalId eq '{id}' (gate)",
             "RoleEligibilitySchedule.Read.Directory"),
        Call("graph", "POST /users/{id}/revokeSignInSessions (held privileged user)", "User.RevokeSessions.All"),
        Call("graph", "GET /users/{id}/authentication/methods", "UserAuthenticationMethod.Read.All"),
        Call("graph", "GET /users/{id}/mailFolders/inbox/messageRules", "MailboxSettings.Read"),
        Call("graph", "GET /identityProtection/riskyUsers/{id}", "IdentityRiskyUser.Read.All"),
        Call("graph", "GET /identityProtection/riskDetections?$filter=userId eq '{id}'", "IdentityRiskEvent.Read.All"),
        Call("exo", "Get-InboxRule -IncludeHidden", "Exchange.ManageAsApp"),
        Call("exo", "Get-Mailbox", "Exchange.ManageAsApp"),
        Call("exo", "Get-BlockedSenderAddress", "Exchange.ManageAsApp"),
        Call("exo", "Get-OrganizationConfig", "Exchange.ManageAsApp"),
        Call("exo", "Get-MailboxAuditBypassAssociation", "Exchange.ManageAsApp"),
        Call("exo", "Get-MailboxPermission -Identity", "Exchange.ManageAsApp"),
        Call("exo", "Get-RecipientPermission -Identity or -Trustee", "Exchange.ManageAsApp"),
        Call("exo", "Get-Mailbox -Filter \"GrantSendOnBehalfTo -eq '<DN>'\"", "Exchange.ManageAsApp"),
        Call("exo", "Get-MailboxJunkEmailConfiguration", "Exchange.ManageAsApp"),
        Call("graph", "GET /users/{id}/oauth2PermissionGrants", "Directory.Read.All"),
        Call("graph", "GET /users/{id}/appRoleAssignments", "Directory.Read.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        uid, upn = ctx.user_id, ctx.upn
        graph, exo = ctx.graph, ctx.exchange
        resolved = ctx.resolved_user

        async def user() -> Any:
            # The runner just read this user (same $select) when it resolved the incident.
            return resolved if resolved is not None else await graph.get_user(uid)

        mailbox_read: list[asyncio.Task[Any]] = []

        def mailbox() -> Awaitable[Any]:
            # Read once: the section, and the DistinguishedName the SendOnBehalf lookup filters by.
            if not mailbox_read:
                mailbox_read.append(asyncio.ensure_future(exo.invoke("Get-Mailbox", {"Identity": upn})))
            return asyncio.shield(mailbox_read[0])

        async def send_on_behalf_held() -> Any:
            dn = ((await mailbox()) or [{}])[0].get("DistinguishedName")
            if not dn:
                raise PermanentError("Get-Mailbox gave no DistinguishedName to filter GrantSendOnBehalfTo by")
            return await exo.invoke("Get-Mailbox", {"Filter": f"GrantSendOnBehalfTo -eq {opath_quote(dn)}",
                                                    "ResultSize": "Unlimited"})

        readers = {
            "user": user,
            "auth_methods": lambda: graph.list_auth_methods(uid),
            "inbox_rules": lambda: graph.list_message_rules(uid),
            "risky_user": lambda: graph.get_risky_user(uid),
            "risk_detections": lambda: graph.list_risk_detections(uid),
            "exo_inbox_rules": lambda: exo.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}),
            "mailbox": mailbox,
            "blocked_sender": lambda: exo.invoke("Get-BlockedSenderAddress", {"SenderAddress": upn}),
            "org_audit": lambda: exo.invoke("Get-OrganizationConfig"),
            "audit_bypass": lambda: exo.invoke("Get-MailboxAuditBypassAssociation", {"Identity": upn}),
            # footholds, before any change (remove-delegates, revoke-app-consent, clean-mailbox)
            "mailbox_permissions": lambda: exo.invoke("Get-MailboxPermission", {"Identity": upn}),
            "send_as": lambda: exo.invoke("Get-RecipientPermission", {"Identity": upn, "AccessRights": "SendAs"}),
            "send_as_held": lambda: exo.invoke("Get-RecipientPermission", {"Trustee": upn, "AccessRights": "SendAs"}),
            "send_on_behalf_held": send_on_behalf_held,
            "junk_email": lambda: exo.invoke("Get-MailboxJunkEmailConfiguration", {"Identity": upn}),
            "consent_grants": lambda: graph.list_user_grants(uid),
            "app_role_assignments": lambda: graph.list_app_role_assignments(uid),
        }
        stored: dict[str, int] = dict(ctx.checkpoint.get("stored", {}))
        unavailable: dict[str, str] = dict(ctx.checkpoint.get("unavailable", {}))
        # Sections stored by an earlier attempt are not re-read: the "before" must not be
        # re-read after changes. risk_detections is always read (first_risk_at needs it).
        todo = [section for section in readers if section not in stored or section == "risk_detections"]
        # The reads are independent: run them together (the adapters' limiters pace them).
        results = await asyncio.gather(*(readers[section]() for section in todo), return_exceptions=True)
        fetched: dict[str, Any] = {}
        retry: BaseException | None = None
        for section, result in zip(todo, results):
            if isinstance(result, PermanentError):
                unavailable[section] = str(result)[:300]
                ctx.log.warning("snapshot section %s unavailable: %s", section, result)
            elif isinstance(result, BaseException):
                retry = retry or result
            else:
                fetched[section] = result
        if fetched:
            stored.update(await ctx.deps.ledger.put_evidence_many(ctx.task.incident_id, fetched))
        await ctx.save(stored=stored, unavailable=unavailable)
        if retry is not None:
            raise retry  # what was read is kept; the retry reads only what is missing
        detections = fetched.get("risk_detections") or []
        first_risk = first_risk_time(detections, ctx.incident.get("detected_at") or "")
        signins = [d for d in detections if str(d.get("activity") or "").lower() == "signin"]
        first_signin = first_risk_time(signins, first_risk)
        marks = {"first_risk_at": first_risk, "first_risky_signin_at": first_signin}
        await ctx.deps.ledger.update_incident(ctx.task.incident_id, marks)
        ctx.incident.update(marks)
        summary = f"{len(stored)} sections stored" + (f", {len(unavailable)} unavailable" if unavailable else "")
        return StepResult(StepState.SUCCEEDED, summary, {"sections": stored, "unavailable": unavailable, "first_risk_at": first_risk})
