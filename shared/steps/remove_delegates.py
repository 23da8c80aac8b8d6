"""remove-delegates: take away the mailbox rights granted during the compromise.

Where it sits (docs/architecture.md, "The playbook's order"): after reset-password, enforce-mfa
and clean-mailbox, and before unblock-sender. A FullAccess or SendAs delegate is another
identity's way into the mailbox that no password reset touches; it is removed once the account
itself is taken back (or the attacker, still signed in, could re-create the SendOnBehalf
delegation from Outlook), and the sender is unblocked only after it is gone. It is its own step
(queue ``step-remove-delegates``) so a playbook can leave it out, so a refused removal never
undoes the containment before it, and because it runs Exchange cmdlets only.

What it looks at, on the user's mailbox and (the reverse lookups Exchange has) on others:
- FullAccess: ``Get-MailboxPermission -Identity <user>``; on other mailboxes Exchange has no
  reverse lookup (one call per mailbox in the tenant), so the candidates are the mailboxes the
  unified audit log shows the user was given FullAccess on, each checked with
  ``Get-MailboxPermission -Identity <mailbox> -User <user>``;
- SendAs: ``Get-RecipientPermission -Identity <user>``, and ``-Trustee <user>`` for the others;
- SendOnBehalf: ``Get-Mailbox`` ``GrantSendOnBehalfTo``, and for the others
  ``Get-Mailbox -Filter "GrantSendOnBehalfTo -eq '<the user's DN>'"``.

Each entry is dated from the unified audit log (shared/mailbox_rights.py, read once per incident:
steps/audit_reads.py): granted after the cut-off (shared/cutoff.py, AUTH_METHOD_CUTOFF) is
removed; granted before it is kept; the rest is listed for review. Inherited, denied and system
entries (``NT AUTHORITY\\SELF`` ...) are never touched. Removals: ``Remove-MailboxPermission
-AccessRights <rights> -InheritanceType All -Confirm:$false``, ``Remove-RecipientPermission
-AccessRights SendAs -Confirm:$false``, ``Set-Mailbox -GrantSendOnBehalfTo @{Remove=...}`` (the
admin API's ``#Exchange.GenericHashTable``); "the ACE doesn't exist" (a warning, or an error) is
"already removed".

The decisions (with every before-value, and the call that would undo each removal) are saved in
the step's checkpoint before the first change, so a retry executes the same plan and the record
survives a crash; each removal is an effect (checkpointed, verified by reading back). A removal
Exchange refuses is recorded (``not_removed``) and keeps unblock-sender from running; a section
that cannot be read is recorded (``unavailable``) and does the same.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Awaitable, Callable

from ..cutoff import cutoff
from ..errors import PermanentError
from ..mailbox_rights import (
    FULL_ACCESS,
    SEND_AS,
    SEND_ON_BEHALF,
    AuditState,
    already_gone,
    date_grant,
    grant_events,
    hashtable,
    held_full_access_candidates,
    keys_of,
    mailbox_keys,
    matches,
    norm,
    permission_entries,
)
from ..states import StepState
from ..validation import is_guid, opath_quote
from .audit_reads import UNIFIED_AUDIT_CALL, exchange_audit
from .base import Call, Step, StepContext, StepResult
from .plans import SectionReader, carry_out, plan_detail, plan_summary, saved_plan

EXO = "Exchange.ManageAsApp"
MAX_HELD_CANDIDATES = 25
LABELS = {FULL_ACCESS: "FullAccess", SEND_AS: "SendAs", SEND_ON_BEHALF: "SendOnBehalf"}


def effect_name(entry: dict[str, Any]) -> str:
    digest = hashlib.sha256(f"{entry['kind']}|{norm(entry['mailbox'])}|{norm(entry['trustee'])}".encode()).hexdigest()
    return f"{entry['kind']}-{entry['scope']}-{digest[:12]}"


def undo_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The Exchange call that gives back what a removal took (for ``responder undo``)."""
    mailbox, trustee = entry["mailbox"], entry["trustee_ref"]
    if entry["kind"] == FULL_ACCESS:
        return {"service": "exo", "cmdlet": "Add-MailboxPermission",
                "parameters": {"Identity": mailbox, "User": trustee, "AccessRights": entry["access_rights"],
                               "InheritanceType": "All"}}
    if entry["kind"] == SEND_AS:
        return {"service": "exo", "cmdlet": "Add-RecipientPermission",
                "parameters": {"Identity": mailbox, "Trustee": trustee, "AccessRights": ["SendAs"], "Confirm": False}}
    return {"service": "exo", "cmdlet": "Set-Mailbox",
            "parameters": {"Identity": mailbox, "GrantSendOnBehalfTo": hashtable("Add", trustee)}}


