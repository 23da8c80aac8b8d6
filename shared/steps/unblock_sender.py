"""unblock-sender: take the user off Exchange Online's restricted-senders list, but only
once the account is secured (reset-password and enforce-mfa succeeded for this incident).

Unblocking an account the attacker still controls would hand them the mailbox back, so
the precondition is read from the ledger, not assumed. Removal takes up to an hour
(rarely 24 h) to apply in Exchange; the ledger records when it was requested.
"""
from __future__ import annotations

from ..states import StepState
from .base import Call, Step, StepContext, StepResult

REQUIRED = ("reset-password", "enforce-mfa")


class UnblockSender(Step):
    name = "unblock-sender"
    calls = (
        Call("exo", "Get-BlockedSenderAddress -SenderAddress", "Exchange.ManageAsApp"),
        Call("exo", "Remove-BlockedSenderAddress -SenderAddress", "Exchange.ManageAsApp"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        rows = {r["RowKey"]: r for r in await ctx.deps.ledger.list_steps(ctx.task.incident_id)}
        not_secured = [s for s in REQUIRED if rows.get(s, {}).get("state") != StepState.SUCCEEDED]
        if not_secured and not ctx.dry_run:
            reason = f"account not secured: {', '.join(not_secured)} did not succeed for this incident"
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
            verify=unblocked,
        )
        summary = "would unblock" if ctx.dry_run else "removed from the restricted-senders list (applies within ~1 h)"
        return StepResult(StepState.SUCCEEDED, summary, {"blocked": True, "entry": entry, "removed": not ctx.dry_run})
