"""Simulated Microsoft Graph endpoints (v1.0 and beta) used by the breach responder.

Wire formats follow the Graph call references (../shared/reference) and tests/fixtures/samples. Each handler is a
plain synchronous function `(state, request) -> GraphResponse`; it checks its permission first
via `rq.require(...)` (any-of), raises `GraphError` for error answers, and mutates state only
after every validation passed.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import logging
import re
import secrets
import string
import uuid
from typing import Any, Callable, Sequence

from .odata import (
    GRAPH_ROOT,
    GUID_RE,
    UPN_RE,
    GraphError,
    bad_request,
    compile_filter,
    iso,
    not_found_user,
    paginate,
    parse_iso,
    parse_select,
    utcnow,
)
from .state import (
    COLLECTION_TO_TYPE,
    METHOD_TYPES,
    RESET_ROLES_ADMIN,
    RESET_ROLES_NON_ADMIN,
    ROLE_DESCRIPTIONS,
    USER_DEFAULT_PROPERTIES,
    USER_PROPERTY_MAP,
    Group,
    TenantState,
    User,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------- permissions (any-of)
P_USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
P_PASSWORD = ("User-PasswordProfile.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
P_ENABLE = ("User.EnableDisableAccount.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
P_REVOKE = ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
P_CHECK_GROUPS = ("GroupMember.Read.All", "User.Read.All", "Directory.Read.All", "Group.Read.All",
                  "GroupMember.ReadWrite.All", "Group.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
P_GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "GroupMember.ReadWrite.All",
                "Group.ReadWrite.All", "Directory.ReadWrite.All")
P_GROUP_WRITE = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
P_MFA_READ = ("Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod")
P_MFA_WRITE = ("Policy.ReadWrite.AuthenticationMethod",)
P_METHODS_READ = ("UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All")
P_METHODS_WRITE = ("UserAuthenticationMethod.ReadWrite.All",)
P_METHOD_TYPE_WRITE = {
    "microsoftAuthenticator": "UserAuthMethod-MicrosoftAuthApp.ReadWrite.All",
    "phone": "UserAuthMethod-Phone.ReadWrite.All",
    "email": "UserAuthMethod-Email.ReadWrite.All",
    "softwareOath": "UserAuthMethod-SoftwareOATH.ReadWrite.All",
    "fido2": "UserAuthMethod-Passkey.ReadWrite.All",
    "temporaryAccessPass": "UserAuthMethod-TAP.ReadWrite.All",
    "windowsHelloForBusiness": "UserAuthMethod-WindowsHello.ReadWrite.All",
}
P_RISKY_READ = ("IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All")
P_RISKY_WRITE = ("IdentityRiskyUser.ReadWrite.All",)
P_RISK_EVENTS = ("IdentityRiskEvent.Read.All", "IdentityRiskEvent.ReadWrite.All")
P_ALERTS_READ = ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All")
P_ALERTS_WRITE = ("SecurityAlert.ReadWrite.All",)
P_RULES_READ = ("MailboxSettings.Read", "MailboxSettings.ReadWrite")
P_RULES_WRITE = ("MailboxSettings.ReadWrite",)
P_SEND = ("Mail.Send",)
P_MEMBER_OF = ("User.Read.All", "GroupMember.Read.All", "Group.Read.All", "Directory.Read.All",
               "Directory.ReadWrite.All")
P_ROLE_ASSIGNMENTS = ("RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
                      "RoleManagement.ReadWrite.Directory")
P_ROLE_ELIGIBILITY = ("RoleEligibilitySchedule.Read.Directory", "RoleManagement.Read.Directory",
                      "RoleManagement.Read.All", "RoleEligibilitySchedule.ReadWrite.Directory",
                      "RoleManagement.ReadWrite.Directory")
P_AUDIT = ("AuditLog.Read.All",)
# user-list-oauth2permissiongrants.md / oauth2permissiongrant-list|get|delete.md / user-list-approleassignments.md /
# user-delete-approleassignments.md / serviceprincipal-get.md (application permissions, least privileged first)
P_GRANTS_READ = ("Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All")
P_GRANTS_WRITE = ("DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All")
P_APP_ROLES_READ = ("Directory.Read.All", "AppRoleAssignment.ReadWrite.All", "Directory.ReadWrite.All")
P_APP_ROLES_WRITE = ("AppRoleAssignment.ReadWrite.All",)
P_SP_READ = ("Application.Read.All", "Directory.Read.All", "Application.ReadWrite.All", "Directory.ReadWrite.All")
P_SCORES = ("SecurityEvents.Read.All", "SecurityEvents.ReadWrite.All")

PASSWORD_SYMBOLS = set("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")
TAP_ALPHABET = string.ascii_letters + string.digits + "+-=#%&*@"


@dataclasses.dataclass
class GraphRequest:
    """One logical Graph request (a plain HTTP request or one $batch item)."""

    method: str
    version: str
    segments: list[str]
    query: dict[str, str]
    body: Any
    base_url: str
    request_id: str
    client_request_id: str | None
    granted: frozenset
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    user_id: str | None = None
    permission: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # the LOGGED_HEADERS the client sent

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name (only the logged ones are kept)."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def path(self) -> str:
        """'/v1.0/users/x' style path."""
        return "/" + self.version + "/" + "/".join(self.segments)

    @property
    def beta(self) -> bool:
        return self.version == "beta"

    def require(self, perms: Sequence[str]) -> str:
        """Any-of permission check: 403 Authorization_RequestDenied when none is granted."""
        for perm in perms:
            if perm in self.granted:
                self.permission = perm
                return perm
        self.permission = "missing:" + "|".join(perms)
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.",
                         permission=self.permission)

    def context(self, fragment: str) -> str:
        """@odata.context URL (on the real Graph host, like Graph does)."""
        return f"{GRAPH_ROOT}/{self.version}/$metadata#{fragment}"


@dataclasses.dataclass
class GraphResponse:
    """Status, body (JSON-able or None) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content_type: str | None = None  # None: Graph's JSON; a str body is sent as is with this type


Handler = Callable[[TenantState, GraphRequest], GraphResponse]


@dataclasses.dataclass
class Route:
    """One route: method + pattern ('{name}' placeholders) + handler."""

    method: str
    pattern: tuple[str, ...]
    handler: Handler
    versions: frozenset = frozenset({"v1.0", "beta"})


