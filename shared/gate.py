"""The protection gate: looks up what makes a user protected, then asks policy.

Protected means: named in PROTECTED_USERS, a member of PROTECTED_GROUP_ID, or holding a
directory role — active (``transitiveMemberOf/microsoft.graph.directoryRole``, which also
covers roles held through a role-assignable group) or PIM-eligible
(``roleEligibilityScheduleInstances``, where the app may read them). A password reset of a
role holder needs a higher role than the app's User Administrator (Graph answers 403), and
touching an administrator is a decision for a person: the incident is held for approval.

The lookups need only a key for the user (Graph accepts the object id or the UPN): intake
runs them before it creates an incident, so the operator sees "protected: yes, because ..."
from the start, and the runner runs them again right before every step that changes the
tenant (beside the user resolution when that is still to do); the verdict is
``policy.assess_protection``. A protected account (break-glass or role holder) needs two
different approvers, whatever mode the incident is in: an approval never skips this gate.
A role lookup that fails counts as protected (fail closed). The lookups' facts are reused for
GATE_FACTS_MAX_AGE_SECONDS (60; 0: read before every step) by the worker that read them: the
verdict is still taken before every step (approvals, policy), only the three Graph reads are not
repeated for each of an incident's eight write steps; a failed lookup is never reused.
While a role holder's incident is held, their sessions are revoked when REVOKE_WHILE_HELD is true
(explicitly protected accounts - break-glass - are left untouched until approval):
revoking changes no configuration (the user signs in again), and containment never waits
for a person. What was found is recorded on the incident (``privileged_roles``,
``roles_note``, ``held_containment``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import weakref
from datetime import datetime, timedelta
from typing import Any

from .errors import PermanentError
from .policy import GateFacts, Protection, approvals_of, assess_protection
from .ports import GraphPort
from .settings import Settings
from .steps.base import StepContext
from .timestamps import parse_timestamp

logger = logging.getLogger(__name__)

__all__ = ["GateFacts", "ProtectionGate", "ROLE_NAMES", "protection_gate"]

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


class ProtectionGate:
    """The runner's gate (``steps.base.Gate``): ``lookup`` reads, ``check`` decides and contains."""

    #: Facts per Graph client (one tenant, one worker) and user key; bounded, oldest dropped first.
    MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self._recent: weakref.WeakKeyDictionary[Any, dict[str, tuple[datetime, GateFacts]]] = weakref.WeakKeyDictionary()

    async def lookup(self, graph: GraphPort, settings: Settings, now: datetime, user_key: str) -> GateFacts:
        """Group membership, active and eligible directory roles, read concurrently (or, read by this
        worker less than GATE_FACTS_MAX_AGE_SECONDS ago, reused).

        Intake asks before it creates an incident (to record "protected: yes, because ...") and
        the runner asks again right before every step that changes the tenant."""
        max_age = timedelta(seconds=settings.gate_facts_max_age_s)
        try:
            recent = self._recent.setdefault(graph, {}) if max_age else None
        except TypeError:  # a client that cannot be weakly referenced: nothing is remembered
            recent = None
        key = user_key.lower()
        if recent is not None and key in recent:
            read_at, facts = recent[key]
            if timedelta(0) <= now - read_at <= max_age:
                return dataclasses.replace(facts)
            del recent[key]
        facts = await self._read(graph, settings, now, user_key)
        if recent is not None and not facts.lookup_failed:
            recent[key] = (now, dataclasses.replace(facts))
            while len(recent) > self.MAX_REMEMBERED:
                del recent[next(iter(recent))]
        return facts

    async def _read(self, graph: GraphPort, settings: Settings, now: datetime, user_key: str) -> GateFacts:
        group = settings.protected_group_id

        async def in_group() -> bool:
            if not group:
                return False
            hits = await graph.check_member_groups(user_key, [group])
            return group.lower() in {h.lower() for h in hits}

        async def eligible_roles() -> list[dict[str, Any]] | None:
            return await graph.list_eligible_roles(user_key) if GUID.match(user_key) else None

        membership, roles, eligible = await asyncio.gather(
            in_group(), graph.list_directory_roles(user_key), eligible_roles(), return_exceptions=True)
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
            self._eligible(now, facts, eligible)
        return facts

    async def assess(self, graph: GraphPort, settings: Settings, now: datetime, incident: dict[str, Any]) -> Protection:
        """The verdict for an incident about to be created (intake): the lookups, then policy."""
        facts = await self.lookup(graph, settings, now, incident.get("user_id") or incident["user_principal_name"])
        if not facts.eligible_read and incident.get("user_id"):
            await self._read_eligible(graph, now, facts, incident["user_id"])
        return assess_protection(settings, incident, facts)

    @staticmethod
    def _eligible(now: datetime, facts: GateFacts, eligible: Any) -> None:
        facts.eligible_read = True
        if isinstance(eligible, PermanentError):
            facts.note = ("eligible (PIM) roles not checked: the app cannot read them "
                          f"(grant RoleEligibilitySchedule.Read.Directory) - {str(eligible)[:200]}")
        elif isinstance(eligible, BaseException):
            raise eligible
        else:
            facts.eligible = sorted({ROLE_NAMES.get(r.get("roleDefinitionId", ""), r.get("roleDefinitionId", "?"))
                                     for r in eligible if _current(r, now)})

    async def _read_eligible(self, graph: GraphPort, now: datetime, facts: GateFacts, user_id: str) -> None:
        try:
            self._eligible(now, facts, await graph.list_eligible_roles(user_id))
        except PermanentError as exc:
            self._eligible(now, facts, exc)

    async def check(self, ctx: StepContext, facts: GateFacts) -> str | None:
        """Why this step must wait (too few approvals for who the user is), or None; records the
        verdict on the incident (with the step's end) and revokes the sessions of a held role holder
        when configured."""
        if not facts.eligible_read:  # the alert named the user by UPN: now the object id is known
            await self._read_eligible(ctx.graph, ctx.deps.clock(), facts, ctx.user_id)
        protection = assess_protection(ctx.settings, ctx.incident, facts)
        reason = protection.hold(len(approvals_of(ctx.incident)))
        record: dict[str, Any] = {
            "privileged_roles": ",".join(facts.roles + [f"{r} (eligible)" for r in facts.eligible]),
            "protected": protection.protected,
            "protection": protection.summary[:1000],
            "approvals_required": protection.approvals_required,
        }
        if facts.note:
            record["roles_note"] = facts.note[:500]
            ctx.log.warning("%s", facts.note)
        # Explicitly protected accounts (break-glass) are not touched at all while held; a role
        # holder, or a user whose roles could not be read, has their sessions revoked.
        if reason and protection.contain and not ctx.dry_run:
            record["held_containment"] = await self._contain(ctx)
        if any(ctx.incident.get(k) != v for k, v in record.items()):  # the verdict of the last step: no write
            # Written with the runner's own update of the incident when the step ends, is held, or fails
            # (not a round trip of its own).
            ctx.incident_updates.update(record)
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
