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
"""
from __future__ import annotations

import base64
import functools
from typing import Any

from ..errors import PermanentError
from ..states import StepState
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
                verify=exo_rule_off,
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
                    verify=graph_rule_off,
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
                verify=forwarding_off,
            )
            forwarding = {"cleared": not ctx.dry_run, "before": before}
        else:
            forwarding = {"cleared": False, "before": before, "note": "no forwarding set"}
        client = {"removed": via_exchange > 0 and not ctx.dry_run, "warnings": warnings[:10]}
        if client["removed"]:
            client["note"] = ("Exchange removed the mailbox's Outlook client-side rules (any rule change made through "
                              "Exchange does): the user recreates the ones they need")
        detail = {"disabled_rules": disabled, "kept_rules": kept, "forwarding": forwarding, "client_side_rules": client}
        if review:
            detail["review"] = review
        verb = "would disable" if ctx.dry_run else "disabled"
        summary = f"{verb} {len(disabled)} rule(s); forwarding " + (
            "cleared" if forwarding.get("cleared") else ("would be cleared" if ctx.dry_run and before["ForwardingSmtpAddress"] else "not set"))
        return StepResult(StepState.SUCCEEDED, summary, detail)
