"""In-memory tenant state of the simulator: users, groups, auth methods, mailboxes, rules, risk, alerts.

Built from a seed (see seed.json). Every mutation made through the simulated APIs goes through a
method here and is appended to `mutations`, so tests can assert what the responder changed.
Secrets are never kept: a password reset stores only a count, a SHA-256 and timestamps; a
Temporary Access Pass stores only its SHA-256.
"""
from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from .access import AccessState, SeedError
from .odata import exo_time, iso, parse_iso, resolve_relative_times, utcnow
from .securescores import generate_secure_scores

logger = logging.getLogger(__name__)

DEFAULT_SEED_PATH = Path(__file__).with_name("seed.json")
MUTATION_LOG_MAX = 200_000

# type -> (@odata.type, collection segment)
METHOD_TYPES: dict[str, tuple[str, str]] = {
    "password": ("#microsoft.graph.passwordAuthenticationMethod", "passwordMethods"),
    "phone": ("#microsoft.graph.phoneAuthenticationMethod", "phoneMethods"),
    "microsoftAuthenticator": ("#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
                               "microsoftAuthenticatorMethods"),
    "email": ("#microsoft.graph.emailAuthenticationMethod", "emailMethods"),
    "softwareOath": ("#microsoft.graph.softwareOathAuthenticationMethod", "softwareOathMethods"),
    "fido2": ("#microsoft.graph.fido2AuthenticationMethod", "fido2Methods"),
    "temporaryAccessPass": ("#microsoft.graph.temporaryAccessPassAuthenticationMethod",
                            "temporaryAccessPassMethods"),
    "windowsHelloForBusiness": ("#microsoft.graph.windowsHelloForBusinessAuthenticationMethod",
                                "windowsHelloForBusinessMethods"),
}
COLLECTION_TO_TYPE = {coll.lower(): typ for typ, (_, coll) in METHOD_TYPES.items()}
# Graph properties rendered per method type (in order); others stored on the method are internal.
METHOD_PROPS: dict[str, tuple[str, ...]] = {
    "password": ("password", "createdDateTime"),
    "phone": ("phoneNumber", "phoneType", "smsSignInState"),
    "microsoftAuthenticator": ("displayName", "deviceTag", "phoneAppVersion", "createdDateTime"),
    "email": ("emailAddress",),
    "softwareOath": ("secretKey",),
    "fido2": ("displayName", "createdDateTime", "aaGuid", "model", "attestationCertificates", "attestationLevel"),
    "temporaryAccessPass": ("temporaryAccessPass", "createdDateTime", "startDateTime", "lifetimeInMinutes",
                            "isUsableOnce", "isUsable", "methodUsabilityReason"),
    "windowsHelloForBusiness": ("displayName", "createdDateTime", "keyStrength"),
}

USER_PROPERTIES = (
    "id", "userPrincipalName", "displayName", "givenName", "surname", "mail", "mailNickname", "jobTitle",
    "officeLocation", "mobilePhone", "businessPhones", "preferredLanguage", "accountEnabled",
    "onPremisesSyncEnabled", "onPremisesImmutableId", "onPremisesSamAccountName", "onPremisesDomainName",
    "onPremisesUserPrincipalName", "onPremisesLastSyncDateTime", "onPremisesDistinguishedName",
    "onPremisesSecurityIdentifier", "userType", "usageLocation", "createdDateTime", "department", "companyName",
    "city", "country", "state", "streetAddress", "postalCode", "employeeId", "otherMails", "proxyAddresses",
    "identities", "lastPasswordChangeDateTime", "passwordPolicies", "externalUserState", "creationType",
    "ageGroup", "faxNumber", "imAddresses", "showInAddressList", "securityIdentifier", "signInSessionsValidFromDateTime",
    "assignedLicenses", "assignedPlans", "deletedDateTime", "employeeType", "employeeHireDate",
    "legalAgeGroupClassification", "consentProvidedForMinor", "preferredDataLocation", "isResourceAccount",
)
USER_PROPERTY_MAP = {p.lower(): p for p in USER_PROPERTIES}
USER_DEFAULT_PROPERTIES = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                           "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")

RESET_ROLES_NON_ADMIN = frozenset({
    "User Administrator", "Helpdesk Administrator", "Password Administrator", "Authentication Administrator",
    "Privileged Authentication Administrator", "Global Administrator",
})
RESET_ROLES_ADMIN = frozenset({"Privileged Authentication Administrator", "Global Administrator"})

_RULE_BASE = 0x9E5D6600

# Built-in Entra roles the seed may assign: display name -> roleTemplateId (the same in every tenant;
# learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference).
ROLE_TEMPLATES: dict[str, str] = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Exchange Administrator": "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "Security Administrator": "194ae4cb-b126-40b2-bd5b-6091b380977d",
    "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "Authentication Administrator": "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    "Global Reader": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
}
ROLE_DESCRIPTIONS = {
    "Global Administrator": "Can manage all aspects of Microsoft Entra ID and Microsoft services that use Microsoft Entra identities.",
    "User Administrator": "Can manage all aspects of users and groups, including resetting passwords for limited admins.",
}
# What directoryAudits calls a registered method (resultReason), per method kind (assumed wording).
AUDIT_METHOD_NAMES = {
    "phone:mobile": "Mobile Phone SMS", "phone:alternateMobile": "Alternate Mobile Phone",
    "phone:office": "Office Phone", "email": "Email", "softwareOath": "Software OATH token",
    "microsoftAuthenticator": "Authenticator App with Notification and Code", "fido2": "Passkey (FIDO2)",
    "temporaryAccessPass": "Temporary Access Pass", "windowsHelloForBusiness": "Windows Hello for Business",
}


def load_seed(path: str | Path | None = None) -> dict:
    """Read a seed JSON file (default: the packaged seed.json)."""
    p = Path(path) if path else DEFAULT_SEED_PATH
    with p.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise SeedError(f"{p}: seed must be a JSON object")
    return data


def _folder_id(user_id: str, name: str) -> str:
    digest = hashlib.sha1(f"{user_id}/{name}".encode()).digest()
    return "AAMkAG" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