# ---------------------------------------------------------------------- helpers

def _user(st: TenantState, rq: GraphRequest, key: str) -> User:
    if not (GUID_RE.match(key) or UPN_RE.match(key)):
        raise bad_request(f"Invalid object identifier '{key}'.")
    user = st.find_user(key)
    if user is None:
        raise not_found_user(key)
    rq.user_id = user.id
    return user


def _group(st: TenantState, key: str) -> Group:
    if not GUID_RE.match(key):
        raise bad_request(f"Invalid object identifier '{key}'.")
    group = st.groups.get(key.lower())
    if group is None:
        raise not_found_user(key)
    return group


def _body_object(rq: GraphRequest) -> dict:
    if not isinstance(rq.body, dict):
        raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
    return rq.body


def _project_user(user: User, select: list[str] | None) -> dict:
    props = user.props
    names = select or USER_DEFAULT_PROPERTIES
    return {name: copy.copy(props.get(name)) for name in names}


def _mailbox(rq: GraphRequest, user: User) -> dict:
    if user.mailbox is None:
        raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                         "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
    return user.mailbox


def password_complexity_error(password: Any) -> str | None:
    """Entra's rule: 8-256 characters, 3 of the 4 classes, ASCII letters/digits/allowed symbols only."""
    message = ("The specified password does not comply with password complexity requirements. "
               "Please provide a different password.")
    if not isinstance(password, str) or not 8 <= len(password) <= 256:
        return message
    classes = 0
    classes += any(c.islower() and c.isascii() for c in password)
    classes += any(c.isupper() and c.isascii() for c in password)
    classes += any(c.isdigit() and c.isascii() for c in password)
    classes += any(c in PASSWORD_SYMBOLS for c in password)
    if classes < 3:
        return message
    if any(not (c.isascii() and (c.isalnum() or c in PASSWORD_SYMBOLS)) for c in password):
        return message
    return None


# ---------------------------------------------------------------------- users

def get_user(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_USER_READ)
    user = _user(st, rq, rq.params["user"])
    select = parse_select(rq.query, USER_PROPERTY_MAP, "user")
    if select:
        body = {"@odata.context": rq.context(f"users({','.join(select)})/$entity")}
    else:
        body = {"@odata.context": rq.context("users/$entity")}
    body.update(_project_user(user, select))
    return GraphResponse(200, body)


_USER_FILTER_PROPS = ("id", "userPrincipalName", "displayName", "mail", "accountEnabled", "onPremisesSyncEnabled",
                      "userType", "givenName", "surname", "mailNickname", "createdDateTime")


