"""clean-mailbox: disable suspicious inbox rules and clear mailbox forwarding.

Suspicious = forwards or redirects mail, deletes it, marks it read, or moves it to a
folder users never look at (RSS Subscriptions, Junk, Archive, Notes, Conversation
History). Rules are disabled, never deleted, and every change is recorded with the values
before it, so it can be restored.

- Graph and Exchange see the same rules: a Graph rule id and an Exchange RuleIdentity carry the
  same rule number, so rules are matched by identity, never by name (a hidden rule may be named
  like a visible one).
- A rule Graph shows is disabled with the Graph PATCH (isEnabled=false) where Graph can: Graph
  leaves Outlook's client-side rules alone. A read-only rule (``isReadOnly``: the rules REST API
  cannot change it) and the rules only Exchange shows (``Get-InboxRule -IncludeHidden``) are
  disabled with ``Disable-InboxRule -Confirm:$false``, the documented non-interactive form.
- Any rule change made through Exchange removes the mailbox's Outlook client-side rules
  (Disable-InboxRule.md); when that happened the step records it (``client_side_rules``) and
  the SOC mail asks the user to recreate the ones they need.
- System rules (junk mail, out-of-office) are left alone; one is recognised by its properties
  (not managed by the inbox-rule cmdlets: ``SupportedByTask`` false) and never when it
  forwards, redirects or deletes mail, whatever its name.
- Junk-mail trusted senders (``Get-MailboxJunkEmailConfiguration``: TrustedSendersAndDomains, which
  let the attacker's phishing reach the inbox) are part of this step: the same kind of change
  (mailbox settings that steer mail), the same permission and mailbox. Each entry is dated from
  the unified audit log (``Set-MailboxJunkEmailConfiguration``, as OWA and the cmdlet record it;
  read once per incident, shared with remove-delegates: steps/audit_reads.py): added after the
  cut-off is removed (``-TrustedSendersAndDomains @{Remove=...}``), added before is kept, the rest
  (Outlook desktop edits the list without an audit record) is listed for review. The whole
  configuration as it was is in the snapshot and in this step's detail.
"""
from __future__ import annotations

import base64
import functools
from typing import Any, Awaitable

from ..cutoff import cutoff
from ..errors import PermanentError
from ..mailbox_rights import (
    KEEP,
    REMOVE,
    REVIEW,
    TRUSTED_SENDER,
    already_gone,
    date_grant,
    grant_events,
    hashtable,
    keys_of,
    mailbox_keys,
    norm,
)
from ..states import StepState
from .audit_reads import UNIFIED_AUDIT_CALL, exchange_audit
from .base import Call, Step, StepContext, StepResult

HIDING_FOLDERS = ("rss", "junk", "archive", "notes", "conversation history", "deleted items")
_EXFILTRATING = ("ForwardTo", "ForwardAsAttachmentTo", "RedirectTo", "DeleteMessage", "SoftDeleteMessage")


def _nonempty(value: Any) -> bool:
    return bool(value) and value not in ("", [], {}, "null")


def graph_rule_reasons(rule: dict[str, Any], folder_name: str = "") -> list[str]:
    """Why a Graph messageRule looks like an attacker's (empty = benign). Pure."""
    actions = rule.get("actions") or {}
    reasons = []
    for key in ("forwardTo", "forwardAsAttachmentTo", "redirectTo"):
        if _nonempty(actions.get(key)):
            reasons.append(key)
    for key in ("delete", "permanentDelete", "markAsRead"):
        if actions.get(key) is True:
            reasons.append(key)
    if _nonempty(actions.get("moveToFolder")) and any(f in folder_name.lower() for f in HIDING_FOLDERS):
        reasons.append(f"moveToFolder:{folder_name}")
    return reasons


def exo_rule_reasons(row: dict[str, Any]) -> list[str]:
    """The same judgement for an Exchange Get-InboxRule row (PascalCase). Pure."""
    reasons = []
    for key in ("ForwardTo", "ForwardAsAttachmentTo", "RedirectTo"):
        if _nonempty(row.get(key)):
            reasons.append(key)
    for key in ("DeleteMessage", "SoftDeleteMessage", "MarkAsRead"):
        if row.get(key) is True:
            reasons.append(key)
    folder = str(row.get("MoveToFolder") or "")
    if folder and any(f in folder.lower() for f in HIDING_FOLDERS):
        reasons.append(f"MoveToFolder:{folder}")
    return reasons