def describe(entry: dict[str, Any]) -> str:
    who = entry.get("trustee_upn") or entry["trustee"]
    return f"{LABELS[entry['kind']]} of {who} on {entry['mailbox']}"


class RemoveDelegates(Step):
    name = "remove-delegates"
    calls = (
        Call("exo", "Get-Mailbox -Identity (GrantSendOnBehalfTo, DistinguishedName)", EXO),
        Call("exo", "Get-MailboxPermission -Identity [-User] / Remove-MailboxPermission -InheritanceType All", EXO),
        Call("exo", "Get-RecipientPermission -Identity or -Trustee / Remove-RecipientPermission -AccessRights SendAs", EXO),
        Call("exo", "Get-Mailbox -Filter \"GrantSendOnBehalfTo -eq '<DN>'\" / Set-Mailbox -GrantSendOnBehalfTo @{Remove}", EXO),
        Call("exo", UNIFIED_AUDIT_CALL, EXO),
        Call("graph", "GET /users/{id}?$select=id,userPrincipalName,displayName,mail (send-on-behalf trustees)",
             "User.Read.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        cut = cutoff(ctx.settings, ctx.incident, ctx.deps.clock())
        plan = await saved_plan(ctx, lambda: self._plan(ctx, cut["at"]))
        entries = plan["entries"]
        done = await carry_out(entries, lambda entry: self._remove(ctx, entry))
        detail = plan_detail(ctx, cut, entries, done)
        detail.update({
            "untouched_system_entries": plan["untouched"],
            "unavailable": plan["unavailable"],
            # An unreadable audit log leaves every entry undated: the attacker's may still be there.
            "unverified": sorted(plan["unavailable"]) + (["unified audit log"] if entries and not plan["audit"]["available"]
                                                          else []),
            "audit": plan["audit"],
            "notes": plan["notes"],
        })
        summary = plan_summary(ctx, detail, "delegate right(s)", plan["unavailable"])
        return StepResult(StepState.SUCCEEDED, summary, detail)

    # -- deciding -------------------------------------------------------------------------------

    async def _plan(self, ctx: StepContext, cut: str) -> dict[str, Any]:
        upn, uid, exo = ctx.upn, ctx.user_id, ctx.exchange
        read = SectionReader(ctx, self.name)
        unavailable = read.unavailable
        notes: list[str] = []

        rows: list[dict[str, Any]] | None
        try:
            rows = await exo.invoke("Get-Mailbox", {"Identity": upn})
        except PermanentError as exc:
            # 404 (ManagementObjectNotFoundException): a user without a mailbox has no mailbox rights of its own.
            rows = [] if exc.status == 404 else None
            if rows is None:
                unavailable["mailbox"] = str(exc)[:300]
                ctx.log.warning("remove-delegates: mailbox unavailable: %s", exc)
        mailbox: dict[str, Any] | None = rows[0] if rows else None
        if rows == []:
            notes.append("the user has no Exchange mailbox: only rights held on other mailboxes were checked")
        own = mailbox_keys(mailbox) if mailbox else keys_of(upn)
        user = keys_of(upn, uid, ctx.incident.get("display_name"), (mailbox or {}).get("Alias"),
                       (mailbox or {}).get("PrimarySmtpAddress"), (mailbox or {}).get("DistinguishedName"))
        dn = (mailbox or {}).get("DistinguishedName")
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "held_send_as": lambda: exo.invoke("Get-RecipientPermission", {"Trustee": upn, "AccessRights": "SendAs"}),
        }
        if mailbox:
            reads["own_full_access"] = lambda: exo.invoke("Get-MailboxPermission", {"Identity": upn})
            reads["own_send_as"] = lambda: exo.invoke("Get-RecipientPermission", {"Identity": upn, "AccessRights": "SendAs"})
        if dn:
            reads["held_send_on_behalf"] = lambda: exo.invoke(
                "Get-Mailbox", {"Filter": f"GrantSendOnBehalfTo -eq {opath_quote(dn)}", "ResultSize": "Unlimited"})
        elif mailbox:
            unavailable["held_send_on_behalf"] = "Get-Mailbox gave no DistinguishedName to filter GrantSendOnBehalfTo by"
        names = list(reads)
        results = await asyncio.gather(*(read(n, reads[n]) for n in names), exchange_audit(ctx, own, user),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # throttled or failed: the platform retries; nothing was changed
        found: dict[str, Any] = dict(zip(names, results[:-1]))
        audit: AuditState = results[-1]  # type: ignore[assignment]

        entries: list[dict[str, Any]] = []
        untouched = 0

        def add(kind: str, scope: str, mailbox_id: str, trustee: str, trustee_ref: str, mbox: frozenset[str],
                tkeys: frozenset[str], rights: list[str], extra: dict[str, Any] | None = None) -> None:
            dating = date_grant(grant_events(audit.events, kind, mbox, tkeys), cut, audit)
            entry = {"kind": kind, "scope": scope, "mailbox": mailbox_id, "trustee": trustee, "trustee_ref": trustee_ref,
                     "access_rights": rights, "decision": dating.decision, "granted_at": dating.granted_at,
                     "reason": dating.reason, **(extra or {})}
            if dating.granted_at:
                entry["dated_by"] = audit.source
            entry["effect"] = effect_name(entry)
            entry["undo"] = undo_of(entry)
            entries.append(entry)

        # the user's own mailbox
        if found.get("own_full_access") is not None:
            delegates, skipped = permission_entries(found["own_full_access"], "User")
            untouched += skipped
            for d in delegates:
                add(FULL_ACCESS, "own", upn, d["trustee"], d["trustee"], own, keys_of(d["trustee"]), d["access_rights"])
        if found.get("own_send_as") is not None:
            delegates, skipped = permission_entries(found["own_send_as"], "Trustee")
            untouched += skipped
            for d in delegates:
                add(SEND_AS, "own", upn, d["trustee"], d["trustee"], own, keys_of(d["trustee"]), ["SendAs"])
        for value in (mailbox or {}).get("GrantSendOnBehalfTo") or []:
            who = await self._principal(ctx, str(value))
            ref = who.get("userPrincipalName") or str(value)
            add(SEND_ON_BEHALF, "own", upn, str(value), ref, own,
                keys_of(value, who.get("id"), who.get("userPrincipalName"), who.get("mail"), who.get("displayName")),
                ["SendOnBehalf"], {"trustee_upn": who.get("userPrincipalName")})
        # rights the user holds on other mailboxes
        if found.get("held_send_as") is not None:
            delegates, _ = permission_entries(found["held_send_as"], "Trustee")
            held = [d for d in delegates if d["identity"] and not matches(d["identity"], own) and matches(d["trustee"], user)]
            # The rows name the other recipient by its name; the audit log by whatever the admin typed:
            # read each one's Get-Mailbox row for every name it goes by (a recipient without a mailbox: its name).
            recipients = await asyncio.gather(*(self._recipient_keys(ctx, str(d["identity"])) for d in held))
            for d, mbox in zip(held, recipients):
                add(SEND_AS, "held", str(d["identity"]), d["trustee"], upn, mbox, user, ["SendAs"])
        for row in found.get("held_send_on_behalf") or []:
            if matches(row.get("UserPrincipalName"), own) or matches(row.get("Identity"), own):
                continue
            target = str(row.get("UserPrincipalName") or row.get("Identity"))
            add(SEND_ON_BEHALF, "held", target, upn, upn, mailbox_keys(row), user, ["SendOnBehalf"])
        if audit.available:
            candidates = held_full_access_candidates(audit.events, own, user)[:MAX_HELD_CANDIDATES]
            def held_rights(target: str) -> Callable[[], Awaitable[Any]]:
                return lambda: exo.invoke("Get-MailboxPermission", {"Identity": target, "User": upn})

            checks = await asyncio.gather(*(read(f"held_full_access:{c}", held_rights(c)) for c in candidates),
                                          return_exceptions=True)
            for target, result in zip(candidates, checks):
                if isinstance(result, BaseException):
                    raise result
                unavailable.pop(f"held_full_access:{target}", None)  # a mailbox gone since: nothing held there
                delegates, _ = permission_entries(result or [], "User")
                for d in delegates:
                    if matches(d["trustee"], user) and "fullaccess" in {r.lower() for r in d["access_rights"]}:
                        add(FULL_ACCESS, "held", target, d["trustee"], upn, keys_of(target, d["identity"]), user,
                            d["access_rights"])
        notes.append("FullAccess the user holds on other mailboxes is found through the unified audit log only "
                     "(Exchange has no reverse lookup): grants older than the search are not listed")
        audit_view = {"source": audit.source, "available": audit.available, "since": audit.since,
                      "complete": audit.complete, "error": audit.error}
        return {"entries": entries, "untouched": untouched, "unavailable": unavailable, "audit": audit_view, "notes": notes}

    @staticmethod
    async def _recipient_keys(ctx: StepContext, identity: str) -> frozenset[str]:
        try:
            rows = await ctx.exchange.invoke("Get-Mailbox", {"Identity": identity})
        except PermanentError:
            return keys_of(identity)
        return keys_of(identity) | (mailbox_keys(rows[0]) if rows else frozenset())

    @staticmethod
    async def _principal(ctx: StepContext, value: str) -> dict[str, Any]:
        """Who a GrantSendOnBehalfTo entry is (the admin API lists object ids): best effort."""
        if not (is_guid(value) or "@" in value):
            return {}
        try:
            return await ctx.graph.get_user(value, select="id,userPrincipalName,displayName,mail")
        except PermanentError:
            return {}

    # -- removing -------------------------------------------------------------------------------

    async def _remove(self, ctx: StepContext, entry: dict[str, Any]) -> str:
        """removed | gone | planned | the error text."""
        exo, kind = ctx.exchange, entry["kind"]
        mailbox, trustee = entry["mailbox"], entry["trustee_ref"]
        tkeys = keys_of(entry["trustee"], trustee, entry.get("trustee_upn"))
        warnings: list[str] = []
        if kind == FULL_ACCESS:
            params: dict[str, Any] = {"Identity": mailbox, "User": trustee, "AccessRights": entry["access_rights"],
                                      "InheritanceType": "All", "Confirm": False}
            cmdlet = "Remove-MailboxPermission"

            async def still_there() -> bool:
                rows = await exo.invoke("Get-MailboxPermission", {"Identity": mailbox, "User": trustee})
                return bool(permission_entries(rows, "User")[0])
        elif kind == SEND_AS:
            params = {"Identity": mailbox, "Trustee": trustee, "AccessRights": ["SendAs"], "Confirm": False}
            cmdlet = "Remove-RecipientPermission"

            async def still_there() -> bool:
                rows = await exo.invoke("Get-RecipientPermission", {"Identity": mailbox, "Trustee": trustee})
                return bool(permission_entries(rows, "Trustee")[0])
        else:
            params = {"Identity": mailbox, "GrantSendOnBehalfTo": hashtable("Remove", trustee)}
            cmdlet = "Set-Mailbox"

            async def still_there() -> bool:
                row = (await exo.invoke("Get-Mailbox", {"Identity": mailbox}) or [{}])[0]
                return any(matches(v, tkeys) for v in row.get("GrantSendOnBehalfTo") or [])

        async def landed(_record: dict[str, Any]) -> bool:
            return not await still_there()

        try:
            ran = await ctx.effect(entry["effect"], lambda: exo.invoke(cmdlet, params, warnings=warnings),
                                   description=f"remove {describe(entry)} ({entry['reason']})", verify=landed, state_verified=True)
        except PermanentError as exc:
            if already_gone([str(exc)]):
                return "gone"
            ctx.log.warning("could not remove %s: %s", describe(entry), exc)
            return str(exc)[:300]
        if ctx.dry_run:
            return "planned"
        if ran and already_gone(warnings):
            return "gone"
        return "removed"
