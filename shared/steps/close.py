"""close: settle the user's risk in Identity Protection, record it, then mail the SOC a summary, done.

Containment (reset-password) calls no Identity Protection API: that service allows 1 request per
second per tenant for every app together. Here, after every other step, the user is confirmed
compromised (feedback to Identity Protection, and the record that the responder acted) and — when
the responder reset the password, which remediated the risk — the risk is dismissed again, so the
responder's own confirmation never leaves a remediated user blocked by a user-risk policy: "dismiss
after remediation". The state that results is read and recorded. A user whose password could not be
reset (synced, federated) stays confirmed compromised until the on-premises reset, and the mail
says so. The incidents that close together share these calls (shared/tenant_calls.py): one
confirmCompromised and one dismiss for up to 60 users, one read of the users whose risk just
changed. Identity Protection failing (licence, permission, throttling) is recorded, never a reason
not to mail the SOC.

With BLOCK_SIGN_IN=until-close the sign-in block reset-password set is lifted here, before the
mail (verified; a refusal is mailed, never a reason not to close); with until-approved the mail
says who must lift it and how. The mail lists every foothold removed (what it was, since when),
the ones kept (dated before the compromise) and those a person must review.

The summary is built from the ledger, which never holds a password, so the mail cannot carry
one; what needs a person (ACTION REQUIRED, methods kept for review) comes first. With no
SOC_MAILBOX / NOTIFY_SENDER configured the mail is skipped and that is recorded. The mail is the
one effect that cannot be verified afterwards: a crash between sending and recording it can, at
worst, send the SOC a second copy.
"""
from __future__ import annotations

import json
from typing import Any

from .. import footholds
from ..console.links import incident_link
from ..errors import PermanentError, TransientError
from ..ledger_protocol import load_json
from ..playbook import incident_order
from ..securescore.service import latest_score
from ..states import StepState
from ..timestamps import iso
from .base import Call, Step, StepContext, StepResult
from .signin_block import restore_sign_in

AT_RISK = ("atRisk", "confirmedCompromised")


def review_lines(step_rows: list[dict[str, Any]]) -> list[str]:
    """What a person must look at, from the step details: methods kept, client-side rules removed,
    footholds not removed or not datable, admin consents, a sign-in block an operator must lift."""
    rows = {r["RowKey"]: r for r in step_rows}
    lines = []
    mfa = load_json(rows.get("enforce-mfa", {}).get("detail"), {}) or {}
    for method in mfa.get("kept_for_review") or []:
        lines.append(f"  - {method.get('type')} {method.get('id')} {method.get('name') or ''}".rstrip()
                     + f": {method.get('reason')}")
    mailbox = load_json(rows.get("clean-mailbox", {}).get("detail"), {}) or {}
    client = mailbox.get("client_side_rules") or {}
    if client.get("removed"):
        lines.append("  - Outlook client-side rules in the mailbox were removed by Exchange when rules were disabled"
                     + (f" ({'; '.join(client.get('warnings') or [])})" if client.get("warnings") else "")
                     + ": ask the user to recreate the ones they need")
    lines += footholds.review_lines(rows)
    return lines


def summary_text(incident: dict[str, Any], step_rows: list[dict[str, Any]], link: str = "") -> str:
    rows = {r["RowKey"]: r for r in step_rows}
    lines = [f"Breach Responder incident {incident['incident_id']}"]
    if incident.get("action_required"):
        lines.append(incident["action_required"])
    lines += [
        f"User: {incident.get('user_principal_name') or incident.get('user_id')} ({incident.get('user_id')})",
        f"Source: {incident.get('source')}  risk: {incident.get('risk_level')}  alerts: {incident.get('alert_ids') or '-'}",
        f"Reason: {incident.get('reason') or '-'}",
    ]
    review = review_lines(step_rows)
    if review:
        lines += ["", "For review (kept or removed, each with its id):", *review]
    removed = footholds.removed_lines(rows)
    if removed:
        lines += ["", "Removed (each recorded with what it was, so it can be undone):", *removed]
    kept = footholds.kept_lines(rows)
    if kept:
        lines += ["", "Kept (dated before the compromise):", *kept]
    if incident.get("risk_error"):
        lines += ["", f"Identity Protection: {incident['risk_error']}"]
    if incident.get("final_risk_state"):
        lines.append(f"Final user risk: {incident['final_risk_state']}")
    lines += ["", "Steps:"]
    for name in incident_order(incident, ()):
        row = rows.get(name, {})
        detail = load_json(row.get("detail"), {}) or {}
        note = detail.get("summary") or row.get("error") or ""
        lines.append(f"  - {name}: {row.get('state', 'this step' if name == 'close' else 'not run')} {('- ' + note) if note else ''}".rstrip())
    recovery = load_json(rows.get("recovery-pass", {}).get("detail"), {}) or {}
    if recovery.get("recovery") == "issued":
        lines += ["", f"A one-time Temporary Access Pass was mailed to {recovery.get('to')} ({recovery.get('via')}); "
                      f"it expires at {recovery.get('expires_at')}. The pass itself is not in this mail."]
    else:
        lines += [
            "",
            "The user's new temporary password is NOT included: issue a Temporary Access Pass or",
            "reset it with the user through your help desk process.",
        ]
    if link:
        lines += ["", f"Console: {link}"]
    return "\n".join(lines)


