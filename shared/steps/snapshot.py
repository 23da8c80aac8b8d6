"""snapshot: the read-only "before" picture, taken before any change.

Attackers create and delete inbox rules before anyone looks, so this runs first. The
sections are read concurrently and stored as rows of the ``evidence`` table (size-bounded
JSON, one table transaction). A section the
identity may not read (403) is recorded as unavailable with the permission to grant; a
throttled or failed read raises so the platform retries.

The "before" picture of every foothold a later step may remove is here too: the mailbox's
FullAccess and SendAs entries, the SendAs and SendOnBehalf rights the user holds on other mailboxes,
the junk-mail configuration (trusted and blocked senders), the user's OAuth consent grants and app
role assignments. The audit logs the steps date them from are not read here (steps/audit_reads.py):
the directory audit quota (5 requests per 10 s per tenant) would delay containment in a storm.

No Identity Protection call is awaited here: that service allows 1 request per second per tenant
for every app together, and this step is on the path from the alert to the password reset. The
step only *starts* the two reads (shared with the other incidents of the moment:
shared/tenant_calls.py) and goes on; their sections are recorded by ``record_risk_evidence`` right
after containment (reset-password), and each says how it was read:

- ``risky_user``: the risk as it was before the responder's first change: taken before the change
  (the read started here, or a shared read of the users at risk) when the record shows no change
  since the reset was issued, else from the user's riskyUser history (one entry per change, which
  later changes do not alter: read after, the data cannot change);
- ``risk_detections``: read after containment, as the data cannot change: a detection is the
  record of a past event (its type, times, address and level stay); only its riskState moves
  (the reset remediates it), and that field shows the state at the time of reading.

The earliest risk signal among the detections (and the earliest risky sign-in) is saved on the
incident then: the cut-off (shared/cutoff.py).
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Awaitable

from ..errors import PermanentError, TransientError
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
        # Identity Protection's reads start now, shared with the other incidents of the moment, and
        # nothing here waits for them: reset-password collects them after containment.
        ctx.deps.tenant_calls().prefetch_risk(uid, _alert_time(ctx))

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
        # re-read after changes.
        todo = [section for section in readers if section not in stored]
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
        if retry is not None:
            await ctx.save(stored=stored, unavailable=unavailable)
            raise retry  # what was read is kept; the retry reads only what is missing
        summary = f"{len(stored)} sections stored" + (f", {len(unavailable)} unavailable" if unavailable else "")
        return StepResult(StepState.SUCCEEDED, summary, {"sections": stored, "unavailable": unavailable})


def _earliest_change(ctx: StepContext) -> datetime | None:
    """When the responder first changed the user (the reset or the revoke was issued), if it did."""
    effects = ctx.checkpoint.get("effects", {})
    issued = [effects.get(name, {}).get("issued_at") for name in ("password-reset", "sessions-revoked")]
    times = [parse_timestamp(t) for t in issued if t]
    return min(times) if times else None


def _alert_time(ctx: StepContext) -> datetime:
    """When the signal that opened the incident was raised (else when the incident was opened): a read
    that started at or after it knows the risk that opened it. Never in the future."""
    times = [ctx.deps.clock()]
    for field in ("detected_at", "created_at"):
        try:
            times.append(parse_timestamp(ctx.incident.get(field) or ""))
        except ValueError:
            continue
    return min(times)


async def record_risk_evidence(ctx: StepContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Identity Protection sections of the evidence, recorded after containment (the module docstring
    says how each is read). Returns (what to put in the step's detail, the incident's cut-off marks).
    A section the identity may not read, or that Identity Protection would not answer after the
    adapter's retries (1 request/s for the whole tenant), is recorded as unavailable with the reason:
    the account is contained, and the rest of the playbook does not wait on that service (the cut-off
    then falls back to the alert's time, and says so)."""
    calls = ctx.deps.tenant_calls()
    uid = ctx.user_id
    fresh = _alert_time(ctx)
    before, detections = await asyncio.gather(calls.risk_before(uid, fresh, _earliest_change(ctx)),
                                              calls.detections(uid, fresh), return_exceptions=True)
    sections: dict[str, Any] = {}
    how: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for section, result in (("risky_user", before), ("risk_detections", detections)):
        if isinstance(result, (PermanentError, TransientError)):
            unavailable[section] = str(result)[:300]
            ctx.log.warning("evidence section %s unavailable: %s", section, result)
        elif isinstance(result, BaseException):
            raise result
        elif section == "risky_user":
            assert isinstance(result, tuple)
            sections[section], how[section] = result
        else:
            sections[section] = result
            how[section] = ("read after containment: detections are records of past events (their riskState "
                            "shows the state when read)")
    if sections:
        await ctx.deps.ledger.put_evidence_many(ctx.task.incident_id, sections)
    found = sections.get("risk_detections") or []
    first_risk = first_risk_time(found, ctx.incident.get("detected_at") or "")
    signins = [d for d in found if str(d.get("activity") or "").lower() == "signin"]
    marks = {"first_risk_at": first_risk, "first_risky_signin_at": first_risk_time(signins, first_risk)}
    return {"sections": how, "unavailable": unavailable, "first_risk_at": first_risk}, marks