def is_system_rule(row: dict[str, Any]) -> bool:
    """A system rule (junk mail, out-of-office) by its properties: not managed by the inbox-rule
    cmdlets, and neither forwarding, redirecting nor deleting mail. Never by its name. Pure."""
    return row.get("SupportedByTask") is False and not any(_nonempty(row.get(k)) for k in _EXFILTRATING)


def graph_rule_number(rule_id: str) -> int | None:
    """The rule number in a Graph messageRule id (base64 of 4 bytes, then the number, big-endian)."""
    try:
        raw = base64.b64decode(rule_id, validate=True)
    except (ValueError, TypeError):
        return None
    return int.from_bytes(raw[4:8], "big") if len(raw) >= 8 else None


def exo_rule_number(row: dict[str, Any]) -> int | None:
    """The same number in an Exchange RuleIdentity (its high 32 bits)."""
    try:
        return int(str(row.get("RuleIdentity"))) >> 32
    except (TypeError, ValueError):
        return None


class CleanMailbox(Step):
    name = "clean-mailbox"
    calls = (
        Call("graph", "GET /users/{id}/mailFolders/inbox/messageRules", "MailboxSettings.ReadWrite"),
        Call("graph", "PATCH /users/{id}/mailFolders/inbox/messageRules/{ruleId}", "MailboxSettings.ReadWrite"),
        Call("exo", "Get-InboxRule -IncludeHidden / Disable-InboxRule", "Exchange.ManageAsApp"),
        Call("exo", "Get-Mailbox / Set-Mailbox (forwarding)", "Exchange.ManageAsApp"),
        Call("exo", "Get-/Set-MailboxJunkEmailConfiguration -TrustedSendersAndDomains @{Remove}", "Exchange.ManageAsApp"),
        Call("exo", UNIFIED_AUDIT_CALL, "Exchange.ManageAsApp"),
        # undo (shared/undo.py, the worker): re-enable the rules this step disabled; restore confirmed forwarding
        Call("graph", "PATCH /users/{id}/mailFolders/inbox/messageRules/{ruleId} isEnabled=true (undo)",
             "MailboxSettings.ReadWrite"),
        Call("exo", "Enable-InboxRule (undo)", "Exchange.ManageAsApp"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        uid, upn = ctx.user_id, ctx.upn
        exo_rows = await ctx.exchange.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}, anchor=upn)
        by_number = {n: r for r in exo_rows if (n := exo_rule_number(r)) is not None}
        graph_rules = await ctx.graph.list_message_rules(uid)
        disabled: list[dict[str, Any]] = []
        kept: list[str] = []
        review: list[dict[str, Any]] = []
        warnings: list[str] = []
        via_exchange = 0
        matched: set[int] = set()

        async def exchange_off(row: dict[str, Any], name: str, reasons: list[str], hidden: bool) -> None:
            nonlocal via_exchange
            identity = row.get("Identity") or row.get("RuleIdentity")
            rule_identity = str(row.get("RuleIdentity"))

            async def exo_rule_off(_record: dict[str, Any]) -> bool:
                rows = await ctx.exchange.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}, anchor=upn)
                return all(r.get("Enabled") is False for r in rows if str(r.get("RuleIdentity")) == rule_identity)

            await ctx.effect(
                f"rule-exo-{identity}",
                lambda: ctx.exchange.invoke("Disable-InboxRule", {"Identity": identity, "Confirm": False},
                                            anchor=upn, warnings=warnings),
                description=f"disable {'hidden ' if hidden else ''}inbox rule '{name}' through Exchange ({', '.join(reasons)})",
                verify=exo_rule_off, state_verified=True,
            )
            via_exchange += 1
            disabled.append({"via": "exchange", "id": identity, "rule_identity": rule_identity, "name": name,
                             "hidden": hidden, "reasons": reasons, "before": {"Enabled": True}})

        for rule in graph_rules:
            number = graph_rule_number(str(rule.get("id") or ""))
            row = by_number.get(number, {}) if number is not None else {}
            if number is not None:
                matched.add(number)
            name = str(rule.get("displayName") or rule.get("id"))
            reasons = graph_rule_reasons(rule, str(row.get("MoveToFolder") or ""))
            if not reasons or rule.get("isEnabled") is False:
                kept.append(name)
                continue
            if rule.get("isReadOnly") is True:
                if row:
                    await exchange_off(row, name, reasons + ["read-only in Graph"], hidden=False)
                else:
                    review.append({"name": name, "id": rule.get("id"), "reasons": reasons,
                                   "reason": "read-only rule Graph cannot change and Exchange did not list"})
                continue

            async def graph_rule_off(_record: dict[str, Any], r=rule) -> bool:
                current = await ctx.graph.get_message_rule(uid, r["id"])
                return current is None or current.get("isEnabled") is False

            try:
                await ctx.effect(
                    f"rule-graph-{rule['id']}",
                    functools.partial(ctx.graph.disable_message_rule, uid, rule["id"]),
                    description=f"disable inbox rule '{name}' ({', '.join(reasons)})",
                    verify=graph_rule_off, state_verified=True,
                )
            except PermanentError as exc:
                if exc.status != 403 or not row:
                    raise
                # The rules API refused (a read-only rule it did not flag): Exchange can still disable it.
                ctx.log.warning("Graph refused to change rule %s (%s); disabling it through Exchange", name, exc)
                await exchange_off(row, name, reasons + ["refused by Graph"], hidden=False)
                continue
            disabled.append({"via": "graph", "id": rule["id"], "name": name, "reasons": reasons,
                             "before": {"isEnabled": True, "actions": rule.get("actions")}})

        for row in exo_rows:
            number = exo_rule_number(row)
            if number is not None and number in matched:
                continue  # a rule Graph showed: handled above
            name = str(row.get("Name") or "")
            if is_system_rule(row):
                continue
            reasons = exo_rule_reasons(row)
            if not reasons or row.get("Enabled") is False:
                kept.append(name)
                continue
            await exchange_off(row, name, reasons, hidden=True)

        mailboxes = await ctx.exchange.invoke("Get-Mailbox", {"Identity": upn})
        if not mailboxes:
            raise PermanentError(f"Exchange Get-Mailbox returned no mailbox for {upn}")
        mailbox = mailboxes[0]
        before = {k: mailbox.get(k) for k in ("ForwardingSmtpAddress", "ForwardingAddress", "DeliverToMailboxAndForward")}
        forwarding = None
        if before["ForwardingSmtpAddress"] or before["ForwardingAddress"]:
            async def forwarding_off(_record: dict[str, Any]) -> bool:
                now = (await ctx.exchange.invoke("Get-Mailbox", {"Identity": upn}) or [{}])[0]
                return not now.get("ForwardingSmtpAddress") and not now.get("ForwardingAddress")

            await ctx.effect(
                "clear-forwarding",
                lambda: ctx.exchange.invoke("Set-Mailbox", {"Identity": upn, "ForwardingSmtpAddress": None,
                                                            "ForwardingAddress": None, "DeliverToMailboxAndForward": False}),
                description=f"clear mailbox forwarding to {before['ForwardingSmtpAddress'] or before['ForwardingAddress']}",
                verify=forwarding_off, state_verified=True,
            )
            forwarding = {"cleared": not ctx.dry_run, "before": before}
        else:
            forwarding = {"cleared": False, "before": before, "note": "no forwarding set"}
        client = {"removed": via_exchange > 0 and not ctx.dry_run, "warnings": warnings[:10]}
        if client["removed"]:
            client["note"] = ("Exchange removed the mailbox's Outlook client-side rules (any rule change made through "
                              "Exchange does): the user recreates the ones they need")
        trusted = await self._trusted_senders(ctx, mailbox)
        detail = {"disabled_rules": disabled, "kept_rules": kept, "forwarding": forwarding, "client_side_rules": client,
                  "trusted_senders": trusted}
        if review:
            detail["review"] = review
        verb = "would disable" if ctx.dry_run else "disabled"
        summary = f"{verb} {len(disabled)} rule(s); forwarding " + (
            "cleared" if forwarding.get("cleared") else ("would be cleared" if ctx.dry_run and before["ForwardingSmtpAddress"] else "not set"))
        if trusted.get("removed") or trusted.get("would_remove"):
            summary += f"; {'would remove' if ctx.dry_run else 'removed'} " \
                       f"{len(trusted.get('would_remove') or trusted['removed'])} trusted sender(s)"
        if trusted.get("review"):
            summary += f"; {len(trusted['review'])} trusted sender(s) for review"
        return StepResult(StepState.SUCCEEDED, summary, detail)

    @staticmethod
    async def _trusted_senders(ctx: StepContext, mailbox: dict[str, Any]) -> dict[str, Any]:
        """Remove the trusted senders/domains added after the cut-off; keep or list the rest."""
        upn, exo = ctx.upn, ctx.exchange
        plan = ctx.checkpoint.get("trusted_plan")
        if plan is None:
            try:
                config = (await exo.invoke("Get-MailboxJunkEmailConfiguration", {"Identity": upn}) or [{}])[0]
            except PermanentError as exc:
                ctx.log.warning("junk-mail configuration unavailable: %s", exc)
                return {"unavailable": str(exc)[:300]}
            before = {k: config.get(k) for k in ("Enabled", "TrustedListsOnly", "ContactsTrusted",
                                                  "TrustedSendersAndDomains", "BlockedSendersAndDomains")}
            entries: list[dict[str, Any]] = []
            cut = cutoff(ctx.settings, ctx.incident, ctx.deps.clock())["at"]
            trusted = [str(t) for t in config.get("TrustedSendersAndDomains") or [] if str(t).strip()]
            if trusted:
                own = mailbox_keys(mailbox)
                audit = await exchange_audit(ctx, own, keys_of(upn, ctx.user_id, mailbox.get("Alias")))
                for value in trusted:
                    dating = date_grant(grant_events(audit.events, TRUSTED_SENDER, own, frozenset(), value), cut, audit,
                                        verb="added")
                    entries.append({"kind": TRUSTED_SENDER, "mailbox": upn, "entry": value, "decision": dating.decision,
                                    "added_at": dating.granted_at, "reason": dating.reason,
                                    "effect": f"trusted-sender-{norm(value)}"[:120],
                                    "undo": {"service": "exo", "cmdlet": "Set-MailboxJunkEmailConfiguration",
                                             "parameters": {"Identity": upn,
                                                            "TrustedSendersAndDomains": hashtable("Add", value)}}})
            plan = {"before": before, "cutoff": cut, "entries": entries}
            ctx.stage(trusted_plan=plan)  # stored with the first removal's start mark
        removed: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        not_removed: list[dict[str, Any]] = []
        for entry in plan["entries"]:
            if entry["decision"] != REMOVE:
                continue
            warnings: list[str] = []
            value = entry["entry"]

            async def absent(_record: dict[str, Any], value: str = value) -> bool:
                config = (await exo.invoke("Get-MailboxJunkEmailConfiguration", {"Identity": upn}) or [{}])[0]
                return norm(value) not in {norm(t) for t in config.get("TrustedSendersAndDomains") or []}

            def remove(value: str = value, warnings: list[str] = warnings) -> Awaitable[Any]:
                return exo.invoke("Set-MailboxJunkEmailConfiguration",
                                  {"Identity": upn, "TrustedSendersAndDomains": hashtable("Remove", value)},
                                  warnings=warnings)

            try:
                ran = await ctx.effect(entry["effect"], remove,
                                       description=f"remove trusted sender '{value}' ({entry['reason']})", verify=absent, state_verified=True)
            except PermanentError as exc:
                ctx.log.warning("could not remove trusted sender %s: %s", value, exc)
                not_removed.append({**entry, "error": str(exc)[:300]})
                continue
            if ctx.dry_run:
                continue
            (gone if ran and already_gone(warnings) else removed).append(entry)
        out: dict[str, Any] = {"before": plan["before"], "cutoff": plan["cutoff"], "removed": removed,
                               "already_gone": gone, "not_removed": not_removed,
                               "kept": [e for e in plan["entries"] if e["decision"] == KEEP],
                               "review": [e for e in plan["entries"] if e["decision"] == REVIEW]}
        if ctx.dry_run:
            out["would_remove"] = [e for e in plan["entries"] if e["decision"] == REMOVE]
        return out
