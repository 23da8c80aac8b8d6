"""close: confirm the user compromised in Identity Protection, send the SOC a summary, done.

The summary is built from the ledger, which never holds a password, so the mail cannot
carry one. With no SOC_MAILBOX / NOTIFY_SENDER configured the mail is skipped and that is
recorded. Risk state lags 10-30 minutes behind the confirmation; that is expected (a
retry after a crash may then confirm once more, which is harmless). The mail is the one
effect that cannot be verified afterwards: a crash between sending and recording it can,
at worst, send the SOC a second copy.
"""
from __future__ import annotations

from typing import Any

from ..ledger_protocol import load_json
from ..playbook import incident_order
from ..securescore.service import latest_score
from ..states import StepState
from .base import Call, Step, StepContext, StepResult


def summary_text(incident: dict[str, Any], step_rows: list[dict[str, Any]]) -> str:
    rows = {r["RowKey"]: r for r in step_rows}
    lines = [
        f"Breach Responder incident {incident['incident_id']}",
        f"User: {incident.get('user_principal_name') or incident.get('user_id')} ({incident.get('user_id')})",
        f"Source: {incident.get('source')}  risk: {incident.get('risk_level')}  alerts: {incident.get('alert_ids') or '-'}",
        f"Reason: {incident.get('reason') or '-'}",
        "",
        "Steps:",
    ]
    for name in incident_order(incident, ()):
        row = rows.get(name, {})
        detail = load_json(row.get("detail"), {}) or {}
        note = detail.get("summary") or row.get("error") or ""
        lines.append(f"  - {name}: {row.get('state', 'this step' if name == 'close' else 'not run')} {('- ' + note) if note else ''}".rstrip())
    lines += [
        "",
        "The user's new temporary password is NOT included: issue a Temporary Access Pass or",
        "reset it with the user through your help desk process.",
    ]
    return "\n".join(lines)


class Close(Step):
    name = "close"
    calls = (
        Call("graph", "POST /identityProtection/riskyUsers/confirmCompromised", "IdentityRiskyUser.ReadWrite.All"),
        Call("graph", "POST /users/{sender}/sendMail", "Mail.Send"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        settings, uid = ctx.settings, ctx.user_id
        async def confirmed(_record: dict) -> bool:
            risky = await ctx.graph.get_risky_user(uid)
            return risky is not None and risky.get("riskState") == "confirmedCompromised"

        await ctx.effect("confirm-compromised", lambda: ctx.graph.confirm_compromised([uid]),
                         description="confirm the user compromised in Identity Protection", verify=confirmed)
        detail: dict[str, Any] = {"confirmed_compromised": not ctx.dry_run}
        if settings.soc_mailbox and settings.notify_sender:
            rows = await ctx.deps.ledger.list_steps(ctx.task.incident_id)
            text = summary_text(ctx.incident, rows)
            subject = f"[Breach Responder] {ctx.incident.get('user_principal_name') or uid} contained ({ctx.task.incident_id})"
            await ctx.effect("notify-soc", lambda: ctx.graph.send_mail(settings.notify_sender, settings.soc_mailbox, subject, text),
                             description=f"mail the summary to {settings.soc_mailbox}")
            detail["notified"] = settings.soc_mailbox
        else:
            detail["notified"] = None
            detail["note"] = "SOC_MAILBOX or NOTIFY_SENDER not set: no summary mail"
        detail["secure_score"] = await latest_score(ctx.deps.scores)
        summary = "confirmed compromised" + (f"; summary mailed to {settings.soc_mailbox}" if detail["notified"] else "")
        return StepResult(StepState.SUCCEEDED, summary, detail)
