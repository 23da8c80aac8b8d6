"""The pre-first-step gate: looks up what makes a user protected, then asks policy.

Protected means: named in PROTECTED_USERS, a member of PROTECTED_GROUP_ID, or holding a
directory role — active (``transitiveMemberOf/microsoft.graph.directoryRole``, which also
covers roles held through a role-assignable group) or PIM-eligible
(``roleEligibilityScheduleInstances``, where the app may read them). A password reset of a
role holder needs a higher role than the app's User Administrator (Graph answers 403), and
touching an administrator is a decision for a person: the incident is held for approval.

The lookups need only a key for the user (Graph accepts the object id or the UPN), so the
runner runs them beside the user resolution (``prefetch``); the decision (``gate_reason``)
waits for the resolved user. A role lookup that fails holds the incident (fail closed).
While a role holder's incident is held, their sessions are revoked when REVOKE_WHILE_HELD is true
(explicitly protected accounts - break-glass - are left untouched until approval):
revoking changes no configuration (the user signs in again), and containment never waits
for a person. What was found is recorded on the incident (``privileged_roles``,
``roles_note``, ``held_containment``).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import PermanentError
from .policy import gate_reason, privileged_reason
from .steps.base import StepContext
from .timestamps import parse_timestamp

logger = logging.getLogger(__name__)

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Well-known roleTemplateIds (the same in every tenant) for eligibility rows, which carry only the id.
ROLE_NAMES = {
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
    "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
    "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
    "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
    "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
    "729827e3-9c14-49f7-bb1b-9608f156bbb8": "Helpdesk Administrator",
    "c4e39bd9-1100-46d3-8c65-fb160da0071f": "Authentication Administrator",
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451": "Global Reader",
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3": "Application Administrator",
    "158c047a-c907-4556-b7ef-446551a6b5f7": "Cloud Application Administrator",
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9": "Conditional Access Administrator",
}


@dataclass
class GateFacts:
    """What the lookups found about one user."""

    in_group: bool = False
    roles: list[str] = field(default_factory=list)  # active directory roles (display names)
    eligible: list[str] = field(default_factory=list)  # PIM-eligible roles
    note: str = ""  # what could not be read
    lookup_failed: str = ""  # the active-role lookup failed: hold (fail closed)
    eligible_read: bool = False  # eligibility needs the object id: read later when the key was a UPN


class ProtectionGate:
    async def prefetch(self, ctx: StepContext, user_key: str) -> GateFacts:
        """Group membership, active and eligible directory roles, read concurrently."""
        group = ctx.settings.protected_group_id

        async def in_group() -> bool:
            if not group:
                return False
            hits = await ctx.graph.check_member_groups(user_key, [group])
            return group.lower() in {h.lower() for h in hits}

        async def eligible_roles() -> list[dict[str, Any]] | None:
            return await ctx.graph.list_eligible_roles(user_key) if GUID.match(user_key) else None

        membership, roles, eligible = await asyncio.gather(
            in_group(), ctx.graph.list_directory_roles(user_key), eligible_roles(), return_exceptions=True)
        facts = GateFacts(in_group=membership is True)
        if isinstance(membership, PermanentError):
            facts.lookup_failed = f"could not check membership of PROTECTED_GROUP_ID ({membership})"
        elif isinstance(membership, BaseException):
            raise membership
        if isinstance(roles, PermanentError):
            facts.lookup_failed = f"could not read the user's directory roles ({roles})"[:400]
        elif isinstance(roles, BaseException):
            raise roles
        else:
            facts.roles = sorted({r.get("displayName") or ROLE_NAMES.get(r.get("roleTemplateId", ""), "")
                                  or r.get("roleTemplateId") or r.get("id", "?") for r in roles})
        if eligible is not None:
            self._eligible(ctx, facts, eligible)
        return facts

    @staticmethod
    def _eligible(ctx: StepContext, facts: GateFacts, eligible: Any) -> None:
        facts.eligible_read = True
        if isinstance(eligible, PermanentError):
            facts.note = ("eligible (PIM) roles not checked: the app cannot read them "
                          f"(grant RoleEligibilitySchedule.Read.Directory) - {str(eligible)[:200]}")
        elif isinstance(eligible, BaseException):
            raise eligible
        else:
            now = ctx.deps.clock()
            facts.eligible = sorted({ROLE_NAMES.get(r.get("roleDefinitionId", ""), r.get("roleDefinitionId", "?"))
                                     for r in eligible if _current(r, now)})

    async def __call__(self, ctx: StepContext, facts: GateFacts | bool | None = None) -> str | None:
        """Why the incident must be held, or None; revokes the sessions of a held user when configured."""
        if not isinstance(facts, GateFacts):
            facts = await self.prefetch(ctx, ctx.user_id)
        if not facts.eligible_read:  # the alert named the user by UPN: now the object id is known
            try:
                self._eligible(ctx, facts, await ctx.graph.list_eligible_roles(ctx.user_id))
            except PermanentError as exc:
                self._eligible(ctx, facts, exc)
        record: dict[str, Any] = {"privileged_roles": ",".join(facts.roles + [f"{r} (eligible)" for r in facts.eligible])}
        if facts.note:
            record["roles_note"] = facts.note[:500]
            ctx.log.warning("%s", facts.note)
        # Explicitly protected accounts (break-glass) are not touched at all while held; a role
        # holder, or a user whose roles could not be read, has their sessions revoked.
        reason = gate_reason(ctx.settings, ctx.incident, facts.in_group)
        if reason is None:
            reason = privileged_reason(facts.roles, facts.eligible)
            if reason is None and facts.lookup_failed:
                reason = f"{facts.lookup_failed}: held until a person confirms the user is not an administrator"
            if reason and not ctx.dry_run:
                record["held_containment"] = await self._contain(ctx)
        await ctx.deps.ledger.update_incident(ctx.task.incident_id, record)
        ctx.incident.update(record)
        return reason

    @staticmethod
    async def _contain(ctx: StepContext) -> str:
        """Revoke the held user's sessions (REVOKE_WHILE_HELD): changes no configuration."""
        if not ctx.settings.revoke_while_held:
            return "none (REVOKE_WHILE_HELD=false)"
        user_id = ctx.user_id

        async def revoked(record: dict[str, Any]) -> bool:
            user = await ctx.graph.get_user(user_id, select="id,signInSessionsValidFromDateTime")
            valid_from = user.get("signInSessionsValidFromDateTime")
            issued = parse_timestamp(record["issued_at"]).replace(microsecond=0)
            return bool(valid_from) and parse_timestamp(valid_from) >= issued

        try:
            await ctx.effect("held-sessions-revoked", lambda: ctx.graph.revoke_sessions(user_id),
                             description="revoke all sign-in sessions of the held user", verify=revoked)
        except PermanentError as exc:  # holding is still right; say containment failed
            ctx.log.error("could not revoke the held user's sessions: %s", exc)
            return f"sessions NOT revoked: {str(exc)[:300]}"
        return "sessions revoked"


def _current(row: dict[str, Any], now: Any) -> bool:
    """An eligibility instance that has not ended."""
    end = row.get("endDateTime")
    if not end:
        return True
    try:
        return parse_timestamp(end) > now
    except ValueError:
        return True


protection_gate = ProtectionGate()
