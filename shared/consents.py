"""OAuth consent grants and app role assignments of a user: which are the attacker's (pure).

- A delegated permission grant (``oAuth2PermissionGrant``) carries no creation time. It is dated by
  the directory audit log's "Consent to application" events (the user's own consent, or an
  admin's on the user's behalf): matched by the grant id inside ``ConsentAction.Permissions`` when
  the event carries it, else by the client service principal and the user. Consented at or after
  the cut-off: removed; the latest consent before it: kept; no event (older than the log's 30 days,
  or not there yet): listed for review. "No event" never means "old".
- Only the user's own grants are touched (``consentType`` Principal, ``principalId`` the user).
  Tenant-wide grants (``AllPrincipals``, admin consent) are never touched: they are reported, because
  an app with both keeps working for the user through the admin grant.
- App role assignments carry ``createdDateTime``. Only the user's own (``principalType`` User) are
  judged; ``GET /users/{id}/appRoleAssignments`` also lists those of groups the user is in.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from .cutoff import after_cutoff
from .mailbox_rights import KEEP, REMOVE, REVIEW, AuditState

CONSENT_ACTIVITY = "consent to application"
_GRANT_ID = re.compile(r"(?<![A-Za-z])Id:\s*([A-Za-z0-9_\-]{8,})")
_PRINCIPAL_ID = re.compile(r"PrincipalId:\s*([0-9A-Fa-f\-]{36})")
_CONSENT_TYPE = re.compile(r"ConsentType:\s*([A-Za-z]+)")
_SCOPE = re.compile(r"Scope:\s*([^,\]]*)")


def _lower(value: Any) -> str:
    return str(value or "").strip().lower()


def _prop(target: dict[str, Any], name: str) -> str:
    for prop in target.get("modifiedProperties") or []:
        if _lower(prop.get("displayName")) == name.lower():
            return str(prop.get("newValue") or "").strip().strip('"').replace('\\"', '"')
    return ""


def _flag(target: dict[str, Any], name: str) -> bool:
    return _prop(target, name).strip('"').lower() == "true"


def scopes_of(scope: Any) -> list[str]:
    """A grant's space-separated ``scope`` as a list (the documented example has a leading space)."""
    return [s for s in str(scope or "").split() if s]


