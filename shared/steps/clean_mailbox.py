"""clean-mailbox: disable suspicious inbox rules and clear mailbox forwarding.

Suspicious = forwards or redirects mail, deletes it, marks it read, or moves it to a
folder users never look at (RSS Subscriptions, Junk, Archive, Notes, Conversation
History). Graph-visible rules are disabled with a Graph PATCH (isEnabled=false); rules
only Exchange shows (``Get-InboxRule -IncludeHidden``) with ``Disable-InboxRule``. The
hidden system rules (out-of-office, junk mail) are left alone. Rules are disabled, never
deleted, and every change is recorded with the values before it, so it can be restored.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import PermanentError
from ..states import StepState
from .base import Call, Step, StepContext, StepResult

HIDING_FOLDERS = ("rss", "junk", "archive", "notes", "conversation history", "deleted items")
SYSTEM_RULE_PREFIXES = ("microsoft.exchange.oof.", "junk e-mail rule")


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
    name = str(row.get("Name") or "").lower()
    return name.startswith(SYSTEM_RULE_PREFIXES)


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
        exo_rows = await ctx.exchange.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True})
        exo_by_name = {str(r.get("Name") or ""): r for r in exo_rows}
        graph_rules = await ctx.graph.list_message_rules(uid)
        graph_names = {r.get("displayName") or "" for r in graph_rules}
        disabled: list[dict[str, Any]] = []
        kept: list[str] = []

        for rule in graph_rules:
            row = exo_by_name.get(rule.get("displayName") or "", {})
            reasons = graph_rule_reasons(rule, str(row.get("MoveToFolder") or ""))
            if not reasons or rule.get("isEnabled") is False:
                kept.append(str(rule.get("displayName") or rule.get("id")))
                continue
            async def graph_rule_off(_record: dict[str, Any], r=rule) -> bool:
                current = await ctx.graph.get_message_rule(uid, r["id"])
                return current is None or current.get("isEnabled") is False

            await ctx.effect(
                f"rule-graph-{rule['id']}",
                functools.partial(ctx.graph.disable_message_rule, uid, rule["id"]),
                description=f"disable inbox rule '{rule.get('displayName')}' ({', '.join(reasons)})",
                verify=graph_rule_off,
            )
            disabled.append({"via": "graph", "id": rule["id"], "name": rule.get("displayName"), "reasons": reasons,
                             "before": {"isEnabled": True, "actions": rule.get("actions")}})

        for row in exo_rows:
            name = str(row.get("Name") or "")
            if name in graph_names or is_system_rule(row):
                continue  # handled through Graph above, or a system rule to leave alone
            reasons = exo_rule_reasons(row)
            if not reasons or row.get("Enabled") is False:
                kept.append(name)
                continue
            identity = row.get("Identity") or row.get("RuleIdentity")
            async def exo_rule_off(_record: dict[str, Any], rule_name: str = name) -> bool:
                rows = await ctx.exchange.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True})
                return all(r.get("Enabled") is False for r in rows if str(r.get("Name") or "") == rule_name)

            await ctx.effect(
                f"rule-exo-{identity}",
                functools.partial(ctx.exchange.invoke, "Disable-InboxRule", {"Identity": identity}),
                description=f"disable hidden inbox rule '{name}' ({', '.join(reasons)})",
                verify=exo_rule_off,
            )
            disabled.append({"via": "exchange", "id": identity, "name": name, "hidden": True, "reasons": reasons,
                             "before": {"Enabled": True}})

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
        detail = {"disabled_rules": disabled, "kept_rules": kept, "forwarding": forwarding}
        verb = "would disable" if ctx.dry_run else "disabled"
        summary = f"{verb} {len(disabled)} rule(s); forwarding " + (
            "cleared" if forwarding.get("cleared") else ("would be cleared" if ctx.dry_run and before["ForwardingSmtpAddress"] else "not set"))
        return StepResult(StepState.SUCCEEDED, summary, detail)
