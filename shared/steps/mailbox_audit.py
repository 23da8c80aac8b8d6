"""mailbox-audit: make sure what the attacker does next is recorded.

Checks the three switches: the organisation's AuditDisabled (False means on), the
mailbox's AuditEnabled, and its AuditBypassEnabled association. Mailbox-level switches
are fixed; the organisation-wide switch is tenant configuration, so a responder does not
flip it: it is recorded as a finding for an administrator (with org auditing on, default
actions are audited even when the mailbox shows AuditEnabled False).
"""
from __future__ import annotations

from ..states import StepState
from .base import Call, Step, StepContext, StepResult


class MailboxAudit(Step):
    name = "mailbox-audit"
    calls = (
        Call("exo", "Get-OrganizationConfig", "Exchange.ManageAsApp"),
        Call("exo", "Get-Mailbox / Set-Mailbox -AuditEnabled", "Exchange.ManageAsApp"),
        Call("exo", "Get-/Set-MailboxAuditBypassAssociation", "Exchange.ManageAsApp"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        upn, exo = ctx.upn, ctx.exchange
        org = (await exo.invoke("Get-OrganizationConfig") or [{}])[0]
        mailbox = (await exo.invoke("Get-Mailbox", {"Identity": upn}) or [{}])[0]
        bypass = (await exo.invoke("Get-MailboxAuditBypassAssociation", {"Identity": upn}) or [{}])[0]
        found = {
            "org_audit_disabled": org.get("AuditDisabled"),
            "mailbox_audit_enabled": mailbox.get("AuditEnabled"),
            "audit_bypass_enabled": bypass.get("AuditBypassEnabled"),
            "audit_log_age_limit": mailbox.get("AuditLogAgeLimit"),
        }
        fixed, findings = [], []
        if found["mailbox_audit_enabled"] is not True:
            async def audit_on(_record: dict) -> bool:
                return (await exo.invoke("Get-Mailbox", {"Identity": upn}) or [{}])[0].get("AuditEnabled") is True

            await ctx.effect("audit-enable", lambda: exo.invoke("Set-Mailbox", {"Identity": upn, "AuditEnabled": True}),
                             description="turn mailbox auditing on (AuditEnabled true)", verify=audit_on, state_verified=True)
            fixed.append("AuditEnabled")
        if found["audit_bypass_enabled"] is True:
            async def bypass_off(_record: dict) -> bool:
                row = (await exo.invoke("Get-MailboxAuditBypassAssociation", {"Identity": upn}) or [{}])[0]
                return row.get("AuditBypassEnabled") is False

            await ctx.effect(
                "audit-bypass-off",
                lambda: exo.invoke("Set-MailboxAuditBypassAssociation", {"Identity": upn, "AuditBypassEnabled": False}),
                description="remove the mailbox audit bypass (AuditBypassEnabled false)",
                verify=bypass_off, state_verified=True,
            )
            fixed.append("AuditBypassEnabled")
        if found["org_audit_disabled"] is True:
            findings.append("organisation-wide mailbox auditing is OFF (AuditDisabled True): an Exchange "
                            "administrator should run Set-OrganizationConfig -AuditDisabled $false")
            ctx.log.warning("%s", findings[-1])
        verb = "would fix" if ctx.dry_run else "fixed"
        summary = f"{verb} {', '.join(fixed)}" if fixed else "auditing already on"
        if findings:
            summary += "; org auditing off (finding)"
        return StepResult(StepState.SUCCEEDED, summary, {"found": found, "fixed": fixed if not ctx.dry_run else [],
                                                 "would_fix": fixed if ctx.dry_run else [], "findings": findings})