class User:
    """A directory user plus everything the simulator keeps about them."""

    __slots__ = ("props", "admin_roles", "eligible_roles", "password_writeback", "per_user_mfa", "methods",
                 "deleted_methods", "default_method", "mailbox", "rules", "client_rules", "password", "revocations",
                 "last_revoked_at", "tap_issued", "seq", "manager")

    def __init__(self, props: dict, seq: int) -> None:
        self.props = props
        self.seq = seq
        self.admin_roles: list[str] = []  # active directory role assignments (display names)
        self.eligible_roles: list[str] = []  # PIM-eligible role assignments (display names)
        self.default_method: str | None = None  # id of the default sign-in (MFA) method
        self.client_rules: list[dict] = []  # Outlook client-side rules (the mailbox's rules blob)
        self.password_writeback: bool | None = None
        self.per_user_mfa = "disabled"
        self.methods: list[dict] = []
        self.deleted_methods: list[dict] = []
        self.mailbox: dict | None = None
        self.rules: list[dict] = []
        self.password: dict[str, Any] = {"changes": 0, "last_sha256": None, "force_change": None, "changed_at": None, "records": []}
        self.revocations = 0
        self.last_revoked_at: str | None = None
        self.tap_issued = 0
        # The manager: a user's id, or an organizational contact (a dict with @odata.type orgContact); None: none.
        self.manager: str | dict | None = None

    @property
    def id(self) -> str:
        return self.props["id"]

    @property
    def upn(self) -> str:
        return self.props["userPrincipalName"]

    @property
    def display_name(self) -> str:
        return self.props.get("displayName") or self.upn

    @property
    def synced(self) -> bool:
        return self.props.get("onPremisesSyncEnabled") is True

    @property
    def domain(self) -> str:
        return self.upn.rsplit("@", 1)[-1].lower()


class Group:
    """A security group."""

    __slots__ = ("props", "members")

    def __init__(self, props: dict) -> None:
        self.props = props
        self.members: dict[str, None] = {}  # ordered set of user ids

    @property
    def id(self) -> str:
        return self.props["id"]