def consent_events(audits: Iterable[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    """The successful "Consent to application" events in ``audits``, newest first, as
    ``{"at", "client_id", "app", "grant_ids", "principal_ids", "consent_types", "scopes",
    "admin_consent", "on_behalf_of_all", "by_user"}``."""
    out = []
    for event in audits:
        if _lower(event.get("activityDisplayName")) != CONSENT_ACTIVITY or _lower(event.get("result") or "success") != "success":
            continue
        targets = event.get("targetResources") or []
        target = next((t for t in targets if _lower(t.get("type") or t.get("Type")) == "serviceprincipal"),
                      targets[0] if targets else {})
        permissions = _prop(target, "ConsentAction.Permissions")
        initiator = ((event.get("initiatedBy") or {}).get("user") or {}).get("id")
        out.append({
            "at": event.get("activityDateTime") or "",
            "client_id": _lower(target.get("id")),
            "app": target.get("displayName") or "",
            "grant_ids": sorted(set(_GRANT_ID.findall(permissions))),
            "principal_ids": sorted({p.lower() for p in _PRINCIPAL_ID.findall(permissions)}),
            "consent_types": sorted(set(_CONSENT_TYPE.findall(permissions))),
            "scopes": sorted({s for found in _SCOPE.findall(permissions) for s in found.split()}),
            "admin_consent": _flag(target, "ConsentContext.IsAdminConsent"),
            "on_behalf_of_all": _flag(target, "ConsentContext.OnBehalfOfAll"),
            "by_user": _lower(initiator) == _lower(user_id),
        })
    out.sort(key=lambda e: e["at"], reverse=True)
    return out


def grant_consents(grant: dict[str, Any], events: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    """The consent events that made (or widened) this grant, newest first."""
    by_id = [e for e in events if grant.get("id") and grant["id"] in e["grant_ids"]]
    if by_id:
        return by_id
    client = _lower(grant.get("clientId"))
    return [e for e in events if e["client_id"] == client and not e["on_behalf_of_all"]
            and (e["by_user"] or _lower(user_id) in e["principal_ids"])]


def is_users_own(grant: dict[str, Any], user_id: str) -> bool:
    return grant.get("consentType") == "Principal" and _lower(grant.get("principalId")) == _lower(user_id)


def plan_grants(grants: Iterable[dict[str, Any]], audit: AuditState, user_id: str, cut: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the user's grants, each with ``decision``/``reason``/``consented_at``; other grants, never touched)."""
    events = consent_events(audit.events, user_id) if audit.available else []
    own, others = [], []
    for grant in grants:
        entry = {"kind": "oauth2-grant", "id": grant.get("id"), "clientId": grant.get("clientId"),
                 "resourceId": grant.get("resourceId"), "consentType": grant.get("consentType"),
                 "principalId": grant.get("principalId"), "scope": str(grant.get("scope") or "").strip(),
                 "scopes": scopes_of(grant.get("scope"))}
        if not is_users_own(grant, user_id):
            others.append({**entry, "reason": "not the user's own consent (AllPrincipals or another principal): never touched"})
            continue
        found = grant_consents(grant, events, user_id)
        if not audit.available:
            entry.update(decision=REVIEW, consented_at=None,
                         reason=f"the directory audit log could not be read ({audit.error}): it cannot be dated")
        elif not found:
            since = f" since {audit.since}" if audit.since else ""
            entry.update(decision=REVIEW, consented_at=None,
                         reason=f"no consent event in the directory audit log{since} (it keeps 30 days; a consent made "
                                "minutes ago may not be there yet): it cannot be dated")
        else:
            latest = found[0]["at"]
            entry["consented_at"] = latest
            entry["dated_by"] = "directory audit: Consent to application"
            if found[0]["app"]:
                entry["client_app"] = {"displayName": found[0]["app"]}
            if after_cutoff(latest, cut):
                entry.update(decision=REMOVE, reason=f"consented {latest}, after the cut-off {cut}")
            elif not audit.complete:
                entry.update(decision=REVIEW, reason=f"consented {latest}, before the cut-off, but the audit read was "
                                                     "cut short: a later consent may be missing")
            else:
                entry.update(decision=KEEP, reason=f"consented {latest}, before the cut-off {cut}")
        own.append(entry)
    return own, others


def plan_app_roles(assignments: Iterable[dict[str, Any]], user_id: str, cut: str, may_remove: bool) -> tuple[list[dict[str, Any]], int]:
    """(the user's own app role assignments with a decision, how many group assignments were left alone)."""
    own, groups = [], 0
    for row in assignments:
        if _lower(row.get("principalType")) != "user" or _lower(row.get("principalId")) != _lower(user_id):
            groups += 1
            continue
        entry = {"kind": "app-role-assignment", "id": row.get("id"), "appRoleId": row.get("appRoleId"),
                 "resourceId": row.get("resourceId"), "resourceDisplayName": row.get("resourceDisplayName"),
                 "principalId": row.get("principalId"), "createdDateTime": row.get("createdDateTime")}
        late = after_cutoff(row.get("createdDateTime"), cut)
        if late is None:
            entry.update(decision=REVIEW, reason="no createdDateTime: it cannot be dated")
        elif not late:
            entry.update(decision=KEEP, reason=f"assigned {row.get('createdDateTime')}, before the cut-off {cut}")
        elif may_remove:
            entry.update(decision=REMOVE, reason=f"assigned {row.get('createdDateTime')}, after the cut-off {cut}")
        else:
            entry.update(decision=REVIEW, reason=f"assigned {row.get('createdDateTime')}, after the cut-off {cut}; not "
                                                 "removed: REMOVE_APP_ROLE_ASSIGNMENTS is false (removal needs "
                                                 "AppRoleAssignment.ReadWrite.All, which can grant any app role)")
        own.append(entry)
    return own, groups