def list_users(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_USER_READ)
    select = parse_select(rq.query, USER_PROPERTY_MAP, "user")
    pred = compile_filter(rq.query.get("$filter"), _USER_FILTER_PROPS)
    users = [u for u in st.users.values() if pred(u.props)]
    page, next_link = paginate(users, rq.query, rq.base_url, rq.path, 100, 999)
    body: dict[str, Any] = {"@odata.context": rq.context(f"users({','.join(select)})" if select else "users")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [_project_user(u, select) for u in page]
    return GraphResponse(200, body)


def patch_user(st: TenantState, rq: GraphRequest) -> GraphResponse:
    body = _body_object(rq)
    allowed = {"passwordProfile", "accountEnabled"}
    for key in body:
        if key not in allowed:
            raise bad_request(f"Property '{key}' does not exist as a declared property or extension property.")
    if not body:
        raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
    profile = body.get("passwordProfile")
    if "passwordProfile" in body:
        rq.require(P_PASSWORD)
    if "accountEnabled" in body:
        rq.require(P_ENABLE)
    user = _user(st, rq, rq.params["user"])
    password = None
    force = None
    if "passwordProfile" in body:
        if not isinstance(profile, dict):
            raise bad_request("Invalid value specified for property 'passwordProfile' of resource 'User'.")
        for key in profile:
            if key not in ("password", "forceChangePasswordNextSignIn", "forceChangePasswordNextSignInWithMfa"):
                raise bad_request(f"Property '{key}' does not exist on type 'microsoft.graph.passwordProfile'.")
        force = profile.get("forceChangePasswordNextSignIn", False)
        if not isinstance(force, bool):
            raise bad_request("Invalid value specified for property 'forceChangePasswordNextSignIn'.")
        if "password" in profile:
            password = profile["password"]
            refusal = st.password_refusal(user)
            if refusal:  # microsoft-graph-docs-contrib#5768 (synced), user-update.md passwordProfile (federated)
                raise bad_request(refusal)
            roles = RESET_ROLES_ADMIN if user.admin_roles else RESET_ROLES_NON_ADMIN
            if not (st.directory_roles & roles):
                rq.permission = "missing-role:" + ("Privileged Authentication Administrator" if user.admin_roles
                                                   else "User Administrator")
                raise GraphError(403, "Authorization_RequestDenied",
                                 "Insufficient privileges to complete the operation.", permission=rq.permission)
            error = password_complexity_error(password)
            if error:
                raise bad_request(error)
    enabled = body.get("accountEnabled")
    if "accountEnabled" in body and not isinstance(enabled, bool):
        raise bad_request("Invalid value specified for property 'accountEnabled' of resource 'User'.")
    if "accountEnabled" in body and st.account_enabled_refusal(user):
        raise bad_request(st.account_enabled_refusal(user) or "")
    if password is not None:
        st.set_password(user, password, bool(force))
    elif force is not None:
        st.set_force_change(user, force)
    if "accountEnabled" in body:
        st.set_account_enabled(user, bool(enabled))
    return GraphResponse(204)


def revoke_sessions(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_REVOKE)
    user = _user(st, rq, rq.params["user"])
    st.revoke_sessions(user)
    return GraphResponse(200, {"@odata.context": rq.context("Edm.Boolean"), "value": True})


def check_member_groups(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_CHECK_GROUPS)
    user = _user(st, rq, rq.params["user"])
    body = _body_object(rq)
    ids = body.get("groupIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_request("Invalid value specified for property 'groupIds'.")
    if len(ids) > 20:
        raise bad_request("The number of groupIds exceeds the limit of 20.")
    found = [gid for gid in ids if gid.lower() in st.groups and user.id in st.groups[gid.lower()].members]
    return GraphResponse(200, {"@odata.context": rq.context("Collection(Edm.String)"), "value": found})


# ---------------------------------------------------------------------- memberships and roles

CASTS = {"microsoft.graph.directoryrole": "directoryRole", "microsoft.graph.group": "group"}


def _directory_role(st: TenantState, role: dict) -> dict:
    return {"@odata.type": "#microsoft.graph.directoryRole", "id": role["directoryRoleId"], "deletedDateTime": None,
            "description": ROLE_DESCRIPTIONS.get(role["displayName"], role["displayName"]),
            "displayName": role["displayName"], "roleTemplateId": role["roleTemplateId"]}


def _advanced_query(rq: GraphRequest, what: str) -> None:
    """user-list-transitivememberof.md: ConsistencyLevel: eventual and $count are required for an OData cast."""
    if (rq.header("ConsistencyLevel") or "").lower() != "eventual" or rq.query.get("$count", "").lower() != "true":
        raise GraphError(400, "Request_UnsupportedQuery",
                         f"Unsupported Query. {what} needs the ConsistencyLevel: eventual header and $count=true.")


def transitive_member_of(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_MEMBER_OF)
    user = _user(st, rq, rq.params["user"])
    cast = None
    if "cast" in rq.params:
        cast = CASTS.get(rq.params["cast"].lower())
        if cast is None:
            raise bad_request(f"Resource not found for the segment '{rq.params['cast']}'.", "BadRequest")
        _advanced_query(rq, "An OData cast on transitiveMemberOf")
    items: list[dict] = []
    if cast in (None, "group"):
        for gid in st.groups_of(user.id):
            items.append({"@odata.type": "#microsoft.graph.group", **st.groups[gid].props})
    if cast in (None, "directoryRole"):
        items.extend(_directory_role(st, r) for r in st.roles_of(user))
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 100, 999)
    body: dict[str, Any] = {"@odata.context": rq.context("directoryRoles" if cast == "directoryRole" else
                                                         "groups" if cast == "group" else "directoryObjects")}
    if rq.query.get("$count", "").lower() == "true":
        body["@odata.count"] = len(items)
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = page
    return GraphResponse(200, body)


def _principal_filter(st: TenantState, rq: GraphRequest) -> User | None:
    pred_text = rq.query.get("$filter")
    compile_filter(pred_text, ("principalId", "roleDefinitionId", "directoryScopeId"))  # 400 on anything else
    match = re.search(r"principalId\s+eq\s+'([^']+)'", pred_text or "", re.IGNORECASE)
    return st.users.get(match.group(1).lower()) if match else None


def _role_rows(st: TenantState, rq: GraphRequest, eligible: bool) -> list[dict]:
    one = _principal_filter(st, rq)
    users = [one] if one is not None else ([] if rq.query.get("$filter") else list(st.users.values()))
    rows = []
    for user in users:
        for role in st.roles_of(user, eligible=eligible):
            rid = str(uuid.uuid5(uuid.UUID(st.tenant_id), f"{'elig' if eligible else 'assign'}/{user.id}/{role['roleTemplateId']}"))
            row = {"id": rid, "principalId": user.id, "roleDefinitionId": role["roleTemplateId"],
                   "directoryScopeId": "/"}
            if eligible:
                row.update({"appScopeId": None, "startDateTime": iso(st.now - dt.timedelta(days=30)),
                            "endDateTime": None, "memberType": "Direct", "roleEligibilityScheduleId": rid})
            rows.append(row)
    pred = compile_filter(rq.query.get("$filter"), ("principalId", "roleDefinitionId", "directoryScopeId"))
    return [r for r in rows if pred(r)]


def list_role_assignments(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_ROLE_ASSIGNMENTS)
    rows = _role_rows(st, rq, eligible=False)
    return GraphResponse(200, {"@odata.context": rq.context("roleManagement/directory/roleAssignments"), "value": rows})


def list_role_eligibility(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_ROLE_ELIGIBILITY)
    rows = _role_rows(st, rq, eligible=True)
    return GraphResponse(200, {"@odata.context": rq.context("roleManagement/directory/roleEligibilityScheduleInstances"),
                               "value": rows})


# ---------------------------------------------------------------------- audit logs

_AUDIT_FILTER = ("activityDateTime", "activityDisplayName", "category", "loggedByService", "result", "correlationId",
                 "initiatedBy/user/id", "initiatedBy/user/displayName", "initiatedBy/user/userPrincipalName",
                 "initiatedBy/app/appId", "initiatedBy/app/displayName", "targetResources/any:id",
                 "targetResources/any:displayName")


def list_directory_audits(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_AUDIT)
    pred = compile_filter(rq.query.get("$filter"), _AUDIT_FILTER)
    order = (rq.query.get("$orderby") or "activityDateTime desc").strip().lower()
    if order not in ("activitydatetime desc", "activitydatetime asc", "activitydatetime"):
        raise bad_request(f"Invalid $orderby '{rq.query.get('$orderby')}'.", "BadRequest")
    items = [a for a in st.audits if pred(a)]
    if order.endswith("desc"):
        items = list(reversed(items))  # st.audits is oldest first; the service answers newest first
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 1000, 1000)
    body: dict[str, Any] = {"@odata.context": rq.context("auditLogs/directoryAudits")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [copy.deepcopy(a) for a in page]
    return GraphResponse(200, body)


# ---------------------------------------------------------------------- consent grants, app roles, apps

def list_user_grants(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """user-list-oauth2permissiongrants.md: only the grants "specifically for the given user"; delegated
    permissions granted on behalf of all users are not included."""
    rq.require(P_GRANTS_READ)
    user = _user(st, rq, rq.params["user"])
    items = [st.access.render_grant(g) for g in st.access.grants.values()
             if g["consentType"] == "Principal" and g["principalId"] == user.id]
    return GraphResponse(200, {"@odata.context": rq.context("oauth2PermissionGrants"), "value": items})


_GRANT_FILTER = ("clientId", "consentType", "principalId", "resourceId", "id")


def list_grants(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GRANTS_READ)
    pred = compile_filter(rq.query.get("$filter"), _GRANT_FILTER)
    items = [st.access.render_grant(g) for g in st.access.grants.values() if pred(g)]
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 100, 999)
    body: dict[str, Any] = {"@odata.context": rq.context("oauth2PermissionGrants")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = page
    return GraphResponse(200, body)


def _grant(st: TenantState, rq: GraphRequest) -> dict:
    grant = st.access.grants.get(rq.params["grant"])
    if grant is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{rq.params['grant']}' does not exist or one of "
                         "its queried reference-property objects are not present.")
    if grant.get("principalId"):
        rq.user_id = grant["principalId"]
    return grant


def get_grant(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GRANTS_READ)
    body = {"@odata.context": rq.context("oauth2PermissionGrants/$entity")}
    body.update(st.access.render_grant(_grant(st, rq)))
    return GraphResponse(200, body)


def delete_grant(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """oauth2permissiongrant-delete.md: 204, no body. The directory audit records "Remove delegated permission
    grant" by the app."""
    rq.require(P_GRANTS_WRITE)
    grant = _grant(st, rq)
    del st.access.grants[grant["id"]]
    user = st.users.get(grant.get("principalId") or "")
    st.mutate("oauth2_grant_deleted", user, id=grant["id"], clientId=grant["clientId"], scope=grant["scope"],
              consentType=grant["consentType"])
    resource = st.access.service_principals.get(grant["resourceId"], {})
    st.access.app_audit("Remove delegated permission grant",
                        {"id": grant["resourceId"], "displayName": resource.get("displayName"), "type": "ServicePrincipal"})
    return GraphResponse(204)


def list_app_role_assignments(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """user-list-approleassignments.md: "also returns app roles assigned to groups that the user is a direct
    member of"."""
    rq.require(P_APP_ROLES_READ)
    user = _user(st, rq, rq.params["user"])
    items = [copy.deepcopy(a) for a in st.access.app_roles.get(user.id, [])]
    for gid in st.groups_of(user.id):
        items.extend(copy.deepcopy(a) for a in st.access.app_roles.get(gid, []))
    pred = compile_filter(rq.query.get("$filter"), ("resourceId", "appRoleId", "principalType"))
    return GraphResponse(200, {"@odata.context": rq.context(f"users('{user.id}')/appRoleAssignments"),
                               "value": [a for a in items if pred(a)]})


def delete_app_role_assignment(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """user-delete-approleassignments.md: 204; AppRoleAssignment.ReadWrite.All."""
    rq.require(P_APP_ROLES_WRITE)
    user = _user(st, rq, rq.params["user"])
    rows = st.access.app_roles.get(user.id, [])
    row = next((a for a in rows if a["id"] == rq.params["assignment"]), None)
    if row is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{rq.params['assignment']}' does not exist or one "
                         "of its queried reference-property objects are not present.")
    rows.remove(row)
    st.mutate("app_role_assignment_deleted", user, id=row["id"], resourceId=row["resourceId"], appRoleId=row["appRoleId"])
    st.access.app_audit("Remove app role assignment from user",
                        {"id": user.id, "displayName": user.display_name, "type": "User",
                         "userPrincipalName": user.upn}, category="UserManagement")
    return GraphResponse(204)


_SP_PROPERTIES = {p.lower(): p for p in ("id", "appId", "displayName", "appOwnerOrganizationId", "publisherName",
                                          "servicePrincipalType")}


def get_service_principal(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_SP_READ)
    sp = st.access.service_principals.get(rq.params["sp"].lower()) or st.access.service_principals.get(rq.params["sp"])
    if sp is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{rq.params['sp']}' does not exist or one of its "
                         "queried reference-property objects are not present.")
    select = parse_select(rq.query, _SP_PROPERTIES, "servicePrincipal")
    body: dict[str, Any] = {"@odata.context": rq.context("servicePrincipals/$entity")}
    body.update({k: sp.get(k) for k in (select or _SP_PROPERTIES.values())})
    return GraphResponse(200, body)


# ---------------------------------------------------------------------- groups

def get_group(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GROUP_READ)
    group = _group(st, rq.params["group"])
    body = {"@odata.context": rq.context("groups/$entity")}
    body.update(group.props)
    return GraphResponse(200, body)


def list_members(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GROUP_READ)
    group = _group(st, rq.params["group"])
    select = parse_select(rq.query, USER_PROPERTY_MAP, "directoryObject")
    members = [st.users[uid] for uid in group.members if uid in st.users]
    page, next_link = paginate(members, rq.query, rq.base_url, rq.path, 100, 999)
    body: dict[str, Any] = {
        "@odata.context": rq.context(f"directoryObjects({','.join(select)})" if select else "directoryObjects")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [{"@odata.type": "#microsoft.graph.user", **_project_user(u, select)} for u in page]
    return GraphResponse(200, body)


_REF_RE = re.compile(r"/(?:directoryObjects|users)/([^/?#]+)$", re.IGNORECASE)


_ALREADY_MEMBER = "One or more added object references already exist for the following modified properties: 'members'."


def _referenced_user(st: TenantState, ref: object, annotation: str) -> User:
    """The user a directoryObjects URL (``@odata.id`` / ``@odata.bind``) names: 400 when it is not one, 404 when absent."""
    match = _REF_RE.search(ref) if isinstance(ref, str) else None
    if not match or not GUID_RE.match(match.group(1)):
        raise bad_request(f"Invalid URL format specified in {annotation} for members.")
    user = st.users.get(match.group(1).lower())
    if user is None:
        raise not_found_user(match.group(1).lower())
    return user


def add_member(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GROUP_WRITE)
    group = _group(st, rq.params["group"])
    user = _referenced_user(st, _body_object(rq).get("@odata.id"), "@odata.id")
    rq.user_id = user.id
    if user.id in group.members:
        raise bad_request(_ALREADY_MEMBER)
    st.add_member(group, user)
    return GraphResponse(204)


MAX_BOUND_MEMBERS = 20  # group-post-members: "you can add up to only 20 members" in one request


def update_group_members(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """PATCH /groups/{id} with ``members@odata.bind`` (the documented way to add several members in one
    request). Only that property is modelled; more than 20 references, or one that is already a member,
    refuses the whole request and adds nobody (docs/tenant-behaviours.md: the all-or-nothing is assumed)."""
    rq.require(P_GROUP_WRITE)
    group = _group(st, rq.params["group"])
    body = _body_object(rq)
    other = sorted(k for k in body if k != "members@odata.bind")
    if other:
        raise bad_request(f"the simulator models only members@odata.bind on PATCH /groups, not {other}")
    refs = body.get("members@odata.bind")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise bad_request("members@odata.bind must be a non-empty array of directoryObjects URLs.")
    if len(refs) > MAX_BOUND_MEMBERS:
        raise bad_request(f"A maximum of {MAX_BOUND_MEMBERS} members can be added in a single request.")
    users = [_referenced_user(st, ref, "@odata.bind") for ref in refs]
    if any(u.id in group.members for u in users) or len({u.id for u in users}) < len(users):
        raise bad_request(_ALREADY_MEMBER)
    for user in users:
        st.add_member(group, user)
    return GraphResponse(204)


def remove_member(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_GROUP_WRITE)
    group = _group(st, rq.params["group"])
    user = _user(st, rq, rq.params["user"])
    if user.id not in group.members:
        raise GraphError(404, "Request_ResourceNotFound", "One or more removed object references do not exist for "
                         "the following modified properties: 'members'.")
    st.remove_member(group, user)
    return GraphResponse(204)


# ---------------------------------------------------------------------- authentication

def get_requirements(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_MFA_READ)
    user = _user(st, rq, rq.params["user"])
    return GraphResponse(200, {
        "@odata.context": rq.context(f"users('{user.id}')/authentication/requirements/$entity"),
        "perUserMfaState": user.per_user_mfa})


def patch_requirements(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_MFA_WRITE)
    user = _user(st, rq, rq.params["user"])
    body = _body_object(rq)
    for key in body:
        if key != "perUserMfaState":
            raise bad_request(f"Property '{key}' does not exist on type 'microsoft.graph.strongAuthenticationRequirements'.",
                              "BadRequest")
    value = body.get("perUserMfaState")
    if value not in ("disabled", "enforced", "enabled"):
        raise bad_request(f"Invalid value '{value}' for property 'perUserMfaState'. Possible values are: "
                          "disabled, enforced, enabled.", "BadRequest")
    st.set_per_user_mfa(user, value)
    return GraphResponse(204)


def list_methods(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_METHODS_READ)
    user = _user(st, rq, rq.params["user"])
    return GraphResponse(200, {
        "@odata.context": rq.context(f"users('{user.id}')/authentication/methods"),
        "value": [st.render_method(m) for m in user.methods]})


def _method_type(rq: GraphRequest) -> str:
    typ = COLLECTION_TO_TYPE.get(rq.params["collection"].lower())
    if typ is None:
        raise bad_request(f"Resource not found for the segment '{rq.params['collection']}'.", "BadRequest")
    return typ


def list_typed_methods(st: TenantState, rq: GraphRequest) -> GraphResponse:
    typ = _method_type(rq)
    rq.require(P_METHODS_READ)
    user = _user(st, rq, rq.params["user"])
    coll = METHOD_TYPES[typ][1]
    return GraphResponse(200, {
        "@odata.context": rq.context(f"users('{user.id}')/authentication/{coll}"),
        "value": [st.render_method(m) for m in user.methods if m["type"] == typ]})


def _find_method(st: TenantState, rq: GraphRequest, user: User, typ: str) -> dict:
    mid = rq.params["method_id"]
    for method in user.methods:
        if method["type"] == typ and method["id"].lower() == mid.lower():
            return method
    raise not_found_user(mid)


def get_typed_method(st: TenantState, rq: GraphRequest) -> GraphResponse:
    typ = _method_type(rq)
    rq.require(P_METHODS_READ)
    user = _user(st, rq, rq.params["user"])
    method = _find_method(st, rq, user, typ)
    body = {"@odata.context": rq.context(f"users('{user.id}')/authentication/{METHOD_TYPES[typ][1]}/$entity")}
    body.update(st.render_method(method))
    return GraphResponse(200, body)


def delete_typed_method(st: TenantState, rq: GraphRequest) -> GraphResponse:
    typ = _method_type(rq)
    perms = P_METHODS_WRITE + ((P_METHOD_TYPE_WRITE[typ],) if typ in P_METHOD_TYPE_WRITE else ())
    rq.require(perms)
    user = _user(st, rq, rq.params["user"])
    if typ == "password":
        raise bad_request("The password authentication method cannot be deleted.", "badRequest")
    method = _find_method(st, rq, user, typ)
    others = [m for m in user.methods if m is not method and m["type"] != "password"]
    if user.default_method == method["id"] and others:
        # microsoft-graph-docs-contrib#2913 (wire body); phoneauthenticationmethod-delete.md (the rule)
        raise GraphError(400, "badRequest", "Cannot delete default method with other methods configured. Please "
                         "change default method before deletion.", inner_message=True)
    st.delete_method(user, method)
    return GraphResponse(204)


def create_tap(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_METHODS_WRITE + ("UserAuthMethod-TAP.ReadWrite.All",))
    user = _user(st, rq, rq.params["user"])
    body = rq.body if rq.body is not None else {}
    if not isinstance(body, dict):
        raise bad_request("Invalid request body.", "badRequest")
    for key in body:
        if key not in ("lifetimeInMinutes", "isUsableOnce", "startDateTime", "@odata.type"):
            raise bad_request(f"Property '{key}' does not exist on type "
                              "'microsoft.graph.temporaryAccessPassAuthenticationMethod'.", "badRequest")
    lifetime = body.get("lifetimeInMinutes", 60)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 10 <= lifetime <= 43200:
        raise bad_request("lifetimeInMinutes must be between 10 and 43200.", "badRequest")
    once = body.get("isUsableOnce", False)
    if not isinstance(once, bool):
        raise bad_request("Invalid value for isUsableOnce.", "badRequest")
    start = None
    if body.get("startDateTime") is not None:
        start = parse_iso(body["startDateTime"])
        if start is None:
            raise bad_request("Invalid value for startDateTime.", "badRequest")
    policy = st.tap_policy
    if policy.get("state") != "enabled":
        # glueckkanja/MyWorkID#47 (the message); the status and code are assumed (research-16 section 1).
        raise bad_request("Converged UserCredentialPolicy does not allow creating or updating this authentication "
                          "method. AuthMethodType [TemporaryAccessPass].", "badRequest")
    if "lifetimeInMinutes" not in body:
        lifetime = int(policy.get("defaultLifetimeInMinutes") or 60)
    if not int(policy.get("minimumLifetimeInMinutes") or 10) <= lifetime <= int(policy.get("maximumLifetimeInMinutes") or 43200):
        # The documented rule (between the policy's minimum and maximum); the message is assumed.
        raise bad_request(f"The lifetime {lifetime} must be between the policy's minimumLifetimeInMinutes "
                          f"{policy.get('minimumLifetimeInMinutes')} and maximumLifetimeInMinutes "
                          f"{policy.get('maximumLifetimeInMinutes')}.", "badRequest")
    once = once or bool(policy.get("isUsableOnce"))  # "all the passes in the tenant will be restricted to one-time use"
    tap = "".join(secrets.choice(TAP_ALPHABET) for _ in range(int(policy.get("defaultLength") or 8)))
    method = st.add_tap(user, hashlib.sha256(tap.encode()).hexdigest(), lifetime, once, start)
    out = st.render_method(method)
    out["temporaryAccessPass"] = tap
    body_out = {"@odata.context": rq.context(f"users('{user.id}')/authentication/temporaryAccessPassMethods/$entity")}
    body_out.update(out)
    return GraphResponse(201, body_out)


P_TAP_POLICY_READ = ("Policy.Read.AuthenticationMethod", "Policy.ReadWrite.AuthenticationMethod")


def get_tap_policy(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """temporaryaccesspassauthenticationmethodconfiguration-get.md: Policy.Read.AuthenticationMethod."""
    rq.require(P_TAP_POLICY_READ)
    body = {"@odata.context": rq.context("policies/authenticationMethodsPolicy/authenticationMethodConfigurations/$entity"),
            "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration"}
    body.update(copy.deepcopy(st.tap_policy))
    return GraphResponse(200, body)


def delete_tap(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """temporaryaccesspassauthenticationmethod-delete.md: 204."""
    rq.require(P_METHODS_WRITE + ("UserAuthMethod-TAP.ReadWrite.All",))
    user = _user(st, rq, rq.params["user"])
    method = _find_method(st, rq, user, "temporaryAccessPass")
    st.delete_method(user, method)
    return GraphResponse(204)


def get_manager(st: TenantState, rq: GraphRequest) -> GraphResponse:
    """user-list-manager.md: the manager (a user or an organizational contact); 404 when there is none."""
    rq.require(P_USER_READ)
    user = _user(st, rq, rq.params["user"])
    select = parse_select(rq.query, USER_PROPERTY_MAP, "directoryObject")
    if user.manager is None:
        raise GraphError(404, "Request_ResourceNotFound", "Resource 'manager' does not exist or one of its queried "
                         "reference-property objects are not present.")
    if isinstance(user.manager, dict):
        body = {"@odata.context": rq.context("directoryObjects/$entity"), **copy.deepcopy(user.manager)}
        return GraphResponse(200, body)
    manager = st.users[user.manager]
    body = {"@odata.context": rq.context("directoryObjects/$entity"), "@odata.type": "#microsoft.graph.user"}
    body.update(_project_user(manager, select))
    return GraphResponse(200, body)


# ---------------------------------------------------------------------- identity protection

def _user_ids(rq: GraphRequest) -> list[str]:
    body = _body_object(rq)
    ids = body.get("userIds")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise bad_request("userIds must be a non-empty list of user ids.", "BadRequest")
    if len(ids) > 60:
        raise bad_request("Too many userIds: at most 60 per request.", "BadRequest")
    for uid in ids:
        if not GUID_RE.match(uid):
            raise bad_request(f"Invalid user id '{uid}'.", "BadRequest")
    return [i.lower() for i in ids]


def confirm_compromised(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISKY_WRITE)
    ids = _user_ids(rq)
    for uid in ids:  # unknown ids are ignored, like Graph (204 either way)
        user = st.users.get(uid)
        if user is not None:
            rq.user_id = rq.user_id or user.id
            st.confirm_compromised(user)
    return GraphResponse(204)


def dismiss_risky(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISKY_WRITE)
    ids = _user_ids(rq)
    for uid in ids:
        user = st.users.get(uid)
        if user is not None:
            rq.user_id = rq.user_id or user.id
            st.dismiss_risk(user)
    return GraphResponse(204)


_RISKY_FILTER = ("id", "riskState", "riskLevel", "riskDetail", "riskLastUpdatedDateTime", "userPrincipalName",
                 "userDisplayName", "isDeleted", "isProcessing")


def list_risky_users(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISKY_READ)
    pred = compile_filter(rq.query.get("$filter"), _RISKY_FILTER)
    items = [r for r in st.risky.values() if pred(r)]
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 20, 500)
    body: dict[str, Any] = {"@odata.context": rq.context("identityProtection/riskyUsers")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [st.render_risky_user(r, rq.beta) for r in page]
    return GraphResponse(200, body)


def get_risky_user(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISKY_READ)
    key = rq.params["id"].lower()
    rec = st.risky.get(key)
    if rec is None:
        raise not_found_user(rq.params["id"])
    rq.user_id = rec["id"]
    body = {"@odata.context": rq.context("identityProtection/riskyUsers/$entity")}
    body.update(st.render_risky_user(rec, rq.beta))
    return GraphResponse(200, body)


def list_risky_user_history(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISKY_READ)
    key = rq.params["id"].lower()
    if key not in st.risky:
        raise not_found_user(rq.params["id"])
    rq.user_id = key
    items = st.render_risk_history(key)
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 100, 500)
    body: dict[str, Any] = {"@odata.context": rq.context(f"identityProtection/riskyUsers('{key}')/history")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = page
    return GraphResponse(200, body)


_DETECTION_FILTER = ("id", "userId", "userPrincipalName", "riskState", "riskLevel", "riskEventType", "riskType",
                     "detectedDateTime", "activityDateTime", "lastUpdatedDateTime", "riskDetail", "source",
                     "detectionTimingType", "ipAddress", "requestId", "correlationId")


def list_detections(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISK_EVENTS)
    pred = compile_filter(rq.query.get("$filter"), _DETECTION_FILTER)
    items = [d for d in st.detections if pred(d)]
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, 100, 500)
    body: dict[str, Any] = {"@odata.context": rq.context("identityProtection/riskDetections")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [dict(d) for d in page]
    return GraphResponse(200, body)


def get_detection(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RISK_EVENTS)
    for det in st.detections:
        if det["id"] == rq.params["id"]:
            body = {"@odata.context": rq.context("identityProtection/riskDetections/$entity")}
            body.update(det)
            return GraphResponse(200, body)
    raise not_found_user(rq.params["id"])


# ---------------------------------------------------------------------- security alerts

# security-list-alerts_v2.md: these properties support $filter; "the most recent alerts are displayed at the top".
_ALERT_FILTER = ("assignedTo", "classification", "determination", "createdDateTime", "lastUpdateDateTime", "severity",
                 "serviceSource", "status")


def list_alerts(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_ALERTS_READ)
    pred = compile_filter(rq.query.get("$filter"), _ALERT_FILTER)
    items = sorted((a for a in st.alerts if pred(a)), key=lambda a: a.get("createdDateTime") or "", reverse=True)
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, st.settings.get("alertsPageSize", 100), 2000)
    body: dict[str, Any] = {"@odata.context": rq.context("security/alerts_v2")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [copy.deepcopy(a) for a in page]
    return GraphResponse(200, body)


def _alert(st: TenantState, rq: GraphRequest) -> dict:
    alert = st.alert_index.get(rq.params["id"])
    if alert is None:
        raise GraphError(404, "NotFound", f"Alert '{rq.params['id']}' was not found.")
    return alert


def get_alert(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_ALERTS_READ)
    alert = _alert(st, rq)
    body = {"@odata.context": rq.context("security/alerts_v2/$entity")}
    body.update(copy.deepcopy(alert))
    return GraphResponse(200, body)


def patch_alert(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_ALERTS_WRITE)
    alert = _alert(st, rq)
    body = _body_object(rq)
    allowed = {"status", "classification", "determination", "assignedTo", "customDetails"}
    for key in body:
        if key not in allowed:
            raise bad_request(f"Property '{key}' cannot be updated.", "BadRequest")
    if "status" in body and body["status"] not in ("new", "inProgress", "resolved"):
        raise bad_request(f"Invalid status '{body['status']}'.", "BadRequest")
    alert.update(copy.deepcopy(body))
    now = utcnow()
    alert["lastUpdateDateTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if body.get("status") == "resolved":
        alert["resolvedDateTime"] = alert["lastUpdateDateTime"]
    st.mutate("alert_updated", None, alert=alert["id"], changes=dict(body))
    out = {"@odata.context": rq.context("security/alerts_v2/$entity")}
    out.update(copy.deepcopy(alert))
    return GraphResponse(200, out)


# ---------------------------------------------------------------------- inbox rules

def _inbox(rq: GraphRequest, user: User) -> dict:
    mailbox = _mailbox(rq, user)
    folder = rq.params["folder"]
    if folder.lower() != "inbox" and folder != mailbox["folders"].get("Inbox"):
        raise GraphError(404, "ErrorInvalidIdMalformed", "Id is malformed.")
    return mailbox


def _rules_context(rq: GraphRequest, user: User, entity: bool) -> str:
    frag = f"users('{user.id}')/mailFolders('inbox')/messageRules"
    return rq.context(frag + ("/$entity" if entity else ""))


def list_rules(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RULES_READ)
    user = _user(st, rq, rq.params["user"])
    _inbox(rq, user)
    rules = sorted((r for r in user.rules if not r["hidden"]), key=lambda r: r["sequence"])
    return GraphResponse(200, {"@odata.context": _rules_context(rq, user, False),
                               "value": [st.render_graph_rule(r) for r in rules]})


def _rule(rq: GraphRequest, user: User) -> dict:
    rid = rq.params["rule"]
    for rule in user.rules:
        if rule["graphId"] == rid and not rule["hidden"]:
            return rule
    raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def get_rule(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RULES_READ)
    user = _user(st, rq, rq.params["user"])
    _inbox(rq, user)
    rule = _rule(rq, user)
    body = {"@odata.context": _rules_context(rq, user, True)}
    body.update(st.render_graph_rule(rule))
    return GraphResponse(200, body)


_RULE_TYPES: dict[str, type | tuple] = {"displayName": str, "sequence": int, "isEnabled": bool, "conditions": dict,
                                        "actions": dict, "exceptions": dict}


def patch_rule(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_RULES_WRITE)
    user = _user(st, rq, rq.params["user"])
    _inbox(rq, user)
    rule = _rule(rq, user)
    body = _body_object(rq)
    if rule.get("readOnly"):  # messagerule.md: isReadOnly "cannot be modified or deleted by the rules REST API"
        raise GraphError(403, "ErrorAccessDenied", "The rule is read-only and cannot be modified or deleted through "
                         "the REST API.")
    changes = {}
    for key, value in body.items():
        if key in ("id", "hasError", "isReadOnly", "@odata.type", "@odata.context"):
            continue
        expected = _RULE_TYPES.get(key)
        if expected is None:
            raise bad_request(f"The property '{key}' does not exist on type 'Microsoft.OutlookServices.MessageRule'. "
                              "Make sure to only use property names that are defined by the type.", "RequestBodyRead")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise bad_request(f"Cannot convert the literal '{value}' to the expected type for property '{key}'.",
                              "RequestBodyRead")
        changes[key] = value
    if changes:
        st.update_rule(user, rule, changes, via="graph")
    body_out = {"@odata.context": _rules_context(rq, user, True)}
    body_out.update(st.render_graph_rule(rule))
    return GraphResponse(200, body_out)


# ---------------------------------------------------------------------- mail

def send_mail(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_SEND)
    user = _user(st, rq, rq.params["user"])
    _mailbox(rq, user)
    body = _body_object(rq)
    message = body.get("message")
    if not isinstance(message, dict):
        raise bad_request("The message parameter is required.", "ErrorInvalidRequest")
    recipients = [r for key in ("toRecipients", "ccRecipients", "bccRecipients")
                  for r in (message.get(key) or []) if isinstance(r, dict)]
    if not recipients or not all(isinstance(r.get("emailAddress"), dict) and r["emailAddress"].get("address")
                                 for r in recipients):
        raise bad_request("At least one recipient isn't valid., A message can't be sent because it contains no "
                          "recipients.", "ErrorInvalidRecipients")
    st.send_mail(user, message, body.get("saveToSentItems", True))
    return GraphResponse(202)


# ---------------------------------------------------------------------- secure score

def list_secure_scores(st: TenantState, rq: GraphRequest) -> GraphResponse:
    rq.require(P_SCORES)
    pred = compile_filter(rq.query.get("$filter"), ("id", "createdDateTime", "azureTenantId", "currentScore"))
    items = [s for s in st.secure_scores if pred(s)]
    page, next_link = paginate(items, rq.query, rq.base_url, rq.path, None, 1000)
    body: dict[str, Any] = {"@odata.context": rq.context("security/secureScores")}
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = [copy.deepcopy(s) for s in page]
    return GraphResponse(200, body)


# ---------------------------------------------------------------------- routing

ROUTES: list[Route] = [
    Route("GET", ("users",), list_users),
    Route("GET", ("users", "{user}"), get_user),
    Route("PATCH", ("users", "{user}"), patch_user),
    Route("POST", ("users", "{user}", "revokeSignInSessions"), revoke_sessions),
    Route("POST", ("users", "{user}", "checkMemberGroups"), check_member_groups),
    Route("GET", ("users", "{user}", "transitiveMemberOf"), transitive_member_of),
    Route("GET", ("users", "{user}", "transitiveMemberOf", "{cast}"), transitive_member_of),
    Route("GET", ("roleManagement", "directory", "roleAssignments"), list_role_assignments),
    Route("GET", ("roleManagement", "directory", "roleEligibilityScheduleInstances"), list_role_eligibility),
    Route("GET", ("auditLogs", "directoryAudits"), list_directory_audits),
    Route("GET", ("users", "{user}", "oauth2PermissionGrants"), list_user_grants),
    Route("GET", ("oauth2PermissionGrants",), list_grants),
    Route("GET", ("oauth2PermissionGrants", "{grant}"), get_grant),
    Route("DELETE", ("oauth2PermissionGrants", "{grant}"), delete_grant),
    Route("GET", ("users", "{user}", "appRoleAssignments"), list_app_role_assignments),
    Route("DELETE", ("users", "{user}", "appRoleAssignments", "{assignment}"), delete_app_role_assignment),
    Route("GET", ("servicePrincipals", "{sp}"), get_service_principal),
    Route("GET", ("groups", "{group}"), get_group),
    Route("GET", ("groups", "{group}", "members"), list_members),
    Route("POST", ("groups", "{group}", "members", "$ref"), add_member),
    Route("PATCH", ("groups", "{group}"), update_group_members),
    Route("DELETE", ("groups", "{group}", "members", "{user}", "$ref"), remove_member),
    Route("GET", ("users", "{user}", "authentication", "requirements"), get_requirements, frozenset({"beta"})),
    Route("PATCH", ("users", "{user}", "authentication", "requirements"), patch_requirements, frozenset({"beta"})),
    Route("GET", ("users", "{user}", "authentication", "methods"), list_methods),
    Route("POST", ("users", "{user}", "authentication", "temporaryAccessPassMethods"), create_tap),
    Route("DELETE", ("users", "{user}", "authentication", "temporaryAccessPassMethods", "{method_id}"), delete_tap),
    Route("GET", ("users", "{user}", "manager"), get_manager),
    Route("GET", ("policies", "authenticationMethodsPolicy", "authenticationMethodConfigurations", "temporaryAccessPass"),
          get_tap_policy),
    Route("GET", ("users", "{user}", "authentication", "{collection}"), list_typed_methods),
    Route("GET", ("users", "{user}", "authentication", "{collection}", "{method_id}"), get_typed_method),
    Route("DELETE", ("users", "{user}", "authentication", "{collection}", "{method_id}"), delete_typed_method),
    Route("POST", ("identityProtection", "riskyUsers", "confirmCompromised"), confirm_compromised),
    Route("POST", ("identityProtection", "riskyUsers", "dismiss"), dismiss_risky),
    Route("GET", ("identityProtection", "riskyUsers"), list_risky_users),
    Route("GET", ("identityProtection", "riskyUsers", "{id}"), get_risky_user),
    Route("GET", ("identityProtection", "riskyUsers", "{id}", "history"), list_risky_user_history),
    Route("GET", ("identityProtection", "riskDetections"), list_detections),
    Route("GET", ("identityProtection", "riskDetections", "{id}"), get_detection),
    Route("GET", ("security", "alerts_v2"), list_alerts),
    Route("GET", ("security", "alerts_v2", "{id}"), get_alert),
    Route("PATCH", ("security", "alerts_v2", "{id}"), patch_alert),
    Route("GET", ("security", "secureScores"), list_secure_scores),
    Route("GET", ("users", "{user}", "mailFolders", "{folder}", "messageRules"), list_rules),
    Route("GET", ("users", "{user}", "mailFolders", "{folder}", "messageRules", "{rule}"), get_rule),
    Route("PATCH", ("users", "{user}", "mailFolders", "{folder}", "messageRules", "{rule}"), patch_rule),
    Route("POST", ("users", "{user}", "sendMail"), send_mail),
]


class Router:
    """Matches (method, version, segments) to a Route; literal segments are case-insensitive."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.by_len: dict[int, list[tuple[Route, tuple[str | None, ...], tuple[str | None, ...]]]] = {}
        for route in routes:
            lits = tuple(None if p.startswith("{") else p.lower() for p in route.pattern)
            names = tuple(p[1:-1] if p.startswith("{") else None for p in route.pattern)
            self.by_len.setdefault(len(route.pattern), []).append((route, lits, names))
        self.all = [entry for entries in self.by_len.values() for entry in entries]

    def match(self, method: str, version: str, segments: Sequence[str]) -> tuple[Route, dict[str, str]]:
        """The route and its parameters; GraphError 400 (unknown segment) or 405 (wrong method)."""
        lowered = [s.lower() for s in segments]
        shape_match = False
        for route, lits, names in self.by_len.get(len(segments), ()):
            if any(lit is not None and lit != seg for lit, seg in zip(lits, lowered)):
                continue
            if version not in route.versions:
                continue
            shape_match = True
            if route.method != method:
                continue
            params = {name: seg for name, seg in zip(names, segments) if name is not None}
            return route, params
        if shape_match:
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        # Report the first segment no route explains.
        best = 0
        for route, lits, _ in self.all:
            if version not in route.versions:
                continue
            n = 0
            for lit, seg in zip(lits, lowered):
                if lit is not None and lit != seg:
                    break
                n += 1
            best = max(best, n)
        bad = segments[min(best, len(segments) - 1)] if segments else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{bad}'.")


ROUTER = Router(ROUTES)