class Close(Step):
    name = "close"
    calls = (
        Call("graph", "POST /identityProtection/riskyUsers/confirmCompromised", "IdentityRiskyUser.ReadWrite.All"),
        Call("graph", "POST /identityProtection/riskyUsers/dismiss", "IdentityRiskyUser.ReadWrite.All"),
        Call("graph", "GET /identityProtection/riskyUsers/{id} (final state)", "IdentityRiskyUser.Read.All"),
        Call("graph", "GET /identityProtection/riskyUsers?$filter=riskLastUpdatedDateTime gt {t} (final state, shared)",
             "IdentityRiskyUser.Read.All"),
        Call("graph", "POST /users/{sender}/sendMail", "Mail.Send"),
        Call("graph", "PATCH /users/{id} accountEnabled=true (BLOCK_SIGN_IN=until-close)", "User.EnableDisableAccount.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        settings, uid = ctx.settings, ctx.user_id
        rows = await ctx.deps.ledger.list_steps(ctx.task.incident_id)
        detail: dict[str, Any] = await self._settle_risk(ctx, rows)
        reset = load_json({r["RowKey"]: r for r in rows}.get("reset-password", {}).get("detail"), {}) or {}
        sign_in = await restore_sign_in(ctx, reset.get("sign_in") or {})
        if sign_in is not None:
            detail["sign_in"] = sign_in
            # The mail is built from the ledger rows: this step's own row is written after it.
            rows = [*rows, {"RowKey": "close", "detail": json.dumps({"sign_in": sign_in})}]
        if detail.get("risk_error"):
            ctx.incident["risk_error"] = "; ".join(filter(None, (ctx.incident.get("risk_error"), detail["risk_error"])))
        updates = {k: ctx.incident[k] for k in ("risk_error", "risk_confirmed_at") if ctx.incident.get(k)}
        if detail.get("final_risk_state"):
            updates["final_risk_state"] = ctx.incident["final_risk_state"] = detail["final_risk_state"]
        if settings.soc_mailbox and settings.notify_sender:
            text = summary_text(ctx.incident, rows, incident_link(settings, ctx.task.incident_id))
            who = ctx.incident.get("user_principal_name") or uid
            needs_person = bool(ctx.incident.get("action_required") or review_lines(rows) or ctx.incident.get("risk_error"))
            if ctx.incident.get("action_required"):
                subject = f"[Breach Responder] ON-PREMISES PASSWORD RESET REQUIRED: {who} ({ctx.task.incident_id})"
            elif needs_person:
                subject = f"[Breach Responder] ACTION REQUIRED: {who} contained, items to review ({ctx.task.incident_id})"
            else:
                subject = f"[Breach Responder] {who} contained ({ctx.task.incident_id})"
            await ctx.effect("notify-soc", lambda: ctx.graph.send_mail(settings.notify_sender, settings.soc_mailbox, subject, text),
                             description=f"mail the summary to {settings.soc_mailbox}")
            detail["notified"] = settings.soc_mailbox
        else:
            detail["notified"] = None
            detail["note"] = "SOC_MAILBOX or NOTIFY_SENDER not set: no summary mail"
        detail["secure_score"] = await latest_score(ctx.deps.scores)
        summary = f"final risk {detail.get('final_risk_state') or 'unknown'}" + (
            f"; summary mailed to {settings.soc_mailbox}" if detail["notified"] else "")
        return StepResult(StepState.SUCCEEDED, summary, detail, updates)

    @staticmethod
    async def _settle_risk(ctx: StepContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Confirm compromised, dismiss after the responder's own remediation, read what results;
        errors are recorded, not raised (the SOC mail goes out regardless)."""
        uid = ctx.user_id
        calls = ctx.deps.tenant_calls()
        reset = load_json({r["RowKey"]: r for r in rows}.get("reset-password", {}).get("detail"), {}) or {}
        we_reset = reset.get("password_reset") in ("done", "already done")
        detail: dict[str, Any] = {}
        calls.closing(uid)

        # A half-finished confirm / dismiss is verified through the shared read of the risk as it is now.
        async def confirmed(_record: dict) -> bool:
            now = await calls.risk_now(uid, ctx.deps.clock())
            return (now or {}).get("riskState") == "confirmedCompromised"

        async def dismissed(_record: dict) -> bool:
            now = await calls.risk_now(uid, ctx.deps.clock())
            return (now or {}).get("riskState") not in AT_RISK

        try:
            ran = await ctx.effect("risk-confirmed", lambda: calls.confirm.submit(uid),
                                   description="confirm the user compromised in Identity Protection", verify=confirmed, state_verified=True)
            detail["risk_confirmed"] = "done" if ran else ("planned" if ctx.dry_run else "already done")
            if not ctx.dry_run and not ctx.incident.get("risk_confirmed_at"):
                ctx.incident["risk_confirmed_at"] = iso(ctx.deps.clock())  # intake ignores this confirmation's echo
            if we_reset:
                await ctx.effect("risk-dismissed", lambda: calls.dismiss.submit(uid),
                                 description="dismiss the user's risk after the remediation", verify=dismissed, state_verified=True)
                detail["dismissed_after_remediation"] = not ctx.dry_run
            risky = await calls.risk_settled(uid, ctx.deps.clock())
            if risky:
                detail.update(final_risk_state=risky.get("riskState"), final_risk_level=risky.get("riskLevel"),
                              final_risk_detail=risky.get("riskDetail"))
            else:
                detail["final_risk_state"] = "none (not a risky user)"
        except (PermanentError, TransientError) as exc:
            detail.setdefault("risk_confirmed", "failed: " + str(exc)[:200])
            detail["risk_error"] = f"could not confirm, dismiss or read the user's risk: {exc}"[:500]
            ctx.log.warning("%s", detail["risk_error"])
        return detail
