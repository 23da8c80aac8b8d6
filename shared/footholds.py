"""What the SOC mail and ``responder status`` say about footholds: removed, kept, for review (pure).

Built from the step details alone (the ledger never holds a password or a token), so the mail,
the status view and the demo tell the same story: each removal with what it was (who had which
right on which mailbox, which app had which scopes, since when), each entry a person must look
at with the reason it could not be decided, and what is still open.
"""
from __future__ import annotations

from typing import Any, Mapping

from .ledger_protocol import load_json

LABELS = {"full-access": "FullAccess", "send-as": "SendAs", "send-on-behalf": "SendOnBehalf"}
MAX_LINES = 40


def _detail(rows: Mapping[str, Mapping[str, Any]], step: str) -> dict[str, Any]:
    return load_json((rows.get(step) or {}).get("detail"), {}) or {}


def describe(entry: Mapping[str, Any]) -> str:
    """One foothold in a line: what it is, never a secret (there are none in a step detail)."""
    kind = entry.get("kind")
    if kind in LABELS:
        who = entry.get("trustee_upn") or entry.get("trustee")
        when = f", granted {entry['granted_at']}" if entry.get("granted_at") else ""
        return f"{LABELS[kind]} of {who} on {entry.get('mailbox')}{when}"
    if kind == "trusted-sender":
        when = f", added {entry['added_at']}" if entry.get("added_at") else ""
        return f"trusted sender '{entry.get('entry')}' of {entry.get('mailbox')}{when}"
    if kind == "oauth2-grant":
        app = (entry.get("client_app") or {}).get("displayName") or entry.get("clientId")
        resource = (entry.get("resource_app") or {}).get("displayName") or entry.get("resourceId")
        when = f", consented {entry['consented_at']}" if entry.get("consented_at") else ""
        return f"consent grant of app '{app}' to {resource} ({entry.get('scope')}){when} [grant {entry.get('id')}]"
    if kind == "app-role-assignment":
        resource = (entry.get("resource_app") or {}).get("displayName") or entry.get("resourceDisplayName")
        return (f"app role assignment to '{resource}' (role {entry.get('appRoleId')}), created "
                f"{entry.get('createdDateTime')} [assignment {entry.get('id')}]")
    return str(entry.get("id") or entry)


def _entries(rows: Mapping[str, Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step in ("clean-mailbox", "remove-delegates", "revoke-app-consent"):
        detail = _detail(rows, step)
        if step == "clean-mailbox":
            detail = detail.get("trusted_senders") or {}
        out.extend(detail.get(key) or [])
    return out


def removed_lines(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every foothold the responder removed (or would remove, in dry-run), one line each."""
    lines = [f"  - removed {describe(e)}" for e in _entries(rows, "removed")]
    lines += [f"  - would remove {describe(e)}" for e in _entries(rows, "would_remove")]
    lines += [f"  - already gone: {describe(e)}" for e in _entries(rows, "already_gone")]
    block = _detail(rows, "reset-password").get("sign_in") or {}
    if block.get("blocked") is True:
        lines.append(f"  - sign-in blocked (accountEnabled false) at {block.get('blocked_at')}, BLOCK_SIGN_IN={block.get('policy')}")
    restored = _detail(rows, "close").get("sign_in") or {}
    if restored.get("restored") is True:
        lines.append(f"  - sign-in re-enabled at {restored.get('at')} by {restored.get('by')}")
    return _capped(lines)


def kept_lines(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What was found, dated before the cut-off, and left in place (the legitimate delegates, consents ...)."""
    return _capped([f"  - kept {describe(e)} (before the cut-off)" for e in _entries(rows, "kept")])


def review_lines(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Footholds a person must look at: undatable ones, admin consents, anything left open."""
    lines = [f"  - NOT REMOVED {describe(e)}: {e.get('error')}" for e in _entries(rows, "not_removed")]
    for step in ("remove-delegates", "revoke-app-consent"):
        for section, error in (_detail(rows, step).get("unavailable") or {}).items():
            lines.append(f"  - {step} could not read {section}: {error}")
    trusted = _detail(rows, "clean-mailbox").get("trusted_senders") or {}
    if trusted.get("unavailable"):
        lines.append(f"  - clean-mailbox could not read the junk-mail configuration: {trusted['unavailable']}")
    lines += [f"  - {describe(e)}: {e.get('reason')}" for e in _entries(rows, "review")]
    for admin in _detail(rows, "revoke-app-consent").get("admin_consents") or []:
        lines.append(f"  - admin consent (AllPrincipals) of app '{admin.get('client_app') or admin.get('clientId')}' "
                     f"({admin.get('scope')}) [grant {admin.get('id')}]: never touched; it still gives the app this "
                     "access for every user")
    block = _detail(rows, "reset-password").get("sign_in") or {}
    if block.get("blocked") is False and (block.get("reason") or block.get("error")):
        lines.append(f"  - {block.get('reason') or block.get('error')}")
    restored = _detail(rows, "close").get("sign_in") or {}
    if restored.get("restored") is False:
        error = f"{restored['error']}; " if restored.get("error") else ""
        lines.append(f"  - {error}{restored.get('reason')}")
    return _capped(lines)


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return lines[:MAX_LINES] + [f"  - ... and {len(lines) - MAX_LINES} more (responder status INCIDENT_ID --json)"]


def summary(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """The three lists, for ``responder status`` and the demo."""
    return {"removed": [line.strip()[2:] for line in removed_lines(rows)],
            "kept": [line.strip()[2:] for line in kept_lines(rows)],
            "review": [line.strip()[2:] for line in review_lines(rows)]}
