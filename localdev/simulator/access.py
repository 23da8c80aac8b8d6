"""Who else can get into a mailbox or act as the user: the simulator's state for issue 17.

Mailbox permissions (FullAccess ...), recipient permissions (SendAs), GrantSendOnBehalfTo, the
junk-mail configuration, service principals, delegated permission grants (oAuth2PermissionGrant),
app role assignments, and the unified audit log (Exchange admin records) that dates the first
four. Seeded from seed.json (per user: ``mailboxPermissions``, ``sendAs``, ``sendOnBehalf``,
``junkEmail``, ``appRoleAssignments``; top level: ``servicePrincipals``, ``oauth2PermissionGrants``),
changed only through the simulated cmdlets and Graph calls, every change recorded as a mutation
(and, for Exchange, as a unified audit record by the app, like the service does).

Documented defaults modelled (Get-MailboxPermission.md): every mailbox has ``NT AUTHORITY\\SELF``
with FullAccess and ReadPermission *directly assigned* (not inherited), and inherited entries for
NT AUTHORITY\\SYSTEM / NETWORK, Exchange's server groups and denied administrator groups;
Get-RecipientPermission shows ``NT AUTHORITY\\SELF`` with SendAs.
"""
from __future__ import annotations

import copy
import json
import uuid
from typing import Any, Iterable, Mapping

from .odata import iso, utcnow

# The tenant state and its users (state.py builds this module's object; typed loosely here so that
# state.py may import this module without a cycle).
TenantState = Any
User = Any


class SeedError(ValueError):
    """The seed is not usable (state.py re-exports it)."""

SELF = "NT AUTHORITY\\SELF"
# Get-MailboxPermission.md, "default entries": (trustee, rights, inherited, deny)
DEFAULT_MAILBOX_ACES = (
    (SELF, ["FullAccess", "ReadPermission"], False, False),
    ("NT AUTHORITY\\SYSTEM", ["FullAccess"], True, False),
    ("NT AUTHORITY\\NETWORK", ["ReadPermission"], True, False),
    ("EURPRD01\\Administrator", ["FullAccess"], True, True),
    ("EURPRD01\\Domain Admins", ["FullAccess"], True, True),
    ("EURPRD01\\Enterprise Admins", ["FullAccess"], True, True),
    ("EURPRD01\\Organization Management", ["FullAccess"], True, True),
    ("EURPRD01\\Exchange Servers", ["FullAccess", "ReadPermission"], True, False),
    ("EURPRD01\\Exchange Trusted Subsystem", ["FullAccess"], True, False),
    ("EURPRD01\\Managed Availability Servers", ["ReadPermission"], True, False),
)
MAILBOX_RIGHTS = ("FullAccess", "SendAs", "ExternalAccount", "DeleteItem", "ReadPermission", "ChangePermission",
                  "ChangeOwner")
CONSENT_APP_ID = "00000003-0000-0000-c000-000000000000"


def _rights(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(i).strip() for i in items if str(i).strip()]


