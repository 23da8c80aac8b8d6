"""Mailbox rights and trusted senders: which entries are the attacker's (pure).

Exchange keeps no date on a mailbox permission (FullAccess), a recipient permission (SendAs), a
GrantSendOnBehalfTo entry or a junk-mail trusted sender. They are dated from the unified audit
log (``Search-UnifiedAuditLog``, Exchange admin records: ``Add-MailboxPermission``,
``Add-RecipientPermission``, ``Set-Mailbox -GrantSendOnBehalfTo``,
``Set-MailboxJunkEmailConfiguration``, and their removals), read once per incident
(shared/audit_reads.py). An entry is

- **removed** when the log shows it granted at or after the cut-off (shared/cutoff.py);
- **kept** when the log's latest event for it is a grant before the cut-off and the search was
  complete;
- **listed for review** otherwise: no event (older than the search, or not searchable yet: the
  log can take 30 minutes to 24 hours), the log unreadable or cut short, or a last event that
  removed an entry which is present again. "No event" never means "old".

Inherited entries, denials and system principals (``NT AUTHORITY\\SELF``, ``DOMAIN\\group``
forms, unresolved SIDs, Exchange's own groups) are never touched, as Microsoft's
Remediate-BreachedAccount.ps1 filters them (``IsInherited -ne True``, ``User -notlike "*SELF*"``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from .timestamps import iso_exact, parse_timestamp

FULL_ACCESS = "full-access"
SEND_AS = "send-as"
SEND_ON_BEHALF = "send-on-behalf"
TRUSTED_SENDER = "trusted-sender"

REMOVE, KEEP, REVIEW = "remove", "keep", "review"

#: The Exchange admin operations that grant or take away what this module dates.
AUDIT_OPERATIONS = ("Add-MailboxPermission", "Remove-MailboxPermission", "Add-RecipientPermission",
                    "Remove-RecipientPermission", "Set-Mailbox", "Set-MailboxJunkEmailConfiguration")
_AUDIT_PARAMETERS = ("Identity", "User", "Trustee", "AccessRights", "GrantSendOnBehalfTo", "TrustedSendersAndDomains")
_PRINCIPAL_PARAMETERS = ("User", "Trustee", "GrantSendOnBehalfTo")

# Exchange's own principals on every mailbox (Get-MailboxPermission's documented default entries).
_SYSTEM_NAMES = frozenset({
    "self", "exchange servers", "exchange trusted subsystem", "managed availability servers",
    "organization management", "domain admins", "enterprise admins", "administrator",
    "exchange windows permissions", "public folder management", "delegated setup",
})


def norm(value: Any) -> str:
    """An identity as compared here: trimmed, lower case, without an ``smtp:`` prefix."""
    text = str(value if value is not None else "").strip().strip('"').strip("'").strip().lower()
    return text[5:] if text.startswith("smtp:") else text


def keys_of(*values: Any) -> frozenset[str]:
    """The normalised, non-empty identities among ``values`` (strings or lists of them)."""
    out: set[str] = set()
    for value in values:
        for item in (value if isinstance(value, (list, tuple, set, frozenset)) else [value]):
            key = norm(item)
            if key:
                out.add(key)
    return frozenset(out)


def mailbox_keys(row: dict[str, Any]) -> frozenset[str]:
    """Every way the audit log may name a mailbox, from its Get-Mailbox row."""
    return keys_of(row.get("UserPrincipalName"), row.get("PrimarySmtpAddress"), row.get("Alias"), row.get("Name"),
                   row.get("DisplayName"), row.get("Identity"), row.get("ExternalDirectoryObjectId"),
                   row.get("ExchangeGuid"), row.get("Guid"), row.get("DistinguishedName"))


def matches(value: Any, keys: frozenset[str]) -> bool:
    """Does an audit value name one of ``keys``? An object path (``.../contoso.onmicrosoft.com/Adele``)
    matches by its last segment too."""
    key = norm(value)
    if not key:
        return False
    return key in keys or key.rsplit("/", 1)[-1] in keys


def is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "$true")


def is_system_trustee(value: Any) -> bool:
    """A principal Exchange or Windows owns (never a delegate a person granted)."""
    key = norm(value)
    return (not key or "\\" in key or key.startswith("s-1-") or key in _SYSTEM_NAMES
            or key.rsplit("\\", 1)[-1] in _SYSTEM_NAMES)


def rights_list(value: Any) -> list[str]:
    """AccessRights as a list, whether the API sent an array or a comma-separated string."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def permission_entries(rows: Iterable[dict[str, Any]], trustee_field: str) -> tuple[list[dict[str, Any]], int]:
    """(delegate entries, how many entries were left alone) from Get-MailboxPermission (``User``)
    or Get-RecipientPermission (``Trustee``) rows: inherited, denied and system entries are left alone."""
    delegates: list[dict[str, Any]] = []
    untouched = 0
    for row in rows:
        trustee = row.get(trustee_field) if row.get(trustee_field) is not None else row.get("User")
        if is_true(row.get("IsInherited")) or is_true(row.get("Deny")) or \
                str(row.get("AccessControlType") or "").lower() == "deny" or is_system_trustee(trustee):
            untouched += 1
            continue
        delegates.append({"identity": row.get("Identity"), "trustee": str(trustee),
                          "access_rights": rights_list(row.get("AccessRights"))})
    return delegates, untouched


