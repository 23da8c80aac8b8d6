"""The pre-first-step gate: looks up protected-group membership, then asks policy."""
from __future__ import annotations

from .policy import gate_reason
from .steps.base import StepContext


async def protection_gate(ctx: StepContext) -> str | None:
    settings = ctx.settings
    in_group = False
    if settings.protected_group_id:
        hits = await ctx.graph.check_member_groups(ctx.user_id, [settings.protected_group_id])
        in_group = settings.protected_group_id.lower() in {h.lower() for h in hits}
    return gate_reason(settings, ctx.incident, in_group)