class AccessState:
    """The access-related parts of one TenantState."""

    def __init__(self, st: TenantState) -> None:
        self.st = st
        self.mailbox_aces: dict[str, list[dict]] = {}  # user id -> explicit ACEs (non-default)
        self.send_as: dict[str, list[dict]] = {}  # user id -> SendAs entries
        self.send_on_behalf: dict[str, list[str]] = {}  # user id -> trustee user ids
        self.junk: dict[str, dict] = {}  # user id -> junk-mail configuration
        self.app_roles: dict[str, list[dict]] = {}  # user id -> appRoleAssignments
        self.service_principals: dict[str, dict] = {}
        self.grants: dict[str, dict] = {}  # oauth2PermissionGrants by id
        self.unified_audit: list[dict] = []  # Exchange admin records, oldest first
        self._pending: list[tuple[Any, dict]] = []

    # -- seeding ----------------------------------------------------------------------------------

    def load_user(self, user: User, spec: Mapping[str, Any]) -> None:
        """The per-user parts; trustees may name users seeded later, so they resolve in ``finish``."""
        if user.mailbox is not None:
            self.junk[user.id] = {"Enabled": True, "TrustedListsOnly": False, "ContactsTrusted": False,
                                  "TrustedSendersAndDomains": [], "BlockedSendersAndDomains": [],
                                  "TrustedRecipientsAndDomains": []}
        if any(key in spec for key in ("mailboxPermissions", "sendAs", "sendOnBehalf", "junkEmail", "appRoleAssignments")):
            self._pending.append((user, dict(spec)))

    def finish(self, seed: Mapping[str, Any]) -> None:
        """Resolve the per-user specs (trustees), then the tenant-wide ones."""
        for sp in seed.get("servicePrincipals", []):
            sp_id = str(sp.get("id") or uuid.uuid5(uuid.UUID(self.st.tenant_id), "sp/" + sp["displayName"]))
            self.service_principals[sp_id] = {"id": sp_id, "appId": sp.get("appId") or str(uuid.uuid4()),
                                              "displayName": sp["displayName"],
                                              "appOwnerOrganizationId": sp.get("appOwnerOrganizationId"),
                                              "publisherName": sp.get("publisherName"),
                                              "servicePrincipalType": "Application"}
        for user, spec in self._pending:
            self._load_rights(user, spec)
        self._pending = []
        for grant in seed.get("oauth2PermissionGrants", []):
            self._seed_grant(grant)

    def _who(self, ref: str) -> User:
        user = self.st.find_mailbox(ref) or self.st.find_user(ref)
        if user is None:
            raise SeedError(f"unknown principal {ref!r}")
        return user

    def _sp(self, ref: str) -> dict:
        for sp in self.service_principals.values():
            if ref in (sp["id"], sp["appId"], sp["displayName"]):
                return sp
        raise SeedError(f"unknown service principal {ref!r}")

    def _load_rights(self, user: User, spec: Mapping[str, Any]) -> None:
        for ace in spec.get("mailboxPermissions", []):
            trustee = self._who(ace["user"])
            rights = _rights(ace.get("accessRights", ["FullAccess"]))
            self.mailbox_aces.setdefault(user.id, []).append({"trustee": trustee.id, "rights": rights})
            if ace.get("grantedAt"):
                self.audit_admin("Add-MailboxPermission", user.upn, ace.get("grantedBy") or f"admin@{self.st.domain}",
                                 {"Identity": user.upn, "User": trustee.upn, "AccessRights": ",".join(rights),
                                  "InheritanceType": "All"}, ace["grantedAt"])
        for entry in spec.get("sendAs", []):
            trustee = self._who(entry["trustee"])
            self.send_as.setdefault(user.id, []).append({"trustee": trustee.id})
            if entry.get("grantedAt"):
                self.audit_admin("Add-RecipientPermission", user.upn, entry.get("grantedBy") or f"admin@{self.st.domain}",
                                 {"Identity": user.upn, "Trustee": trustee.upn, "AccessRights": "SendAs"},
                                 entry["grantedAt"])
        for entry in spec.get("sendOnBehalf", []):
            trustee = self._who(entry["trustee"])
            self.send_on_behalf.setdefault(user.id, []).append(trustee.id)
            if entry.get("grantedAt"):
                self.audit_admin("Set-Mailbox", user.upn, entry.get("grantedBy") or user.upn,
                                 {"Identity": user.upn, "GrantSendOnBehalfTo": f'@{{Add="{trustee.upn}"}}'},
                                 entry["grantedAt"])
        junk = spec.get("junkEmail") or {}
        if junk and user.id in self.junk:
            config = self.junk[user.id]
            for key in ("TrustedSendersAndDomains", "BlockedSendersAndDomains"):
                for item in junk.get(key, []):
                    value = item["value"] if isinstance(item, Mapping) else str(item)
                    config[key].append(value)
                    # OWA and the cmdlet are audited as Set-MailboxJunkEmailConfiguration; Outlook desktop is not.
                    if isinstance(item, Mapping) and item.get("addedAt") and item.get("via", "owa") != "outlook":
                        self.audit_admin("Set-MailboxJunkEmailConfiguration", user.upn, user.upn,
                                         {"Identity": user.upn, key: f'@{{Add="{value}"}}'}, item["addedAt"])
        for assignment in spec.get("appRoleAssignments", []):
            sp = self._sp(assignment["resource"])
            self.app_roles.setdefault(user.id, []).append({
                "id": assignment.get("id") or str(uuid.uuid4()).replace("-", "")[:43],
                "deletedDateTime": None, "appRoleId": assignment.get("appRoleId", "00000000-0000-0000-0000-000000000000"),
                "createdDateTime": assignment.get("createdDateTime") or iso(self.st.now),
                "principalDisplayName": user.display_name, "principalId": user.id, "principalType": "User",
                "resourceDisplayName": sp["displayName"], "resourceId": sp["id"]})

    def _seed_grant(self, spec: Mapping[str, Any]) -> None:
        client, resource = self._sp(spec["client"]), self._sp(spec["resource"])
        principal = self._who(spec["principal"]) if spec.get("principal") else None
        grant_id = spec.get("id") or str(uuid.uuid4()).replace("-", "")
        consent_type = "Principal" if principal else "AllPrincipals"
        grant = {"clientId": client["id"], "consentType": consent_type, "id": grant_id,
                 "principalId": principal.id if principal else None, "resourceId": resource["id"],
                 "scope": spec.get("scope", " User.Read")}
        self.grants[grant_id] = grant
        if spec.get("consentedAt"):
            self.consent_audit(grant, client, principal, spec["consentedAt"], spec.get("consentedBy", "user"))

    # -- audit records ------------------------------------------------------------------------------

    def audit_admin(self, operation: str, target: str, by: str, parameters: Mapping[str, Any], at: str | None = None) -> dict:
        """A unified audit log record of an Exchange admin cmdlet (record type ExchangeAdmin)."""
        when = str(at or iso(utcnow())).replace("Z", "")
        record = {"CreationTime": when[:19], "Id": str(uuid.uuid4()), "Operation": operation,
                  "OrganizationId": self.st.tenant_id, "RecordType": 1, "ResultStatus": "True", "UserKey": by,
                  "UserType": 2, "Version": 1, "Workload": "Exchange", "ObjectId": target, "UserId": by,
                  "ExternalAccess": False, "OrganizationName": self.st.domain, "OriginatingServer": "AM0PR01MB0001",
                  "Parameters": [{"Name": k, "Value": _param(v)} for k, v in parameters.items()]}
        self.unified_audit.append(record)
        self.unified_audit.sort(key=lambda r: r["CreationTime"])
        return record

    def consent_audit(self, grant: dict, client: dict, principal: "User | None", at: str, by: str = "user") -> dict:
        """directoryAudit "Consent to application" (ApplicationManagement, Core Directory): the target is
        the client service principal; ConsentAction.Permissions carries the grant (Sentinel's parsing)."""
        admin = by != "user" or principal is None
        if principal is not None and not admin:
            initiated = {"app": None, "user": {"id": principal.id, "displayName": None,
                                               "userPrincipalName": principal.upn, "ipAddress": "185.220.101.47",
                                               "userType": None, "homeTenantId": None, "homeTenantName": None}}
        else:
            initiated = {"app": None, "user": {"id": str(uuid.uuid5(uuid.UUID(self.st.tenant_id), "admin")),
                                               "displayName": None, "userPrincipalName": f"admin@{self.st.domain}",
                                               "ipAddress": "10.0.0.4", "userType": None, "homeTenantId": None,
                                               "homeTenantName": None}}
        permissions = (f"[] => [[Id: {grant['id']}, ClientId: {grant['clientId']}, "
                       f"PrincipalId: {grant['principalId'] or ''}, ResourceId: {grant['resourceId']}, "
                       f"ConsentType: {grant['consentType']}, Scope: {grant['scope'].strip()}, CreatedDateTime: , "
                       "LastModifiedDateTime ]]; ")

        def quoted(value: str) -> str:
            return json.dumps(value)

        event = {
            "id": "Directory_" + str(uuid.uuid4()), "category": "ApplicationManagement",
            "correlationId": str(uuid.uuid4()), "result": "success", "resultReason": "",
            "activityDisplayName": "Consent to application", "activityDateTime": at,
            "loggedByService": "Core Directory", "operationType": "Assign", "initiatedBy": initiated,
            "targetResources": [{"id": client["id"], "displayName": client["displayName"], "type": "ServicePrincipal",
                                 "userPrincipalName": None, "groupType": None, "modifiedProperties": [
                                     {"displayName": "ConsentContext.IsAdminConsent", "oldValue": None,
                                      "newValue": quoted(str(admin and principal is None))},
                                     {"displayName": "ConsentContext.IsAppOnly", "oldValue": None, "newValue": quoted("False")},
                                     {"displayName": "ConsentContext.OnBehalfOfAll", "oldValue": None,
                                      "newValue": quoted(str(principal is None))},
                                     {"displayName": "ConsentContext.Tags", "oldValue": None, "newValue": quoted("WindowsAzureActiveDirectoryIntegratedApp")},
                                     {"displayName": "ConsentAction.Permissions", "oldValue": None,
                                      "newValue": quoted(permissions)},
                                     {"displayName": "TargetId.ServicePrincipalNames", "oldValue": None,
                                      "newValue": quoted(client["appId"])}]}],
            "additionalDetails": [{"key": "User-Agent", "value": "Mozilla/5.0"}, {"key": "AppId", "value": client["appId"]}],
        }
        self.st.audits.append(event)
        self.st.audits.sort(key=lambda e: e["activityDateTime"])
        return event

    def app_audit(self, activity: str, target: Mapping[str, Any], category: str = "ApplicationManagement",
                  operation: str = "Unassign") -> None:
        """A directory audit record of a change the responder's app made."""
        st = self.st
        self.st.audits.append({
            "id": "Directory_" + str(uuid.uuid4()), "category": category, "correlationId": str(uuid.uuid4()),
            "result": "success", "resultReason": "", "activityDisplayName": activity,
            "activityDateTime": iso(utcnow()), "loggedByService": "Core Directory", "operationType": operation,
            "initiatedBy": {"app": {"appId": st.mi_client_id, "displayName": st.mi_display_name,
                                    "servicePrincipalId": st.mi_object_id, "servicePrincipalName": None}, "user": None},
            "targetResources": [dict(target, modifiedProperties=[])], "additionalDetails": []})

    # -- rows -----------------------------------------------------------------------------------------

    def alias(self, user: User) -> str:
        return user.props.get("mailNickname") or user.upn.split("@")[0]

    def mailbox_rows(self, user: User, trustee: User | None = None) -> list[dict]:
        """Get-MailboxPermission rows: the documented defaults, then the explicit entries."""
        rows = []
        for name, rights, inherited, deny in DEFAULT_MAILBOX_ACES:
            rows.append(self._ace_row(user, name, rights, inherited, deny))
        for ace in self.mailbox_aces.get(user.id, []):
            who = self.st.users.get(ace["trustee"])
            rows.append(self._ace_row(user, who.upn if who else ace["trustee"], ace["rights"], False, False))
        if trustee is not None:
            rows = [r for r in rows if r["User"].lower() == trustee.upn.lower()]
        return rows

    def _ace_row(self, user: User, trustee: str, rights: list[str], inherited: bool, deny: bool) -> dict:
        return {"Identity": self.alias(user), "User": trustee, "AccessRights": list(rights), "IsInherited": inherited,
                "Deny": deny, "InheritanceType": "All", "IsValid": True, "ObjectState": "Unchanged"}

    def recipient_rows(self, user: User) -> list[dict]:
        """Get-RecipientPermission rows of one recipient (SELF's SendAs first)."""
        rows = [self._sendas_row(user, SELF)]
        for entry in self.send_as.get(user.id, []):
            who = self.st.users.get(entry["trustee"])
            rows.append(self._sendas_row(user, who.upn if who else entry["trustee"]))
        return rows

    def _sendas_row(self, user: User, trustee: str) -> dict:
        return {"Identity": self.alias(user), "Trustee": trustee, "AccessControlType": "Allow",
                "AccessRights": ["SendAs"], "IsInherited": False, "InheritanceType": "None", "IsValid": True,
                "ObjectState": "Unchanged"}

    def render_grant(self, grant: Mapping[str, Any]) -> dict:
        return {k: grant[k] for k in ("clientId", "consentType", "id", "principalId", "resourceId", "scope")}

    def dump_user(self, user: User) -> dict:
        return {
            "mailbox_permissions": [dict(a, trustee_upn=(self.st.users[a["trustee"]].upn if a["trustee"] in self.st.users
                                                         else a["trustee"])) for a in self.mailbox_aces.get(user.id, [])],
            "send_as": [self.st.users[e["trustee"]].upn if e["trustee"] in self.st.users else e["trustee"]
                        for e in self.send_as.get(user.id, [])],
            "send_on_behalf": [self.st.users[t].upn if t in self.st.users else t for t in self.send_on_behalf.get(user.id, [])],
            "junk_email": copy.deepcopy(self.junk.get(user.id)),
            "oauth2_grants": [self.render_grant(g) for g in self.grants.values() if g.get("principalId") == user.id],
            "app_role_assignments": copy.deepcopy(self.app_roles.get(user.id, [])),
        }

    def records(self, operations: Iterable[str] | None = None) -> list[dict]:
        wanted = {o.lower() for o in operations} if operations else None
        return [r for r in self.unified_audit if wanted is None or r["Operation"].lower() in wanted]


def _param(value: Any) -> str:
    """A cmdlet parameter as the unified audit log writes it (a string; lists comma-separated;
    a hashtable as ``@{Add="a","b"; Remove="c"}``: assumed, the log's rendering is not documented)."""
    if isinstance(value, Mapping):
        parts = []
        for key, items in value.items():
            if key.startswith("@odata"):
                continue
            items = items if isinstance(items, (list, tuple)) else [items]
            parts.append(f"{key.capitalize()}=" + ",".join(f'"{i}"' for i in items))
        return "@{" + "; ".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)