# -- the unified audit log ------------------------------------------------------------------------------


def _when(value: Any) -> str | None:
    """An audit time as ISO 8601 UTC (the log writes UTC without a zone)."""
    if not value:
        return None
    try:
        moment = parse_timestamp(str(value))
    except ValueError:
        try:
            moment = datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)
        except ValueError:
            return None
    return iso_exact(moment)


def parse_audit_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compact events from Search-UnifiedAuditLog rows (``AuditData`` is a JSON string):
    ``{"op", "at", "object", "params", "by"}``; failed or unreadable records are dropped."""
    events = []
    for row in rows:
        data = row.get("AuditData")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                continue
        if not isinstance(data, dict):
            continue
        if str(data.get("ResultStatus", "True")).lower() in ("false", "failed", "failure"):
            continue
        at = _when(data.get("CreationTime") or row.get("CreationDate"))
        op = str(data.get("Operation") or row.get("Operations") or "")
        if not at or not op:
            continue
        params = {}
        for param in data.get("Parameters") or []:
            if isinstance(param, dict) and param.get("Name") in _AUDIT_PARAMETERS:
                params[str(param["Name"])] = param.get("Value")
        events.append({"op": op, "at": at, "object": data.get("ObjectId") or params.get("Identity") or "",
                       "params": params, "by": data.get("UserId") or row.get("UserIds") or ""})
    events.sort(key=lambda e: str(e["at"]), reverse=True)
    return events


def relevant_events(events: Iterable[dict[str, Any]], mailbox: frozenset[str], user: frozenset[str]) -> list[dict[str, Any]]:
    """The events about the user's mailbox, or naming the user as the one given a right."""
    out = []
    for event in events:
        params = event.get("params") or {}
        about_mailbox = matches(event.get("object"), mailbox) or matches(params.get("Identity"), mailbox)
        names_user = any(name in user for p in _PRINCIPAL_PARAMETERS for name in _names(params.get(p)))
        if about_mailbox or names_user:
            out.append(event)
    return out


_HASH_PART = re.compile(r"\b(add|remove)\s*=\s*([^;}]*)", re.IGNORECASE)


def _split(text: str) -> list[str]:
    return [norm(part) for part in re.split(r"[,;]", text) if norm(part)]


def value_changes(value: Any) -> tuple[set[str], set[str]]:
    """(added, removed) by a multi-valued parameter: ``@{Add=...; Remove=...}`` (or its JSON
    hashtable form) changes the list; a plain value (or list) replaces it, i.e. adds what it names."""
    if isinstance(value, dict):
        added = {norm(v) for k, v in value.items() if k.lower() == "add" for v in (v if isinstance(v, list) else [v])}
        removed = {norm(v) for k, v in value.items() if k.lower() == "remove" for v in (v if isinstance(v, list) else [v])}
        return {a for a in added if a}, {r for r in removed if r}
    if isinstance(value, list):
        return {norm(v) for v in value if norm(v)}, set()
    text = str(value or "")
    if text.strip().startswith("@{"):
        added, removed = set(), set()
        for verb, items in _HASH_PART.findall(text):
            (added if verb.lower() == "add" else removed).update(_split(items))
        return added, removed
    return set(_split(text)), set()


def _names(value: Any) -> set[str]:
    added, removed = value_changes(value)
    return added | removed


