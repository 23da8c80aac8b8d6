"""unblock-sender: take the user off Exchange Online's restricted-senders list, but only
once the account is secured: the password was reset (not merely "on-premises reset
required"), MFA enforced, and every other access path closed (each of clean-mailbox,
remove-delegates and revoke-app-consent that is in the playbook succeeded, and neither of the
last two left a foothold it found unremoved or a list it could not read). Entries only "listed
for review" (undated, maybe legitimate) do not keep the user blocked: the SOC mail lists them.

Unblocking an account the attacker still controls, or a mailbox that still forwards mail out,
would hand them the mailbox back, so the precondition is read from the ledger, not assumed. Removal takes up to an hour
(rarely 24 h) to apply in Exchange; the ledger records when it was requested.
"""
from __future__ import annotations

from ..ledger_protocol import load_json
from ..states import StepState
from .base import Call, Step, StepContext, StepResult

REQUIRED = ("reset-password", "enforce-mfa")
IF_IN_PLAYBOOK = ("clean-mailbox", "remove-delegates", "revoke-app-consent")
# Steps whose detail says whether an access path they found is still open.
ACCESS_PATHS = ("remove-delegates", "revoke-app-consent")


def open_paths(rows: dict[str, dict]) -> list[str]:
    """Why the access paths are not known to be closed, from the foothold steps' details (pure)."""
    reasons = []
    for step in ACCESS_PATHS:
        detail = load_json(rows.get(step, {}).get("detail"), {}) or {}
        if detail.get("not_removed"):
            reasons.append(f"{step} could not remove {len(detail['not_removed'])} foothold(s)")
        if detail.get("unverified"):
            reasons.append(f"{step} could not read {', '.join(detail['unverified'])}")
    return reasons


class UnblockSender(Step):
    name = "unblock-sender"
    calls = (
        Call("exo", "Get-BlockedSenderAddress -SenderAddress", "Exchange.ManageAsApp"),
        Call("exo", "Remove-BlockedSenderAddress -SenderAddress", "Exchange.ManageAsApp"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        rows = {r["RowKey"]: r for r in await ctx.deps.ledger.list_steps(ctx.task.incident_id)}
        playbook = (ctx.incident.get("playbook") or "").split(",")
        required = REQUIRED + tuple(s for s in IF_IN_PLAYBOOK if s in playbook)
        not_secured = [f"{s} did not succeed" for s in required if rows.get(s, {}).get("state") != StepState.SUCCEEDED]
        reset = load_json(rows.get("reset-password", {}).get("detail"), {}) or {}
        if not not_secured and reset.get("password_reset") not in ("done", "already done"):
            not_secured.append(f"the password was not reset ({reset.get('password_reset') or 'unknown'})")
        if not not_secured:
            not_secured += open_paths(rows)
        if not_secured and not ctx.dry_run:
            reason = f"account not secured: {'; '.join(not_secured)} for this incident"
            return StepResult(StepState.SKIPPED, reason, {"reason": reason})
        upn = ctx.upn
        listed = await ctx.exchange.invoke("Get-BlockedSenderAddress", {"SenderAddress": upn})
        if not listed:
            return StepResult(StepState.SUCCEEDED, "not blocked", {"blocked": False})
        entry = {k: listed[0].get(k) for k in ("SenderAddress", "Reason", "CreatedDatetime", "ChangedDatetime")}
        async def unblocked(_record: dict) -> bool:
            return not await ctx.exchange.invoke("Get-BlockedSenderAddress", {"SenderAddress": upn})

        await ctx.effect(
            "remove-blocked-sender",
            lambda: ctx.exchange.invoke("Remove-BlockedSenderAddress", {"SenderAddress": upn}),
            description=f"remove {upn} from the restricted-senders list",
            verify=unblocked, state_verified=True,
        )
        summary = "would unblock" if ctx.dry_run else "removed from the restricted-senders list (applies within ~1 h)"
        return StepResult(StepState.SUCCEEDED, summary, {"blocked": True, "entry": entry, "removed": not ctx.dry_run})
