"""The pre-first-step gate: looks up protected-group membership, then asks policy.

The membership lookup needs only a key for the user (Graph's checkMemberGroups takes the
object id or the UPN), so the runner can run it while it resolves the user (``prefetch``)
instead of after; the decision itself (``gate_reason``) always waits for the resolved
user, whose UPN, object id and sync state the explicit protected list and the synced-user
policy need.
"""
from __future__ import annotations

from .policy import gate_reason
from .steps.base import StepContext


class ProtectionGate:
    async def prefetch(self, ctx: StepContext, user_key: str) -> bool:
        """Is the user a member of PROTECTED_GROUP_ID? (False when no group is configured.)"""
        group = ctx.settings.protected_group_id
        if not group:
            return False
        hits = await ctx.graph.check_member_groups(user_key, [group])
        return group.lower() in {h.lower() for h in hits}

    async def __call__(self, ctx: StepContext, in_group: bool | None = None) -> str | None:
        """Why the incident must be held, or None. ``in_group`` from prefetch(), else looked up now."""
        if in_group is None:
            in_group = await self.prefetch(ctx, ctx.user_id)
        return gate_reason(ctx.settings, ctx.incident, in_group)


protection_gate = ProtectionGate()