def grant_events(events: Iterable[dict[str, Any]], kind: str, mailbox: frozenset[str], trustee: frozenset[str],
                 entry: str = "") -> list[dict[str, str]]:
    """The audit events that granted (``add``) or took away (``remove``) one entry, newest first.

    ``kind``: FULL_ACCESS / SEND_AS (by mailbox and trustee), SEND_ON_BEHALF (by mailbox and trustee),
    TRUSTED_SENDER (by mailbox and the ``entry`` itself)."""
    out = []
    for event in events:
        op, params = event.get("op", ""), event.get("params") or {}
        if not (matches(event.get("object"), mailbox) or matches(params.get("Identity"), mailbox)):
            continue
        change = None
        if kind in (FULL_ACCESS, SEND_AS):
            cmdlets = ("Add-MailboxPermission", "Remove-MailboxPermission") if kind == FULL_ACCESS else \
                ("Add-RecipientPermission", "Remove-RecipientPermission")
            who = params.get("User") if kind == FULL_ACCESS else params.get("Trustee")
            rights = {r.lower() for r in rights_list(params.get("AccessRights"))}
            wanted = "fullaccess" if kind == FULL_ACCESS else "sendas"
            if op in cmdlets and matches(who, trustee) and (not rights or wanted in rights):
                change = "add" if op.startswith("Add-") else "remove"
        elif kind == SEND_ON_BEHALF and op == "Set-Mailbox" and "GrantSendOnBehalfTo" in params:
            added, removed = value_changes(params["GrantSendOnBehalfTo"])
            change = "add" if added & trustee else ("remove" if removed & trustee else None)
        elif kind == TRUSTED_SENDER and op == "Set-MailboxJunkEmailConfiguration" and "TrustedSendersAndDomains" in params:
            added, removed = value_changes(params["TrustedSendersAndDomains"])
            change = "add" if norm(entry) in added else ("remove" if norm(entry) in removed else None)
        if change:
            out.append({"at": event["at"], "change": change, "by": str(event.get("by") or "")})
    out.sort(key=lambda e: e["at"], reverse=True)
    return out


@dataclass(frozen=True)
class AuditState:
    """What the shared audit read gave this step: ``available`` False when it could not be read."""

    available: bool
    complete: bool = True
    since: str = ""
    error: str = ""
    source: str = "unified audit log"
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Dating:
    decision: str  # REMOVE | KEEP | REVIEW
    granted_at: str | None
    reason: str


def date_grant(found: list[dict[str, str]], cut: str, audit: AuditState, verb: str = "granted") -> Dating:
    """The decision for one present entry from its grant events (newest first) and the cut-off."""
    if not audit.available:
        return Dating(REVIEW, None, f"the {audit.source} could not be read ({audit.error}): it cannot be dated")
    adds = [e for e in found if e["change"] == "add"]
    threshold = parse_timestamp(cut)
    late = [e for e in adds if parse_timestamp(e["at"]) >= threshold]
    if late:
        return Dating(REMOVE, late[0]["at"], f"{verb} {late[0]['at']}, after the cut-off {cut}")
    if not found:
        since = f" (searched from {audit.since})" if audit.since else ""
        return Dating(REVIEW, None, f"no event in the {audit.source}{since} shows it {verb}; one made minutes ago may "
                                    "not be searchable yet: it cannot be dated")
    if found[0]["change"] == "remove":
        return Dating(REVIEW, None, f"the {audit.source}'s last event for it removed it ({found[0]['at']}), yet it is "
                                    "present: it was granted again after what the log shows")
    if not audit.complete:
        return Dating(REVIEW, adds[0]["at"], f"{verb} {adds[0]['at']}, before the cut-off, but the {audit.source} "
                                              "search was cut short: a later one may be missing")
    return Dating(KEEP, adds[0]["at"], f"{verb} {adds[0]['at']}, before the cut-off {cut}")


def held_full_access_candidates(events: Iterable[dict[str, Any]], own: frozenset[str], user: frozenset[str]) -> list[str]:
    """Mailboxes the audit log shows the user was given FullAccess on (Exchange has no reverse
    lookup for FullAccess: the alternative is one Get-MailboxPermission per mailbox in the tenant)."""
    seen: dict[str, str] = {}
    for event in events:
        params = event.get("params") or {}
        if event.get("op") != "Add-MailboxPermission" or not matches(params.get("User"), user):
            continue
        target = str(event.get("object") or params.get("Identity") or "").strip()
        if target and not matches(target, own) and norm(target) not in seen:
            seen[norm(target)] = target
    return list(seen.values())


def hashtable(verb: str, values: str | list[str]) -> dict[str, Any]:
    """A multi-valued parameter's ``@{Add=...}`` / ``@{Remove=...}`` as the admin API takes it."""
    return {"@odata.type": "#Exchange.GenericHashTable", verb: values}


#: Warnings (or error texts) meaning the entry was not there any more: the removal is done.
ALREADY_GONE = ("ace doesn't exist", "ace isn't present", "ace does not exist", "ace is not present",
                "no settings of", "couldn't be found", "isn't in the list")


def already_gone(texts: Iterable[str]) -> bool:
    lowered = " ".join(texts).lower()
    return any(marker in lowered for marker in ALREADY_GONE)
