"""snapshot: the read-only "before" picture, taken before any change.

Attackers create and delete inbox rules before anyone looks, so this runs first. Each
section is stored as one row in the ``evidence`` table (size-bounded JSON). A section the
identity may not read (403) is recorded as unavailable with the permission to grant; a
throttled or failed read raises so the platform retries. The earliest risk signal found
here is saved on the incident: enforce-mfa removes methods registered after it.
"""
from __future__ import annotations

from typing import Any

from ..errors import PermanentError
from ..model import parse_timestamp
from .base import Call, Step, StepContext, StepResult

SECTIONS = ("user", "auth_methods", "inbox_rules", "exo_inbox_rules", "mailbox", "blocked_sender",
            "org_audit", "audit_bypass", "risky_user", "risk_detections")


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
    return min(times).isoformat().replace("+00:00", "Z")


class Snapshot(Step):
    name = "snapshot"
    mutates = False
    calls = (
        Call("graph", "GET /users/{id}?$select=...", "User.Read.All"),
        Call("graph", "GET /users/{id}/authentication/methods", "UserAuthenticationMethod.Read.All"),
        Call("graph", "GET /users/{id}/mailFolders/inbox/messageRules", "MailboxSettings.Read"),
        Call("graph", "GET /identityProtection/riskyUsers/{id}", "IdentityRiskyUser.Read.All"),
        Call("graph", "GET /identityProtection/riskDetections?$filter=userId eq '{id}'", "IdentityRiskEvent.Read.All"),
        Call("exo", "Get-InboxRule -IncludeHidden", "Exchange.ManageAsApp"),
        Call("exo", "Get-Mailbox", "Exchange.ManageAsApp"),
        Call("exo", "Get-BlockedSenderAddress", "Exchange.ManageAsApp"),
        Call("exo", "Get-OrganizationConfig", "Exchange.ManageAsApp"),
        Call("exo", "Get-MailboxAuditBypassAssociation", "Exchange.ManageAsApp"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        uid, upn = ctx.user_id, ctx.upn
        graph, exo = ctx.graph, ctx.exchange
        readers = {
            "user": lambda: graph.get_user(uid),
            "auth_methods": lambda: graph.list_auth_methods(uid),
            "inbox_rules": lambda: graph.list_message_rules(uid),
            "risky_user": lambda: graph.get_risky_user(uid),
            "risk_detections": lambda: graph.list_risk_detections(uid),
            "exo_inbox_rules": lambda: exo.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}),
            "mailbox": lambda: exo.invoke("Get-Mailbox", {"Identity": upn}),
            "blocked_sender": lambda: exo.invoke("Get-BlockedSenderAddress", {"SenderAddress": upn}),
            "org_audit": lambda: exo.invoke("Get-OrganizationConfig"),
            "audit_bypass": lambda: exo.invoke("Get-MailboxAuditBypassAssociation", {"Identity": upn}),
        }
        stored: dict[str, int] = dict(ctx.checkpoint.get("stored", {}))
        unavailable: dict[str, str] = dict(ctx.checkpoint.get("unavailable", {}))
        detections: list[dict[str, Any]] = []
        for section, read in readers.items():
            if section in stored and section != "risk_detections":
                continue  # stored by an earlier attempt; the "before" must not be re-read after changes
            try:
                data = await read()
            except PermanentError as exc:
                unavailable[section] = str(exc)[:300]
                ctx.log.warning("snapshot section %s unavailable: %s", section, exc)
                continue
            if section == "risk_detections":
                detections = data or []
            stored[section] = await ctx.deps.ledger.put_evidence(ctx.task.incident_id, section, data)
            await ctx.save(stored=stored, unavailable=unavailable)
        first_risk = first_risk_time(detections, ctx.incident.get("detected_at") or "")
        await ctx.deps.ledger.update_incident(ctx.task.incident_id, {"first_risk_at": first_risk})
        ctx.incident["first_risk_at"] = first_risk
        summary = f"{len(stored)} sections stored" + (f", {len(unavailable)} unavailable" if unavailable else "")
        return StepResult("succeeded", summary, {"sections": stored, "unavailable": unavailable, "first_risk_at": first_risk})