class TenantState:
    """The whole simulated tenant."""

    def __init__(self, seed: Mapping[str, Any], now: dt.datetime | None = None) -> None:
        self.now = now or utcnow()
        seed = resolve_relative_times(copy.deepcopy(dict(seed)), self.now)
        self.seed = seed
        tenant = seed.get("tenant") or {}
        self.tenant_id = str(tenant.get("id") or "00000000-0000-0000-0000-000000000001").lower()
        self.domain = tenant.get("domain", "contoso.onmicrosoft.com")
        self.tenant_name = tenant.get("displayName", "Contoso")
        mi = seed.get("managedIdentity") or {}
        self.mi_client_id = str(mi.get("clientId", "4cdc8f8d-68f6-5b2e-ade5-cb72e81a3ea8")).lower()
        self.mi_object_id = str(mi.get("objectId", "a7a82497-e3a3-5901-9eaa-96313e0c54ed")).lower()
        self.mi_resource_id = mi.get("resourceId")
        self.mi_display_name = mi.get("displayName", "id-breach-responder")
        self.token_lifetime_s = int(mi.get("tokenLifetimeSeconds", 86400))
        self.granted: set[str] = set(mi.get("permissions", []))
        self.denied: set[str] = set(mi.get("deniedPermissions", []))
        self.directory_roles: set[str] = set(mi.get("directoryRoles", []))
        self.settings = {"passwordResetRemediatesRisk": True}
        self.settings.update(seed.get("settings") or {})
        self.org_config = {
            "Name": self.domain.split(".")[0], "DisplayName": self.tenant_name, "Identity": self.domain.split(".")[0],
            "AuditDisabled": False, "OAuth2ClientProfileEnabled": True, "IsDehydrated": False,
            "Guid": str(uuid.uuid5(uuid.UUID(self.tenant_id), "organizationconfig")),
            "ExchangeObjectId": str(uuid.uuid5(uuid.UUID(self.tenant_id), "organizationconfig")),
            "DistinguishedName": f"CN=Configuration,CN={self.domain},CN=ConfigurationUnits,DC=prod,DC=outlook,DC=com",
        }
        self.org_config.update(seed.get("organizationConfig") or {})
        self.users: dict[str, User] = {}
        self.upn_index: dict[str, str] = {}
        self.mail_index: dict[str, str] = {}
        self.groups: dict[str, Group] = {}
        self.risky: dict[str, dict] = {}
        # riskyUserHistoryItem per user, oldest first: one entry per change of the user's risk
        self.risk_history: dict[str, list[dict]] = {}
        self.detections: list[dict] = []
        self.alerts: list[dict] = []
        self.alert_index: dict[str, dict] = {}
        self.blocked: dict[str, dict] = {}
        self.outbox: list[dict] = []
        self.audits: list[dict] = []  # auditLogs/directoryAudits, oldest first
        self.access = AccessState(self)  # mailbox rights, junk mail, consent grants, the unified audit log
        # Verified domains and how they authenticate (Managed or Federated).
        self.domains: dict[str, str] = {self.domain.lower(): "Managed"}
        for dom in seed.get("domains", []):
            self.domains[str(dom["id"]).lower()] = dom.get("authenticationType", "Managed")
        self.mutations: collections.deque = collections.deque(maxlen=MUTATION_LOG_MAX)
        self.mutation_seq = 0
        self.rule_counter = 0
        self.rules_by_graph_id: dict[str, tuple[str, dict]] = {}
        self.rules_by_identity: dict[str, tuple[str, dict]] = {}
        for spec in seed.get("users", []):
            self._add_user(spec)
        for spec in seed.get("users", []):
            self._set_manager(spec)
        # authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass: the portal's
        # defaults (minimum 1 h, maximum 8 h, default 1 h, not one-time, 8 characters), disabled unless the seed says.
        self.tap_policy: dict[str, Any] = {
            "id": "TemporaryAccessPass", "state": "disabled", "defaultLifetimeInMinutes": 60, "defaultLength": 8,
            "minimumLifetimeInMinutes": 60, "maximumLifetimeInMinutes": 480, "isUsableOnce": False,
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}],
            "excludeTargets": []}
        self.tap_policy.update((seed.get("authenticationMethodsPolicy") or {}).get("temporaryAccessPass") or {})
        for spec in seed.get("groups", []):
            self._add_group(spec)
        self.access.finish(seed)
        for row in seed.get("blockedSenders", []):
            addr = row["SenderAddress"]
            self.blocked[addr.lower()] = {
                "SenderAddress": addr, "Reason": row.get("Reason", "OutboundSpamLast24HoursRecipientThreshold"),
                "CreatedDatetime": row.get("CreatedDatetime") or iso(self.now),
                "ChangedDatetime": row.get("ChangedDatetime") or row.get("CreatedDatetime") or iso(self.now),
            }
        for alert in seed.get("alerts", []):
            self.add_alert(alert)
        score_cfg = seed.get("secureScores") or {}
        self.secure_scores = generate_secure_scores(
            self.tenant_id, int(score_cfg.get("days", 90)), int(score_cfg.get("regressionDaysAgo", 18)),
            self.now.date(), licensed=len(self.users))
        logger.debug("Tenant state loaded: %d users, %d groups, %d alerts", len(self.users), len(self.groups),
                    len(self.alerts))

    # ------------------------------------------------------------------ building

    def _add_user(self, spec: Mapping[str, Any]) -> User:
        spec = dict(spec)
        upn = spec.get("userPrincipalName")
        if not upn or "@" not in upn:
            raise SeedError(f"user without a valid userPrincipalName: {spec!r}")
        uid = str(spec.get("id") or uuid.uuid5(uuid.UUID(self.tenant_id), upn.lower())).lower()
        if uid in self.users or upn.lower() in self.upn_index:
            raise SeedError(f"duplicate user {upn} / {uid}")
        props: dict[str, Any] = {p: spec.get(p) for p in USER_PROPERTIES if p in spec}
        props["id"] = uid
        props["userPrincipalName"] = upn
        props.setdefault("displayName", upn.split("@")[0])
        props.setdefault("mailNickname", upn.split("@")[0])
        props.setdefault("accountEnabled", True)
        props.setdefault("onPremisesSyncEnabled", None)
        props.setdefault("userType", "Member")
        props.setdefault("businessPhones", [])
        props.setdefault("createdDateTime", iso(self.now))
        has_mailbox = spec.get("mailbox", {}) is not None
        props.setdefault("mail", upn if has_mailbox else None)
        user = User(props, len(self.users))
        user.admin_roles = list(spec.get("adminRoles") or [])
        user.eligible_roles = list(spec.get("eligibleRoles") or [])
        for role in user.admin_roles + user.eligible_roles:
            if role not in ROLE_TEMPLATES:
                raise SeedError(f"{upn}: unknown directory role {role!r}")
        if user.synced:
            user.password_writeback = bool(spec.get("passwordWriteback", False))
        user.per_user_mfa = spec.get("perUserMfaState", "disabled")
        methods = spec.get("authMethods")
        if methods is None:
            methods = [{"type": "password", "id": "28c10230-6103-485e-b985-444c60001490",
                        "createdDateTime": props["createdDateTime"]}]
        for m in methods:
            if m.get("type") not in METHOD_TYPES:
                raise SeedError(f"{upn}: unknown auth method type {m.get('type')!r}")
            method = {k: v for k, v in m.items() if not k.startswith("_")}
            method.setdefault("id", str(uuid.uuid4()))
            user.methods.append(method)
            if m.get("default"):
                user.default_method = method["id"]
            method.pop("default", None)
        self.users[uid] = user
        self.upn_index[upn.lower()] = uid
        if props.get("mail"):
            self.mail_index[props["mail"].lower()] = uid
        if has_mailbox:
            self._make_mailbox(user, spec.get("mailbox") or {})
            visible = [r for r in spec.get("inboxRules", []) if not r.get("hidden")]
            hidden = [r for r in spec.get("inboxRules", []) if r.get("hidden")]
            for rule_spec in visible + hidden:
                self._add_rule(user, rule_spec)
            user.client_rules = [dict(r) for r in spec.get("outlookClientRules", [])]
        self.access.load_user(user, spec)
        for event in spec.get("auditEvents", []):
            self.add_audit(user, event)
        risk = spec.get("risk")
        if risk:
            self._set_risk(user, risk.get("riskLevel", "high"), risk.get("riskState", "atRisk"),
                           risk.get("riskDetail", "none"), risk.get("riskLastUpdatedDateTime") or iso(self.now))
        for det in spec.get("riskDetections", []):
            self.add_detection(user, det)
        return user

    def _set_manager(self, spec: Mapping[str, Any]) -> None:
        manager = spec.get("manager")
        if manager is None:
            return
        user = self.find_user(str(spec.get("id") or spec["userPrincipalName"]))
        assert user is not None
        if isinstance(manager, Mapping):
            user.manager = {"@odata.type": "#microsoft.graph.orgContact", "id": str(uuid.uuid4()), **manager}
            return
        found = self.find_user(str(manager))
        if found is None:
            raise SeedError(f"{user.upn}: unknown manager {manager!r}")
        user.manager = found.id

    def _make_mailbox(self, user: User, spec: Mapping[str, Any]) -> None:
        folders = spec.get("folders") or ["Inbox", "RSS Subscriptions", "Archive", "Conversation History",
                                          "Junk Email", "Deleted Items", "Notes"]
        user.mailbox = {
            "ExchangeGuid": spec.get("exchangeGuid") or str(uuid.uuid5(uuid.UUID(user.id), "mailbox")),
            "ForwardingSmtpAddress": spec.get("ForwardingSmtpAddress"),
            "ForwardingAddress": spec.get("ForwardingAddress"),
            "DeliverToMailboxAndForward": bool(spec.get("DeliverToMailboxAndForward", False)),
            "AuditEnabled": bool(spec.get("AuditEnabled", True)),
            "AuditLogAgeLimit": spec.get("AuditLogAgeLimit", "90.00:00:00"),
            "AuditBypassEnabled": bool(spec.get("AuditBypassEnabled", False)),
            "WhenMailboxCreated": spec.get("whenCreated") or user.props.get("createdDateTime"),
            "folders": {name: _folder_id(user.id, name) for name in folders},
        }

    def _add_rule(self, user: User, spec: Mapping[str, Any]) -> dict:
        assert user.mailbox is not None
        self.rule_counter += 1
        number = _RULE_BASE + self.rule_counter
        graph_id = base64.b64encode(b"\x01\x00\x00\x00" + number.to_bytes(4, "big")).decode()
        rule_identity = str((number << 32) | 1)
        actions = copy.deepcopy(dict(spec.get("actions") or {}))
        for key in ("moveToFolder", "copyToFolder"):
            if key in actions and actions[key] in user.mailbox["folders"]:
                actions[key] = user.mailbox["folders"][actions[key]]
        rule = {
            "graphId": graph_id,
            "ruleIdentity": rule_identity,
            "displayName": spec.get("displayName", f"Rule {self.rule_counter}"),
            "sequence": int(spec.get("sequence") or (len(user.rules) + 1)),
            "isEnabled": bool(spec.get("isEnabled", True)),
            "hidden": bool(spec.get("hidden", False)),
            "system": bool(spec.get("system", False)),
            "readOnly": bool(spec.get("isReadOnly", False)),
            "conditions": copy.deepcopy(dict(spec.get("conditions") or {})),
            "actions": actions,
            "exceptions": copy.deepcopy(dict(spec.get("exceptions") or {})),
            "createdDateTime": spec.get("createdDateTime") or iso(self.now),
        }
        user.rules.append(rule)
        self.rules_by_graph_id[graph_id] = (user.id, rule)
        self.rules_by_identity[rule_identity] = (user.id, rule)
        return rule

    def _add_group(self, spec: Mapping[str, Any]) -> Group:
        gid = str(spec.get("id") or uuid.uuid5(uuid.UUID(self.tenant_id), "group/" + spec["displayName"])).lower()
        props = {
            "id": gid, "displayName": spec.get("displayName", gid), "description": spec.get("description"),
            "mailEnabled": bool(spec.get("mailEnabled", False)), "securityEnabled": bool(spec.get("securityEnabled", True)),
            "groupTypes": list(spec.get("groupTypes", [])), "isAssignableToRole": bool(spec.get("isAssignableToRole", False)),
            "mailNickname": spec.get("mailNickname") or "".join(ch for ch in spec.get("displayName", gid) if ch.isalnum()),
            "createdDateTime": spec.get("createdDateTime") or iso(self.now - dt.timedelta(days=400)),
        }
        group = Group(props)
        for ref in spec.get("members", []):
            user = self.find_user(ref)
            if user is None:
                raise SeedError(f"group {props['displayName']}: unknown member {ref}")
            group.members[user.id] = None
        self.groups[gid] = group
        return group

    def add_detection(self, user: User, spec: Mapping[str, Any]) -> dict:
        """Add a riskDetection for `user` (Graph shape; additionalInfo is a JSON string)."""
        det = {
            "id": spec.get("id") or hashlib.sha256(f"{user.id}/{len(self.detections)}".encode()).hexdigest(),
            "requestId": spec.get("requestId") or str(uuid.uuid4()),
            "correlationId": spec.get("correlationId") or str(uuid.uuid4()),
            "riskType": spec.get("riskType", spec.get("riskEventType", "unfamiliarFeatures")),
            "riskEventType": spec.get("riskEventType", spec.get("riskType", "unfamiliarFeatures")),
            "riskState": spec.get("riskState", "atRisk"),
            "riskLevel": spec.get("riskLevel", "high"),
            "riskDetail": spec.get("riskDetail", "none"),
            "source": spec.get("source", "IdentityProtection"),
            "detectionTimingType": spec.get("detectionTimingType", "realtime"),
            "activity": spec.get("activity", "signin"),
            "tokenIssuerType": spec.get("tokenIssuerType", "AzureAD"),
            "ipAddress": spec.get("ipAddress", "185.220.101.47"),
            "activityDateTime": spec.get("activityDateTime") or iso(utcnow()),
            "detectedDateTime": spec.get("detectedDateTime") or iso(utcnow()),
            "lastUpdatedDateTime": spec.get("lastUpdatedDateTime") or iso(utcnow()),
            "userId": user.id,
            "userDisplayName": user.display_name,
            "userPrincipalName": user.upn,
            "additionalInfo": spec.get("additionalInfo", "[]"),
            "location": spec.get("location"),
        }
        self.detections.append(det)
        return det

    def add_alert(self, spec: Mapping[str, Any]) -> dict:
        """Add an alerts_v2 alert (Graph shape)."""
        alert = copy.deepcopy(dict(spec))
        alert.setdefault("@odata.type", "#microsoft.graph.security.alert")
        alert.setdefault("id", "sim" + uuid.uuid4().hex)
        alert.setdefault("providerAlertId", alert["id"])
        alert.setdefault("tenantId", self.tenant_id)
        alert.setdefault("status", "new")
        alert.setdefault("createdDateTime", iso(utcnow()))
        alert.setdefault("lastUpdateDateTime", alert["createdDateTime"])
        alert.setdefault("evidence", [])
        alert.setdefault("comments", [])
        if alert["id"] in self.alert_index:
            raise SeedError(f"duplicate alert id {alert['id']}")
        self.alerts.append(alert)
        self.alert_index[alert["id"]] = alert
        return alert

    def add_audit(self, user: User, spec: Mapping[str, Any]) -> dict:
        """Append a directoryAudit about ``user`` (security-info events by default: the Authentication
        Methods service, category UserManagement). ``spec``: activity, method (a key of AUDIT_METHOD_NAMES),
        at, ipAddress, by ("user" | "admin" | "app"), resultReason, operationType."""
        activity = spec.get("activity", "User registered security info")
        method = spec.get("method")
        if method is not None and method not in AUDIT_METHOD_NAMES:
            raise SeedError(f"{user.upn}: unknown audit method {method!r}")
        verb = activity.split(" ", 2)[1] if activity.startswith(("User ", "Admin ")) else activity
        actor = "Admin" if activity.startswith("Admin ") else "User"
        reason = spec.get("resultReason") or (f"{actor} {verb} {AUDIT_METHOD_NAMES[method]}" if method else activity)
        by = spec.get("by", "admin" if actor == "Admin" else "user")
        if by == "app":
            initiated = {"app": {"appId": self.mi_client_id, "displayName": self.mi_display_name,
                                 "servicePrincipalId": self.mi_object_id, "servicePrincipalName": None},
                         "user": None}
        else:
            who = user if by == "user" else None
            initiated = {"app": None, "user": {
                "id": who.id if who else str(uuid.uuid5(uuid.UUID(self.tenant_id), "admin")),
                "displayName": None, "userPrincipalName": who.upn if who else f"admin@{self.domain}",
                "ipAddress": spec.get("ipAddress", "185.220.101.47" if who else "10.0.0.4"),
                "userType": None, "homeTenantId": None, "homeTenantName": None}}
        when = spec.get("at") or iso(utcnow())
        event = {
            "id": "AuthMethods_" + str(uuid.uuid4()),
            "category": spec.get("category", "UserManagement"),
            "correlationId": str(uuid.uuid4()),
            "result": spec.get("result", "success"),
            "resultReason": reason,
            "activityDisplayName": activity,
            "activityDateTime": when,
            "loggedByService": spec.get("loggedByService", "Authentication Methods"),
            "operationType": spec.get("operationType", "Add" if " registered " in activity else "Update"),
            "initiatedBy": initiated,
            "targetResources": [{"id": user.id, "displayName": user.display_name, "type": "User",
                                 "userPrincipalName": user.upn, "groupType": None, "modifiedProperties": []}],
            "additionalDetails": list(spec.get("additionalDetails", [])),
        }
        self.audits.append(event)
        self.audits.sort(key=lambda e: e["activityDateTime"])
        return event

    def roles_of(self, user: User, eligible: bool = False) -> list[dict]:
        """The user's active (or PIM-eligible) role assignments, Graph-shaped building blocks."""
        names = user.eligible_roles if eligible else user.admin_roles
        return [{"displayName": name, "roleTemplateId": ROLE_TEMPLATES[name],
                 "directoryRoleId": str(uuid.uuid5(uuid.UUID(self.tenant_id), "directoryRole/" + name))}
                for name in names]

    def account_enabled_refusal(self, user: User) -> str | None:
        """Why Entra refuses to change ``accountEnabled`` (assumed: like any on-premises-mastered property)."""
        if user.synced:
            return ("Unable to update the specified properties for on-premises mastered Directory Sync objects or "
                    "objects currently undergoing migration.")
        return None

    def password_refusal(self, user: User) -> str | None:
        """Why Entra refuses a cloud password reset of ``user`` (None when it can be reset here)."""
        if user.synced:
            return ("Unable to update the specified properties for on-premises mastered Directory Sync objects or "
                    "objects currently undergoing migration.")
        if self.domains.get(user.domain) == "Federated":
            return "Unable to update the specified properties for objects that have originated within an external service."
        return None

    def user_alert(self, user: User, title: str = "Suspicious inbox forwarding", severity: str = "high") -> dict:
        """Build and add a user-compromise alert with userEvidence for `user`."""
        now = iso(utcnow())
        account = {"accountName": user.upn.split("@")[0], "domainName": user.upn.split("@")[1],
                   "userSid": None, "azureAdUserId": user.id, "userPrincipalName": user.upn,
                   "displayName": user.display_name}
        alert_id = "fa" + uuid.uuid4().hex
        incident_id = str(40000 + len(self.alerts))
        return self.add_alert({
            "id": alert_id, "incidentId": incident_id, "status": "new",
            "detectorId": str(uuid.uuid5(uuid.UUID(self.tenant_id), "detector/" + title)), "assignedTo": None,
            "description": f"{title}: activity on {user.upn} indicates that the account may be compromised.",
            "recommendedActions": "Reset the user's password, revoke sessions and review inbox rules and forwarding.",
            "alertWebUrl": f"https://security.microsoft.com/alerts/{alert_id}?tid={self.tenant_id}",
            "incidentWebUrl": f"https://security.microsoft.com/incidents/{incident_id}?tid={self.tenant_id}",
            "actorDisplayName": None, "threatDisplayName": None, "threatFamilyName": None, "systemTags": [],
            "severity": severity, "classification": None, "determination": None,
            "serviceSource": "microsoftDefenderForCloudApps", "detectionSource": "microsoftDefenderForCloudApps",
            "title": title, "category": "Exfiltration", "createdDateTime": now, "lastUpdateDateTime": now,
            "firstActivityDateTime": now, "lastActivityDateTime": now, "resolvedDateTime": None,
            "mitreTechniques": ["T1114.003"],
            "evidence": [{"@odata.type": "#microsoft.graph.security.userEvidence", "createdDateTime": now,
                          "verdict": "suspicious", "remediationStatus": "none", "remediationStatusDetails": None,
                          "roles": ["compromised"], "detailedRoles": [], "tags": [], "userAccount": account}],
        })

    # ------------------------------------------------------------------ lookups

    def find_user(self, key: str) -> User | None:
        """By object id or userPrincipalName (case-insensitive)."""
        if not key:
            return None
        low = key.lower()
        user = self.users.get(low)
        if user is not None:
            return user
        uid = self.upn_index.get(low)
        return self.users.get(uid) if uid else None

    def find_mailbox(self, identity: str) -> User | None:
        """Resolve an Exchange identity: object id, UPN, SMTP address, alias, display name or ExchangeGuid."""
        if not isinstance(identity, str) or not identity:
            return None
        low = identity.strip().lower()
        if low.startswith("smtp:"):
            low = low[5:]
        user = self.find_user(low)
        if user is None and low in self.mail_index:
            user = self.users[self.mail_index[low]]
        if user is None:
            for candidate in self.users.values():
                if candidate.mailbox is None:
                    continue
                if (str(candidate.props.get("mailNickname", "")).lower() == low
                        or str(candidate.props.get("displayName", "")).lower() == low
                        or candidate.mailbox["ExchangeGuid"].lower() == low):
                    user = candidate
                    break
        if user is None or user.mailbox is None:
            return None
        return user

    def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to."""
        return [gid for gid, g in self.groups.items() if user_id in g.members]

    # ------------------------------------------------------------------ mutations

    def mutate(self, action: str, user: User | None = None, **details: Any) -> dict:
        """Append a mutation record (never contains secrets)."""
        self.mutation_seq += 1
        entry: dict[str, Any] = {"seq": self.mutation_seq, "time": iso(utcnow()), "action": action,
                 "user": user.id if user else None, "userPrincipalName": user.upn if user else None}
        if details:
            entry["details"] = details
        self.mutations.append(entry)
        logger.debug("mutation %s user=%s %s", action, entry["user"], details)
        return entry

    def set_password(self, user: User, password: str, force_change: bool) -> dict:
        """Record a password reset: only a count, a SHA-256 and timestamps are kept."""
        now = iso(utcnow())
        digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
        writeback = user.password_writeback if user.synced else None
        record = {"time": now, "sha256": digest, "force_change": force_change, "writeback": writeback}
        pw = user.password
        pw["changes"] += 1
        pw["last_sha256"] = digest
        pw["force_change"] = force_change
        pw["changed_at"] = now
        pw["records"].append(record)
        user.props["lastPasswordChangeDateTime"] = now
        for method in user.methods:
            if method["type"] == "password":
                method["createdDateTime"] = now
        self.mutate("password_reset", user, force_change=force_change, writeback=writeback, sha256=digest)
        if self.settings.get("passwordResetRemediatesRisk"):
            risk = self.risky.get(user.id)
            if risk and risk["riskState"] in ("atRisk", "confirmedCompromised"):
                self._set_risk(user, "none", "remediated", "adminGeneratedTemporaryPassword", now)
                for det in self.detections:
                    if det["userId"] == user.id and det["riskState"] in ("atRisk", "confirmedCompromised"):
                        det.update({"riskState": "remediated", "riskDetail": "adminGeneratedTemporaryPassword",
                                    "lastUpdatedDateTime": now})
                self.mutate("risk_remediated", user, reason="adminGeneratedTemporaryPassword")
        return record

    def set_force_change(self, user: User, force_change: bool) -> None:
        """passwordProfile without a password: only the flag changes."""
        user.password["force_change"] = force_change
        self.mutate("password_force_change", user, force_change=force_change)

    def set_account_enabled(self, user: User, enabled: bool) -> None:
        """PATCH accountEnabled."""
        user.props["accountEnabled"] = enabled
        self.mutate("account_enabled", user, accountEnabled=enabled)

    def revoke_sessions(self, user: User) -> None:
        """revokeSignInSessions."""
        now = iso(utcnow())
        user.revocations += 1
        user.last_revoked_at = now
        user.props["signInSessionsValidFromDateTime"] = now
        self.mutate("sessions_revoked", user, count=user.revocations)

    def add_member(self, group: Group, user: User) -> None:
        """Add `user` to `group`."""
        group.members[user.id] = None
        self.mutate("group_member_added", user, group=group.id, groupName=group.props["displayName"])

    def remove_member(self, group: Group, user: User) -> None:
        """Remove `user` from `group`."""
        group.members.pop(user.id, None)
        self.mutate("group_member_removed", user, group=group.id, groupName=group.props["displayName"])

    def set_per_user_mfa(self, user: User, value: str) -> None:
        """beta authentication/requirements."""
        old = user.per_user_mfa
        user.per_user_mfa = value
        self.mutate("per_user_mfa", user, old=old, new=value)

    def delete_method(self, user: User, method: dict) -> None:
        """Remove an authentication method (the directory audit records it as the app's doing)."""
        user.methods.remove(method)
        if user.default_method == method["id"]:
            user.default_method = None
        gone = {k: v for k, v in method.items() if k != "passSha256"}
        gone["deletedDateTime"] = iso(utcnow())
        user.deleted_methods.append(gone)
        self.mutate("auth_method_deleted", user, type=method["type"], id=method["id"],
                    displayName=method.get("displayName"))
        kind = method["type"] if method["type"] != "phone" else f"phone:{method.get('phoneType', 'mobile')}"
        self.add_audit(user, {"activity": "Admin deleted security info", "method": kind, "by": "app",
                              "operationType": "Delete"})

    def add_tap(self, user: User, pass_sha256: str, lifetime: int, usable_once: bool,
                start: dt.datetime | None) -> dict:
        """Create a Temporary Access Pass (replaces an existing one); only its SHA-256 is kept."""
        for method in [m for m in user.methods if m["type"] == "temporaryAccessPass"]:
            user.methods.remove(method)
        now = utcnow()
        start_at = start or now
        usable = start_at <= now
        method = {
            "type": "temporaryAccessPass", "id": str(uuid.uuid4()), "temporaryAccessPass": None,
            "createdDateTime": iso(now), "startDateTime": iso(start_at), "lifetimeInMinutes": lifetime,
            "isUsableOnce": usable_once, "isUsable": usable,
            "methodUsabilityReason": "EnabledByPolicy" if usable else "NotYetValid", "passSha256": pass_sha256,
        }
        user.methods.append(method)
        user.tap_issued += 1
        self.mutate("tap_created", user, id=method["id"], lifetimeInMinutes=lifetime, isUsableOnce=usable_once)
        return method

    def _set_risk(self, user: User, level: str, state: str, detail: str, when: str | None) -> dict:
        rec = self.risky.get(user.id)
        if rec is None:
            rec = {"id": user.id, "isDeleted": False, "isProcessing": False}
            self.risky[user.id] = rec
        rec.update({"riskLevel": level, "riskState": state, "riskDetail": detail, "riskLastUpdatedDateTime": when,
                    "userDisplayName": user.display_name, "userPrincipalName": user.upn})
        self.risk_history.setdefault(user.id, []).append(dict(rec))
        return rec

    def set_risk(self, user: User, level: str, state: str, detail: str) -> dict:
        """Set a user's risk (records a mutation)."""
        rec = self._set_risk(user, level, state, detail, iso(utcnow()))
        self.mutate("risk_changed", user, riskLevel=level, riskState=state, riskDetail=detail)
        return rec

    def confirm_compromised(self, user: User) -> None:
        """riskyUsers/confirmCompromised: user risk high / confirmedCompromised, and Identity Protection
        records it as a risk detection of its own (riskEventType adminConfirmedUserCompromised)."""
        self.set_risk(user, "high", "confirmedCompromised", "adminConfirmedUserCompromised")
        now = iso(utcnow())
        self.add_detection(user, {"riskEventType": "adminConfirmedUserCompromised", "riskLevel": "high",
                                  "riskState": "confirmedCompromised", "riskDetail": "adminConfirmedUserCompromised",
                                  "source": "IdentityProtection", "detectionTimingType": "offline", "activity": "user",
                                  "ipAddress": None, "activityDateTime": now, "detectedDateTime": now,
                                  "lastUpdatedDateTime": now})

    def dismiss_risk(self, user: User) -> None:
        """riskyUsers/dismiss: also dismisses the user's open detections."""
        if user.id not in self.risky:
            return
        now = iso(utcnow())
        self.set_risk(user, "none", "dismissed", "adminDismissedAllRiskForUser")
        for det in self.detections:
            if det["userId"] == user.id and det["riskState"] == "atRisk":
                det.update({"riskState": "dismissed", "riskDetail": "adminDismissedAllRiskForUser",
                            "lastUpdatedDateTime": now})

    def update_rule(self, user: User, rule: dict, changes: Mapping[str, Any], via: str) -> None:
        """Apply Graph-style changes (displayName, sequence, isEnabled, conditions, actions, exceptions)."""
        before = {k: rule.get(k) for k in changes}
        for key, value in changes.items():
            rule[key] = copy.deepcopy(value)
        self.mutate("inbox_rule_updated", user, rule=rule["graphId"], ruleIdentity=rule["ruleIdentity"],
                    name=rule["displayName"], hidden=rule["hidden"], via=via, before=before,
                    after=dict(changes))

    def remove_client_rules(self, user: User, via: str) -> list[str]:
        """A rule change made through Exchange rewrites the rules blob: Outlook's client-side rules are gone."""
        gone = [r.get("name", "") for r in user.client_rules]
        if gone:
            user.client_rules = []
            self.mutate("client_rules_removed", user, names=gone, via=via)
        return gone

    def set_mailbox(self, user: User, changes: Mapping[str, Any]) -> None:
        """Set-Mailbox / Set-MailboxAuditBypassAssociation."""
        assert user.mailbox is not None
        before = {k: user.mailbox.get(k) for k in changes}
        user.mailbox.update(changes)
        self.mutate("mailbox_updated", user, before=before, after=dict(changes))

    def unblock_sender(self, address: str) -> dict | None:
        """Remove-BlockedSenderAddress. Returns the removed row (None if it was not listed)."""
        row = self.blocked.pop(address.lower(), None)
        user = self.find_user(address) or (self.users.get(self.mail_index.get(address.lower(), "")))
        self.mutate("sender_unblocked", user, address=address, was_blocked=row is not None)
        return row

    def send_mail(self, user: User, message: Mapping[str, Any], save: Any) -> dict:
        """Store a sent message in the outbox."""
        def addresses(key: str) -> list[str]:
            return [r.get("emailAddress", {}).get("address") for r in message.get(key) or []
                    if isinstance(r, Mapping)]
        body = message.get("body") or {}
        entry = {
            "id": str(uuid.uuid4()), "from": user.upn, "sentDateTime": iso(utcnow()),
            "subject": message.get("subject"), "body": {"contentType": body.get("contentType", "Text"),
                                                        "content": body.get("content")},
            "toRecipients": addresses("toRecipients"), "ccRecipients": addresses("ccRecipients"),
            "bccRecipients": addresses("bccRecipients"), "importance": message.get("importance"),
            "saveToSentItems": save,
        }
        self.outbox.append(entry)
        self.mutate("mail_sent", user, id=entry["id"], subject=entry["subject"], to=entry["toRecipients"])
        return entry

    # ------------------------------------------------------------------ bulk users

    def add_generated_users(self, count: int, prefix: str = "user", start: int = 1, risky: bool = False,
                            compromised: bool = False) -> list[dict]:
        """Create `count` deterministic users `<prefix><nnnnn>@domain` (existing ones are returned as is)."""
        out = []
        ns = uuid.UUID(self.tenant_id)
        for i in range(start, start + count):
            upn = f"{prefix}{i:05d}@{self.domain}"
            user = self.find_user(upn)
            if user is None:
                uid = str(uuid.uuid5(ns, upn.lower()))
                created = iso(self.now - dt.timedelta(days=100))
                spec: dict[str, Any] = {
                    "id": uid, "userPrincipalName": upn, "displayName": f"{prefix.title()} User {i:05d}",
                    "givenName": prefix.title(), "surname": f"{i:05d}", "createdDateTime": created,
                    "usageLocation": "US", "preferredLanguage": "en-US",
                    "authMethods": [
                        {"type": "password", "id": "28c10230-6103-485e-b985-444c60001490", "createdDateTime": created},
                        {"type": "phone", "id": "3179e48a-750b-4051-897c-87b9720928f7",
                         "phoneNumber": f"+1 555{i:07d}", "phoneType": "mobile", "smsSignInState": "notAllowedByPolicy"},
                    ],
                    "mailbox": {"AuditEnabled": True},
                    "inboxRules": [],
                }
                if risky or compromised:
                    spec["risk"] = {"riskLevel": "high", "riskState": "atRisk", "riskDetail": "none",
                                    "riskLastUpdatedDateTime": iso(utcnow())}
                    spec["riskDetections"] = [{"riskEventType": "unfamiliarFeatures", "riskLevel": "high",
                                               "id": hashlib.sha256(upn.encode()).hexdigest()}]
                if compromised:
                    external = f"{prefix}{i:05d}.fwd@outlook-mailsync.example"
                    spec["authMethods"].append({
                        "type": "microsoftAuthenticator", "id": str(uuid.uuid5(ns, upn + "/attacker")),
                        "displayName": "SM-A546B", "deviceTag": "SoftwareTokenActivated",
                        "phoneAppVersion": "6.2403.1601", "createdDateTime": iso(utcnow())})
                    spec["mailbox"] = {"AuditEnabled": False, "AuditBypassEnabled": True,
                                       "ForwardingSmtpAddress": "smtp:" + external}
                    spec["inboxRules"] = [{"displayName": "Sync", "conditions": {},
                                           "actions": {"forwardTo": [{"emailAddress": {"name": external,
                                                                                       "address": external}}]}}]
                user = self._add_user(spec)
                if compromised:
                    self.blocked[upn.lower()] = {"SenderAddress": upn, "Reason": "OutboundSpamLast24HoursRecipientThreshold",
                                                 "CreatedDatetime": iso(utcnow()), "ChangedDatetime": iso(utcnow())}
            out.append({"id": user.id, "userPrincipalName": user.upn})
        self.mutate("users_generated", None, prefix=prefix, count=count, risky=risky, compromised=compromised)
        return out

    # ------------------------------------------------------------------ rendering

    def render_method(self, method: Mapping[str, Any]) -> dict:
        """Graph shape of an authentication method."""
        typ = method["type"]
        out = {"@odata.type": METHOD_TYPES[typ][0], "id": method["id"]}
        for prop in METHOD_PROPS[typ]:
            out[prop] = method.get(prop)
        return out

    def render_risk_history(self, user_id: str) -> list[dict]:
        """riskyUserHistoryItem objects (riskyuserhistoryitem.md): the riskyUser's properties as they were
        after each change, with ``userId``, ``initiatedBy`` (the app, for an admin action) and ``activity``."""
        out = []
        for entry in self.risk_history.get(user_id, []):
            item = self.render_risky_user(entry, False)
            admin = str(entry.get("riskDetail", "")).startswith("admin")
            item.update({"userId": user_id, "initiatedBy": self.mi_client_id if admin else None,
                         "activity": {"detail": entry.get("riskDetail"), "riskEventTypes": []}})
            out.append(item)
        return out

    def render_risky_user(self, rec: Mapping[str, Any], beta: bool) -> dict:
        """Graph shape of a riskyUser."""
        out = {"id": rec["id"], "isDeleted": rec["isDeleted"], "isProcessing": rec["isProcessing"],
               "riskLevel": rec["riskLevel"], "riskState": rec["riskState"], "riskDetail": rec["riskDetail"],
               "riskLastUpdatedDateTime": rec["riskLastUpdatedDateTime"],
               "userDisplayName": rec["userDisplayName"], "userPrincipalName": rec["userPrincipalName"]}
        if beta:
            out["isGuest"] = False
        return out

    def render_graph_rule(self, rule: Mapping[str, Any]) -> dict:
        """Graph messageRule shape."""
        out = {"id": rule["graphId"], "displayName": rule["displayName"], "sequence": rule["sequence"],
               "isEnabled": rule["isEnabled"], "hasError": False, "isReadOnly": rule.get("readOnly", False),
               "conditions": copy.deepcopy(rule["conditions"]), "actions": copy.deepcopy(rule["actions"])}
        if rule.get("exceptions"):
            out["exceptions"] = copy.deepcopy(rule["exceptions"])
        return out

    def dump(self, user_keys: Iterable[str] | None = None, include_users: bool = True) -> dict:
        """JSON view of the whole state for /_sim/state (no secrets)."""
        users: dict[str, Any] = {}
        if include_users:
            selected: Iterable[User] = self.users.values()
            if user_keys:
                found = [self.find_user(k) for k in user_keys]
                selected = [u for u in found if u is not None]
            for user in selected:
                users[user.upn.lower()] = self._dump_user(user)
        return {
            "tenant": {"id": self.tenant_id, "domain": self.domain, "displayName": self.tenant_name},
            "managedIdentity": {"clientId": self.mi_client_id, "objectId": self.mi_object_id,
                                "granted": sorted(self.granted), "denied": sorted(self.denied),
                                "effective": sorted(self.granted - self.denied),
                                "directoryRoles": sorted(self.directory_roles)},
            "users": users,
            "user_count": len(self.users),
            "groups": {gid: {"displayName": g.props["displayName"], "members": list(g.members)}
                       for gid, g in self.groups.items()},
            "blocked_senders": list(self.blocked.values()),
            "org_config": {"AuditDisabled": self.org_config.get("AuditDisabled")},
            "outbox": list(self.outbox),
            "oauth2_grants": [self.access.render_grant(g) for g in self.access.grants.values()],
            "service_principals": list(self.access.service_principals.values()),
            "unified_audit": [dict(r) for r in self.access.unified_audit],
            "alerts": [{"id": a["id"], "title": a.get("title"), "status": a.get("status"),
                        "lastUpdateDateTime": a.get("lastUpdateDateTime")} for a in self.alerts],
            "mutations": list(self.mutations),
        }

    def _dump_user(self, user: User) -> dict:
        pw = user.password
        risk = self.risky.get(user.id)
        mailbox = None
        if user.mailbox is not None:
            mailbox = {k: v for k, v in user.mailbox.items() if k != "folders"}
        folder_names = {v: k for k, v in (user.mailbox or {}).get("folders", {}).items()}
        rules = []
        for r in user.rules:
            item = {"id": r["graphId"], "ruleIdentity": r["ruleIdentity"], "displayName": r["displayName"],
                    "sequence": r["sequence"], "isEnabled": r["isEnabled"], "hidden": r["hidden"],
                    "system": r["system"], "readOnly": r.get("readOnly", False), "conditions": r["conditions"], "actions": copy.deepcopy(r["actions"])}
            for key in ("moveToFolder", "copyToFolder"):
                if key in item["actions"]:
                    item["actions"][key] = folder_names.get(item["actions"][key], item["actions"][key])
            rules.append(item)
        methods = []
        for m in user.methods:
            item = self.render_method(m)
            item["type"] = m["type"]
            methods.append(item)
        return {
            "id": user.id,
            "userPrincipalName": user.upn,
            "displayName": user.display_name,
            "accountEnabled": user.props.get("accountEnabled"),
            "onPremisesSyncEnabled": user.props.get("onPremisesSyncEnabled"),
            "passwordWriteback": user.password_writeback,
            "adminRoles": list(user.admin_roles),
            "eligibleRoles": list(user.eligible_roles),
            "default_method": user.default_method,
            "client_rules": [dict(r) for r in user.client_rules],
            "password_changes": pw["changes"],
            "last_password_sha256": pw["last_sha256"],
            "force_change": pw["force_change"],
            "password_changed_at": pw["changed_at"],
            "password_change_records": list(pw["records"]),
            "revocations": user.revocations,
            "last_revoked_at": user.last_revoked_at,
            "per_user_mfa": user.per_user_mfa,
            "auth_methods": methods,
            "deleted_auth_methods": list(user.deleted_methods),
            "taps_issued": user.tap_issued,
            # Only the SHA-256 of an issued pass is kept (a test proves the mailed pass is the issued one).
            "tap_sha256": [m["passSha256"] for m in user.methods if m["type"] == "temporaryAccessPass"],
            "manager": user.manager if isinstance(user.manager, (str, type(None))) else "orgContact",
            "rules": rules,
            "mailbox": mailbox,
            "blocked": (user.upn.lower() in self.blocked
                        or bool(user.props.get("mail")) and user.props["mail"].lower() in self.blocked),
            "risk": dict(risk) if risk else None,
            "risk_detections": [{"id": d["id"], "riskEventType": d["riskEventType"], "riskState": d["riskState"],
                                 "riskLevel": d["riskLevel"], "detectedDateTime": d["detectedDateTime"]}
                                for d in self.detections if d["userId"] == user.id],
            "groups": self.groups_of(user.id),
            "audit_events": [{"activityDisplayName": a["activityDisplayName"], "resultReason": a["resultReason"],
                              "activityDateTime": a["activityDateTime"]}
                             for a in self.audits if a["targetResources"][0]["id"] == user.id],
            **self.access.dump_user(user),
        }


__all__ = ["TenantState", "User", "Group", "load_seed", "DEFAULT_SEED_PATH", "METHOD_TYPES", "COLLECTION_TO_TYPE",
           "USER_PROPERTY_MAP", "USER_DEFAULT_PROPERTIES", "RESET_ROLES_ADMIN", "RESET_ROLES_NON_ADMIN",
           "generate_secure_scores", "SeedError", "exo_time", "parse_iso"]
