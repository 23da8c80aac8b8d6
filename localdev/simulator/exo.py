"""Simulated Exchange Online admin API: POST /adminapi/beta/{tenantId}/InvokeCommand.

Body: {"CmdletInput": {"CmdletName": "...", "Parameters": {...}}}. Answers the envelope of
samples/exo-invokecommand-envelope-complete.json; errors follow samples/exo-invokecommand-error-*.json
(HTTP 4xx, error.message "Invalid Operation", real reason in error.innererror.internalexception.message).

Inbox rules are the same objects the Graph messageRules endpoints use; EXO additionally sees
hidden rules (Get-InboxRule -IncludeHidden).

Documented choices:
- Remove-BlockedSenderAddress for an address that is not blocked answers 200 with an empty value
  and a warning in @adminapi.warnings (idempotent, so a retried step does not fail).
- An unknown mailbox answers HTTP 404, code "NotFound", with ManagementObjectNotFoundException
  "The operation couldn't be performed because object '<id>' couldn't be found on '...'."
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Mapping

from .access import MAILBOX_RIGHTS
from .odata import exo_time, parse_iso
from .state import TenantState, User

logger = logging.getLogger(__name__)

EXO_ROOT = "https://outlook.office365.com/adminapi/beta"
_SERVER = "AM0PR01A001DC01.EURPRD01.PROD.OUTLOOK.COM"


class ExoError(Exception):
    """An InvokeCommand error (status, code, exception type, message)."""

    def __init__(self, status: int, code: str, exc_type: str, message: str, details: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.exc_type = exc_type
        self.message = message
        self.details = details

    def body(self) -> dict:
        """Error body shaped like the samples: with ``details`` as exo-invokecommand-error-unknown-parameter.json,
        without them as exo-invokecommand-error-invalid-enum.json (which carries the warnings sidecar)."""
        err: dict[str, Any] = {"code": self.code, "message": "Invalid Operation"}
        if self.details:
            err["details"] = [{"code": "Client", "target": "", "message": f"|{self.exc_type}|{self.message}"}]
        err["innererror"] = {
            "message": "Invalid Operation",
            "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "stacktrace": "",
            "internalexception": {"message": self.message, "type": self.exc_type, "stacktrace": ""},
        }
        if not self.details:
            err["adminapi.warnings@odata.type"] = "#Collection(String)"
            err["@adminapi.warnings"] = []
        return {"error": err}


def unknown_parameters(names: list[str]) -> ExoError:
    """Like samples/exo-invokecommand-error-unknown-parameter.json."""
    return ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException",
                    "Parameter set cannot be resolved using the specified named parameters. Invalid cmdlet "
                    "parameters specified. " + ", ".join(names), details=True)


def not_found(identity: Any) -> ExoError:
    """ManagementObjectNotFoundException."""
    return ExoError(404, "NotFound", "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                    f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                    f"'{_SERVER}'.", details=True)


def missing_parameter(name: str) -> ExoError:
    """A mandatory parameter is missing."""
    return ExoError(400, "BadRequest", "System.Management.Automation.ParameterBindingException",
                    f"Cannot process command because of one or more missing mandatory parameters: {name}.",
                    details=True)


SYSTEM_MAILBOX = "systemmailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


def check_anchor(st: TenantState, tenant: str, anchor: str | None, cmdlet: str) -> None:
    """X-AnchorMailbox routes an InvokeCommand to a mailbox server; public clients always send one:
    ``APP:SystemMailbox{bb558c35-...}@{tenant id or initial domain}`` (app-only), ``UPN:SystemMailbox{...}@{domain}``
    or ``UPN:{user}`` for mailbox cmdlets. Missing, malformed or foreign anchors are refused here with the
    proxy error the reference notes (strict: the real service may route some unanchored calls anyway)."""
    def refuse(why: str) -> ExoError:
        return ExoError(400, "BadRequest", "Microsoft.Exchange.Configuration.Tasks.CmdletProxyNotAvailableException",
                        f"Cmdlet '{cmdlet}' couldn't be proxied to the mailbox server: {why}.")
    if not anchor or not anchor.strip():
        raise refuse("the X-AnchorMailbox header is missing")
    kind, sep, target = anchor.strip().partition(":")
    kind = kind.upper()
    if not sep or kind not in ("APP", "UPN", "SMTP") or "@" not in target:
        raise refuse(f"X-AnchorMailbox '{anchor[:120]}' is not of the form UPN:<mailbox> or APP:SystemMailbox{{...}}@<tenant>")
    local, _, domain = target.rpartition("@")
    domain = domain.lower()
    if local.lower() == SYSTEM_MAILBOX:
        if domain in (st.tenant_id, st.domain.lower()) and domain in (tenant.lower(), st.tenant_id, st.domain.lower()):
            return
        raise refuse(f"the system mailbox anchor names another organization ({domain})")
    if kind == "APP":
        raise refuse("an APP: anchor must name the organization's system mailbox")
    if st.find_mailbox(target) is None:
        raise refuse(f"the anchor mailbox '{target}' was not found in this organization")


def _bool(params: Mapping[str, Any], name: str) -> bool:
    value = params[name]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower().lstrip("$") in ("true", "false"):
        return value.strip().lower().lstrip("$") == "true"
    raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException",
                   f"Cannot process argument transformation on parameter '{name}'. Cannot convert value "
                   f"\"{value}\" to type \"System.Boolean\". Boolean parameters accept only Boolean values and "
                   "numbers, such as $True, $False, 1 or 0.")


def _mailbox(st: TenantState, identity: Any) -> User:
    user = st.find_mailbox(identity) if isinstance(identity, str) else None
    if user is None:
        raise not_found(identity)
    return user


# ---------------------------------------------------------------------- rows

def mailbox_row(st: TenantState, user: User) -> dict:
    """Get-Mailbox row (keys as samples/exo-get-mailbox-row-user.json, plus Alias/Name/Guid)."""
    mb = user.mailbox or {}
    alias = user.props.get("mailNickname") or user.upn.split("@")[0]
    mail = user.props.get("mail") or user.upn
    return {
        "UserPrincipalName": user.upn,
        "DisplayName": user.display_name,
        "Alias": alias,
        "Name": alias,
        "PrimarySmtpAddress": mail,
        "RecipientTypeDetails": "UserMailbox",
        "ExchangeGuid": mb.get("ExchangeGuid"),
        "Guid": mb.get("ExchangeGuid"),
        "ExternalDirectoryObjectId": user.id,
        "LitigationHoldEnabled": False,
        "LitigationHoldDuration": "Unlimited",
        "LitigationHoldDate": None,
        "LitigationHoldOwner": "",
        "InPlaceHolds": [],
        "RetentionHoldEnabled": False,
        "SingleItemRecoveryEnabled": True,
        "RetainDeletedItemsFor": "14.00:00:00",
        "ComplianceTagHoldApplied": False,
        "ForwardingAddress": mb.get("ForwardingAddress"),
        "ForwardingSmtpAddress": mb.get("ForwardingSmtpAddress"),
        "DeliverToMailboxAndForward": mb.get("DeliverToMailboxAndForward", False),
        "HiddenFromAddressListsEnabled": False,
        "AuditEnabled": mb.get("AuditEnabled", True),
        "AuditLogAgeLimit": mb.get("AuditLogAgeLimit", "90.00:00:00"),
        "ArchiveStatus": "None",
        "ArchiveState": "None",
        "ArchiveGuid": "00000000-0000-0000-0000-000000000000",
        "IsMailboxEnabled": True,
        "AccountDisabled": not user.props.get("accountEnabled", True),
        "WhenMailboxCreated": exo_time(parse_iso(mb.get("WhenMailboxCreated"))),
        "MessageCopyForSentAsEnabled": False,
        "MessageCopyForSendOnBehalfEnabled": False,
        # Over the admin API the entries are object ids (public clients compare them with Graph user ids: assumed).
        "GrantSendOnBehalfTo": list(st.access.send_on_behalf.get(user.id, [])),
        "DistinguishedName": distinguished_name(st, user),
        "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)",
        "ProhibitSendReceiveQuota": "100 GB (107,374,182,400 bytes)",
        "IssueWarningQuota": "98 GB (105,226,698,752 bytes)",
        "MailboxPlan": "ExchangeOnlineEnterprise-b25353e8-da0a-43b2-b980-e977863ed352",
        "IsDirSynced": user.synced,
        "IsShared": False,
        "IsResource": False,
        "IsInactiveMailbox": False,
        "EmailAddresses": [f"SMTP:{mail}", f"smtp:{alias}@{st.domain.replace('.onmicrosoft.com', '')}.mail.onmicrosoft.com"],
        "Identity": user.id,
    }


def distinguished_name(st: TenantState, user: User) -> str:
    alias = user.props.get("mailNickname") or user.upn.split("@")[0]
    return (f"CN={alias},OU={st.domain},OU=Microsoft Exchange Hosted Organizations,DC=EURPRD01,DC=PROD,"
            "DC=OUTLOOK,DC=COM")


def bypass_row(st: TenantState, user: User) -> dict:
    """Get-MailboxAuditBypassAssociation row (shape of samples/exo-get-mailboxauditbypassassociation-row.json)."""
    mb = user.mailbox or {}
    alias = user.props.get("mailNickname") or user.upn.split("@")[0]
    org = st.domain
    return {
        "ObjectId": alias,
        "AuditBypassEnabled": mb.get("AuditBypassEnabled", False),
        "Name": alias,
        "Identity": alias,
        "Id": alias,
        "IsValid": True,
        "DistinguishedName": distinguished_name(st, user),
        "ObjectClass@odata.type": "#Collection(String)",
        "ObjectClass": ["top", "person", "organizationalPerson", "user"],
        "WhenChangedUTC@data.type": "System.DateTime",
        "WhenChangedUTC": exo_time(parse_iso(mb.get("WhenMailboxCreated"))),
        "ExchangeObjectId@data.type": "System.Guid",
        "ExchangeObjectId": user.id,
        "OrganizationId": f"EURPRD01.PROD.OUTLOOK.COM/Microsoft Exchange Hosted Organizations/{org} - "
                          f"EURPRD01.PROD.OUTLOOK.COM/ConfigurationUnits/{org}/Configuration",
        "Guid@data.type": "System.Guid",
        "Guid": user.id,
    }


def _recipients(items: Any) -> list[str] | None:
    if not items:
        return None
    out = []
    for r in items:
        addr = (r.get("emailAddress") or {}).get("address", "") if isinstance(r, Mapping) else str(r)
        name = (r.get("emailAddress") or {}).get("name") or addr if isinstance(r, Mapping) else addr
        out.append(f'"{name}" [SMTP:{addr}]')
    return out


def _describe(cond: Mapping[str, Any], actions: Mapping[str, Any], folder: Callable[[str], str]) -> str:
    lines = ["If the message:"]
    if cond.get("bodyOrSubjectContains"):
        lines.append("\tincludes " + " or ".join(f"'{w}'" for w in cond["bodyOrSubjectContains"])
                     + " in the subject or body")
    if cond.get("subjectContains"):
        lines.append("\tincludes " + " or ".join(f"'{w}'" for w in cond["subjectContains"]) + " in the subject")
    if cond.get("bodyContains"):
        lines.append("\tincludes " + " or ".join(f"'{w}'" for w in cond["bodyContains"]) + " in the body")
    if cond.get("senderContains"):
        lines.append("\tincludes " + " or ".join(f"'{w}'" for w in cond["senderContains"])
                     + " in the sender's address")
    if len(lines) == 1:
        lines.append("\tapplies to all messages")
    lines.append("Take the following actions:")
    for key, verb in (("forwardTo", "forward the message to"), ("redirectTo", "redirect the message to"),
                      ("forwardAsAttachmentTo", "forward the message as an attachment to")):
        if actions.get(key):
            lines.append(f"\t{verb} " + " and ".join(
                f"'{(r.get('emailAddress') or {}).get('address')}'" for r in actions[key]))
    if actions.get("moveToFolder"):
        lines.append(f"\tmove the message to folder '{folder(actions['moveToFolder'])}'")
    if actions.get("copyToFolder"):
        lines.append(f"\tcopy the message to folder '{folder(actions['copyToFolder'])}'")
    if actions.get("delete"):
        lines.append("\tdelete the message")
    if actions.get("permanentDelete"):
        lines.append("\tpermanently delete the message")
    if actions.get("markAsRead"):
        lines.append("\tmark the message as read")
    if actions.get("stopProcessingRules"):
        lines.append("\tstop processing more rules")
    return "\r\n".join(lines) + "\r\n"


def inbox_rule_row(user: User, rule: Mapping[str, Any]) -> dict:
    """Get-InboxRule row (PascalCase), derived from the shared rule object."""
    folders = {v: k for k, v in (user.mailbox or {}).get("folders", {}).items()}
    alias = user.props.get("mailNickname") or user.upn.split("@")[0]

    def folder(fid: str) -> str:
        return folders.get(fid, fid)

    def folder_path(fid: Any) -> str | None:
        return f"{alias}:\\{folder(fid)}" if fid else None

    cond = rule.get("conditions") or {}
    actions = rule.get("actions") or {}
    return {
        "Name": rule["displayName"],
        "Enabled": rule["isEnabled"],
        "Priority": rule["sequence"],
        "RuleIdentity": rule["ruleIdentity"],
        "Identity": f"{alias}\\{rule['ruleIdentity']}",  # Exchange Online: MailboxAlias\RuleIdentity
        "MailboxOwnerId": user.id,
        "Description": _describe(cond, actions, folder),
        "InError": False,
        "ErrorType": None,
        # System rules (junk mail, out-of-office) are not managed by the *-InboxRule cmdlets (assumed property).
        "SupportedByTask": not rule.get("system", False),
        "StopProcessingRules": bool(actions.get("stopProcessingRules", False)),
        "ForwardTo": _recipients(actions.get("forwardTo")),
        "ForwardAsAttachmentTo": _recipients(actions.get("forwardAsAttachmentTo")),
        "RedirectTo": _recipients(actions.get("redirectTo")),
        "DeleteMessage": bool(actions.get("delete", False)),
        "SoftDeleteMessage": bool(actions.get("permanentDelete", False)),
        "MoveToFolder": folder_path(actions.get("moveToFolder")),
        "CopyToFolder": folder_path(actions.get("copyToFolder")),
        "MarkAsRead": bool(actions.get("markAsRead", False)),
        "MarkImportance": actions.get("markImportance"),
        "SubjectContainsWords": cond.get("subjectContains"),
        "BodyContainsWords": cond.get("bodyContains"),
        "SubjectOrBodyContainsWords": cond.get("bodyOrSubjectContains"),
        "FromAddressContainsWords": cond.get("senderContains"),
        "From": cond.get("fromAddresses"),
        "SentTo": cond.get("sentToAddresses"),
        "HasAttachment": cond.get("hasAttachments"),
        "IsValid": True,
    }


# ---------------------------------------------------------------------- cmdlets

Result = tuple[list[dict], list[str]]  # rows, warnings


def get_blocked(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    rows = list(st.blocked.values())
    if p.get("SenderAddress"):
        rows = [r for r in rows if r["SenderAddress"].lower() == str(p["SenderAddress"]).lower()]
        user = st.find_user(str(p["SenderAddress"]))
        if user:
            ctx["user"] = user.id
    return [dict(r) for r in rows], []


def remove_blocked(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    address = p.get("SenderAddress")
    if not address:
        raise missing_parameter("SenderAddress")
    user = st.find_user(str(address))
    if user:
        ctx["user"] = user.id
    row = st.unblock_sender(str(address))
    if row is None:
        return [], [f"The sender address '{address}' isn't on the restricted senders list."]
    return [], []


_SOB_FILTER = re.compile(r"^\s*GrantSendOnBehalfTo\s+-eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def _filter_mailboxes(st: TenantState, text: Any) -> list[User]:
    """``-Filter "GrantSendOnBehalfTo -eq '<DN>'"`` (filter-properties.md: the value must be a distinguished
    name or canonical DN; a multi-valued property matches when it contains the value). Other filters: 400."""
    match = _SOB_FILTER.match(str(text or ""))
    if not match:
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.Management.Tasks.ThrowTerminatingErrorException",
                       f"The simulator supports only -Filter \"GrantSendOnBehalfTo -eq '<DN>'\"; got {str(text)[:80]!r}.")
    value = match.group(1).replace("''", "'")
    if not value.upper().startswith("CN="):
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.Data.InvalidFilterException",
                       f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The value "
                       f"\"{value}\" could not be converted to type Microsoft.Exchange.Data.Directory.ADObjectId: the "
                       "GrantSendOnBehalfTo filter requires a distinguished name.\"")
    trustee = next((u for u in st.users.values() if u.mailbox is not None
                    and distinguished_name(st, u).lower() == value.lower()), None)
    if trustee is None:
        return []
    return [u for u in st.users.values() if u.mailbox is not None and trustee.id in st.access.send_on_behalf.get(u.id, [])]


def get_mailbox(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") is not None:
        user = _mailbox(st, p["Identity"])
        ctx["user"] = user.id
        return [mailbox_row(st, user)], []
    if p.get("Filter") is not None:
        return [mailbox_row(st, u) for u in _filter_mailboxes(st, p["Filter"])], []
    rows = [mailbox_row(st, u) for u in st.users.values() if u.mailbox is not None]
    size = p.get("ResultSize")
    warnings = []
    if size not in (None, "Unlimited", "unlimited"):
        try:
            limit = int(size)
        except (TypeError, ValueError):
            raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation."
                           "ParameterTransformationException",
                           f"Cannot process argument transformation on parameter 'ResultSize'. Cannot convert "
                           f"value \"{size}\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\".") from None
        if len(rows) > limit:
            warnings.append("There are more results available than are currently displayed. To view them, "
                            "increase the value for the ResultSize parameter.")
        rows = rows[:limit]
    return rows, warnings


_SET_MAILBOX_BOOLS = ("DeliverToMailboxAndForward", "AuditEnabled")
_NO_CHANGE = "The command completed successfully but no settings of '{identity}' have been modified."
# Who the unified audit log records for the app's own cmdlets (the app's service principal: assumed shape).
_APP_USER = "ServicePrincipal_4cdc8f8d-68f6-5b2e-ade5-cb72e81a3ea8"


def _upn(st: TenantState, user_id: str) -> str:
    user = st.users.get(user_id)
    return user.upn if user else user_id


def _recipient(st: TenantState, ref: Any) -> User:
    """A recipient named by id, UPN, SMTP address, alias or display name (``"must be a mailbox, mail user or
    mail-enabled security group"``): 404 ManagementObjectNotFoundException otherwise."""
    user = st.find_mailbox(str(ref)) if isinstance(ref, str) else None
    if user is None:
        raise not_found(ref)
    return user


def _hash_items(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(i) for i in items if i is not None and str(i) != ""]


def _multi_value(st: TenantState, name: str, value: Any, current: list[str], resolve: Callable[[Any], str]) -> list[str]:
    """A multi-valued parameter (Set-Mailbox.md, -GrantSendOnBehalfTo; Set-MailboxJunkEmailConfiguration.md):
    ``{"@odata.type": "#Exchange.GenericHashTable", "Add": ..., "Remove": ...}`` adds or removes without touching
    other entries; a plain value or list replaces them; null empties them. An object without the hashtable
    marker is not a hashtable over the admin API (public clients always send it): 400."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        if value.get("@odata.type") != "#Exchange.GenericHashTable":
            raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException",
                           f"Cannot process argument transformation on parameter '{name}'. Cannot convert the value of "
                           "type \"System.Collections.Generic.Dictionary\" to type \"MultiValuedProperty\".")
        out = list(current)
        for key, items in value.items():
            verb = key.lower()
            if verb == "@odata.type":
                continue
            if verb not in ("add", "remove"):
                raise ExoError(400, "BadRequest", "System.ArgumentException",
                               f"The hashtable key '{key}' isn't valid for parameter '{name}': use Add or Remove.")
            for item in _hash_items(items):
                resolved = resolve(item)
                if verb == "add" and all(resolved.lower() != c.lower() for c in out):
                    out.append(resolved)
                elif verb == "remove":
                    out = [c for c in out if c.lower() != resolved.lower()]
        return out
    return [resolve(item) for item in _hash_items(value)]


def set_mailbox(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") is None:
        raise missing_parameter("Identity")
    user = _mailbox(st, p["Identity"])
    ctx["user"] = user.id
    changes: dict[str, Any] = {}
    for name in _SET_MAILBOX_BOOLS:
        if name in p:
            changes[name] = _bool(p, name)
    if "ForwardingSmtpAddress" in p:
        value = p["ForwardingSmtpAddress"]
        if value in (None, ""):
            changes["ForwardingSmtpAddress"] = None
        else:
            value = str(value)
            changes["ForwardingSmtpAddress"] = value if value.lower().startswith("smtp:") else "smtp:" + value
    if "ForwardingAddress" in p:
        value = p["ForwardingAddress"]
        if value in (None, ""):
            changes["ForwardingAddress"] = None
        else:
            target = _mailbox(st, value)
            changes["ForwardingAddress"] = target.display_name
    if "AuditLogAgeLimit" in p:
        changes["AuditLogAgeLimit"] = str(p["AuditLogAgeLimit"])
    warnings: list[str] = []
    if "GrantSendOnBehalfTo" in p:
        current = list(st.access.send_on_behalf.get(user.id, []))
        wanted = _multi_value(st, "GrantSendOnBehalfTo", p["GrantSendOnBehalfTo"], current,
                              lambda ref: _recipient(st, ref).id)
        if wanted != current:
            st.access.send_on_behalf[user.id] = wanted
            st.mutate("send_on_behalf_changed", user, before=[_upn(st, t) for t in current],
                      after=[_upn(st, t) for t in wanted])
            st.access.audit_admin("Set-Mailbox", str(p["Identity"]), _APP_USER,
                                  {"Identity": p["Identity"], "GrantSendOnBehalfTo": p["GrantSendOnBehalfTo"]})
        elif not changes:
            warnings.append(_NO_CHANGE.format(identity=p["Identity"]))
    if changes:
        st.set_mailbox(user, changes)
    return [], warnings


def _rules_for(user: User, include_hidden: bool) -> list[dict]:
    rules = [r for r in user.rules if include_hidden or not r["hidden"]]
    return sorted(rules, key=lambda r: r["sequence"])


def _find_rule(st: TenantState, p: Mapping[str, Any]) -> tuple[User, dict]:
    identity = p.get("Identity")
    if identity is None or identity == "":
        raise missing_parameter("Identity")
    identity = str(identity)
    mailbox_key = p.get("Mailbox")
    rule_key = identity
    if "\\" in identity:
        mailbox_key, rule_key = identity.rsplit("\\", 1)
    if mailbox_key:
        user = st.find_mailbox(str(mailbox_key))
        if user is None:
            raise not_found(identity)
        for rule in user.rules:
            if rule["ruleIdentity"] == rule_key:
                return user, rule
        named = [r for r in user.rules if r["displayName"].lower() == rule_key.lower()]
        if len(named) > 1:
            raise ExoError(400, "BadRequest", "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
                           f"The operation couldn't be performed because '{identity}' matches multiple entries.",
                           details=True)
        if named:
            return user, named[0]
        raise not_found(identity)
    hit = st.rules_by_identity.get(rule_key)
    if hit is None:
        raise not_found(identity)
    return st.users[hit[0]], hit[1]


def get_inbox_rule(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    include_hidden = _bool(p, "IncludeHidden") if "IncludeHidden" in p else False
    if p.get("Identity") not in (None, ""):
        user, rule = _find_rule(st, p)
        ctx["user"] = user.id
        if rule["hidden"] and not include_hidden:
            raise not_found(p["Identity"])
        return [inbox_rule_row(user, rule)], []
    if p.get("Mailbox") in (None, ""):
        raise missing_parameter("Mailbox")
    user = _mailbox(st, p["Mailbox"])
    ctx["user"] = user.id
    return [inbox_rule_row(user, r) for r in _rules_for(user, include_hidden)], []


def _confirmed(p: Mapping[str, Any]) -> bool:
    """``-Confirm:$false`` (sent as ``"Confirm": false``) or ``-Force``: the cmdlet will not prompt."""
    confirm = p.get("Confirm")
    no_prompt = confirm is False or (isinstance(confirm, str) and confirm.strip().lower().lstrip("$") == "false")
    force = p.get("Force")
    return no_prompt or force is True or (isinstance(force, str) and force.strip().lower().lstrip("$") == "true")


def _toggle_rule(enabled: bool) -> Callable[[TenantState, Mapping[str, Any], dict], Result]:
    verb = "Enable" if enabled else "Disable"

    def run(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
        user, rule = _find_rule(st, p)
        ctx["user"] = user.id
        # Disable-InboxRule.md: "When you ... enable, or disable an Inbox rule in Exchange PowerShell, any
        # client-side rules created by Microsoft Outlook are removed"; "A confirmation prompt warns you if the
        # mailbox contains rules that were created by Outlook" (-Force / -Confirm:$false skip it). InvokeCommand
        # has nobody to answer a prompt.
        if user.client_rules and not _confirmed(p):
            raise ExoError(400, "BadRequest", "System.Management.Automation.Host.HostException",
                           "A command that prompts the user failed because the host program or the command type "
                           "does not support user interaction. The host was attempting to request confirmation with "
                           f"the following message: {verb} Inbox rule: the mailbox contains rules created by "
                           "Outlook; any client-side rules will be removed.")
        warnings = []
        gone = st.remove_client_rules(user, via="exo") if user.client_rules else []
        if gone:
            warnings.append(f"{len(gone)} Outlook client-side rule(s) in this mailbox were removed.")
        if rule["isEnabled"] != enabled:
            st.update_rule(user, rule, {"isEnabled": enabled}, via="exo")
        return [], warnings
    return run


def get_org_config(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    return [dict(st.org_config)], []


def get_bypass(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") is not None:
        user = _mailbox(st, p["Identity"])
        ctx["user"] = user.id
        return [bypass_row(st, user)], []
    return [bypass_row(st, u) for u in st.users.values() if u.mailbox is not None], []


def set_bypass(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") is None:
        raise missing_parameter("Identity")
    if "AuditBypassEnabled" not in p:
        raise missing_parameter("AuditBypassEnabled")
    user = _mailbox(st, p["Identity"])
    ctx["user"] = user.id
    value = _bool(p, "AuditBypassEnabled")
    st.set_mailbox(user, {"AuditBypassEnabled": value})
    return [], []


# ---------------------------------------------------------------------- mailbox and recipient permissions

def _access_rights(value: Any, allowed: tuple[str, ...], name: str = "AccessRights") -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    rights = [str(i).strip() for i in items if str(i).strip()]
    if not rights:
        raise missing_parameter(name)
    canon = {a.lower(): a for a in allowed}
    bad = [r for r in rights if r.lower() not in canon]
    if bad:
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException",
                       f"Cannot process argument transformation on parameter '{name}'. Cannot convert value \"{bad[0]}\" "
                       f"to type \"Microsoft.Exchange.Management.RecipientTasks.MailboxRights\". Error: \"Unable to match "
                       f"the identifier name {bad[0]} to a valid enumerator name. Specify one of the following enumerator "
                       f"names and try again: {', '.join(allowed)}\"")
    return [canon[r.lower()] for r in rights]


def get_mailbox_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    # Get-MailboxPermission.md: "The value $null or a non-existent value for the Identity parameter returns
    # *all* objects as if you ran the Get- command without the Identity parameter."
    trustee = _recipient(st, p["User"]) if p.get("User") not in (None, "") else None
    if p.get("Identity") in (None, ""):
        return [r for u in st.users.values() if u.mailbox is not None for r in st.access.mailbox_rows(u, trustee)], []
    user = _mailbox(st, p["Identity"])
    ctx["user"] = user.id
    return st.access.mailbox_rows(user, trustee), []


def _require(p: Mapping[str, Any], *names: str) -> None:
    """A mandatory cmdlet parameter that is missing or empty: Exchange's missing-parameter error."""
    for name in names:
        if p.get(name) in (None, ""):
            raise missing_parameter(name)


def add_mailbox_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    _require(p, "Identity", "User", "AccessRights")
    user, trustee = _mailbox(st, p["Identity"]), _recipient(st, p["User"])
    ctx["user"] = user.id
    rights = _access_rights(p["AccessRights"], MAILBOX_RIGHTS)
    aces = st.access.mailbox_aces.setdefault(user.id, [])
    ace = next((a for a in aces if a["trustee"] == trustee.id), None)
    if ace is None:
        aces.append({"trustee": trustee.id, "rights": rights})
    else:
        ace["rights"] = list(dict.fromkeys(ace["rights"] + rights))
    st.mutate("mailbox_permission_added", user, trustee=trustee.upn, rights=rights)
    st.access.audit_admin("Add-MailboxPermission", str(p["Identity"]), _APP_USER,
                          {"Identity": p["Identity"], "User": p["User"], "AccessRights": rights,
                           "InheritanceType": p.get("InheritanceType", "All")})
    return [st.access._ace_row(user, trustee.upn, rights, False, False)], []


def remove_mailbox_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    _require(p, "Identity", "User", "AccessRights")
    user, trustee = _mailbox(st, p["Identity"]), _recipient(st, p["User"])
    ctx["user"] = user.id
    rights = _access_rights(p["AccessRights"], MAILBOX_RIGHTS)
    aces = st.access.mailbox_aces.get(user.id, [])
    ace = next((a for a in aces if a["trustee"] == trustee.id), None)
    if ace is None or not {r.lower() for r in rights} & {r.lower() for r in ace["rights"]}:
        # Remove-MailboxPermission.md quotes this text; public clients find it in the result, not as an HTTP error.
        return [], [f"Can't remove the access control entry on the object \"{p['Identity']}\" for the user account "
                    "because the ACE doesn't exist on the object."]
    ace["rights"] = [r for r in ace["rights"] if r.lower() not in {x.lower() for x in rights}]
    if not ace["rights"]:
        aces.remove(ace)
    st.mutate("mailbox_permission_removed", user, trustee=trustee.upn, rights=rights)
    st.access.audit_admin("Remove-MailboxPermission", str(p["Identity"]), _APP_USER,
                          {"Identity": p["Identity"], "User": p["User"], "AccessRights": rights,
                           "InheritanceType": p.get("InheritanceType", "All")})
    return [], []


def get_recipient_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("AccessRights") not in (None, ""):
        _access_rights(p["AccessRights"], ("SendAs",))  # "The only valid value for this parameter is SendAs."
    if p.get("Identity") not in (None, ""):
        user = _recipient(st, p["Identity"])
        ctx["user"] = user.id
        rows = st.access.recipient_rows(user)
    else:
        rows = [r for u in st.users.values() if u.mailbox is not None for r in st.access.recipient_rows(u)]
    if p.get("Trustee") not in (None, ""):
        trustee = _recipient(st, p["Trustee"])
        rows = [r for r in rows if r["Trustee"].lower() == trustee.upn.lower()]
    return rows, []


def add_recipient_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    _require(p, "Identity", "Trustee", "AccessRights")
    _access_rights(p["AccessRights"], ("SendAs",))
    user, trustee = _recipient(st, p["Identity"]), _recipient(st, p["Trustee"])
    ctx["user"] = user.id
    entries = st.access.send_as.setdefault(user.id, [])
    if all(e["trustee"] != trustee.id for e in entries):
        entries.append({"trustee": trustee.id})
        st.mutate("recipient_permission_added", user, trustee=trustee.upn, rights=["SendAs"])
        st.access.audit_admin("Add-RecipientPermission", str(p["Identity"]), _APP_USER,
                              {"Identity": p["Identity"], "Trustee": p["Trustee"], "AccessRights": "SendAs"})
    return [st.access._sendas_row(user, trustee.upn)], []


def remove_recipient_permission(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    _require(p, "Identity", "Trustee", "AccessRights")
    _access_rights(p["AccessRights"], ("SendAs",))
    user, trustee = _recipient(st, p["Identity"]), _recipient(st, p["Trustee"])
    ctx["user"] = user.id
    entries = st.access.send_as.get(user.id, [])
    entry = next((e for e in entries if e["trustee"] == trustee.id), None)
    if entry is None:
        # Wording differs from Remove-MailboxPermission's (public clients match "because the ACE isn't present").
        return [], [f"Can't remove the access control entry on the object '{p['Identity']}' for account "
                    f"'{p['Trustee']}' because the ACE isn't present."]
    entries.remove(entry)
    st.mutate("recipient_permission_removed", user, trustee=trustee.upn, rights=["SendAs"])
    st.access.audit_admin("Remove-RecipientPermission", str(p["Identity"]), _APP_USER,
                          {"Identity": p["Identity"], "Trustee": p["Trustee"], "AccessRights": "SendAs"})
    return [], []


# ---------------------------------------------------------------------- junk-mail configuration

def junk_row(st: TenantState, user: User) -> dict:
    config = st.access.junk.get(user.id) or {}
    return {"Identity": st.access.alias(user), "Enabled": config.get("Enabled", True),
            "TrustedListsOnly": config.get("TrustedListsOnly", False), "ContactsTrusted": config.get("ContactsTrusted", False),
            "TrustedSendersAndDomains": list(config.get("TrustedSendersAndDomains", [])),
            "BlockedSendersAndDomains": list(config.get("BlockedSendersAndDomains", [])),
            "TrustedRecipientsAndDomains": list(config.get("TrustedRecipientsAndDomains", [])),
            "IsValid": True, "ObjectState": "Unchanged"}


def get_junk(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") in (None, ""):
        raise missing_parameter("Identity")
    user = _mailbox(st, p["Identity"])
    ctx["user"] = user.id
    return [junk_row(st, user)], []


def set_junk(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    if p.get("Identity") in (None, ""):
        raise missing_parameter("Identity")
    user = _mailbox(st, p["Identity"])
    ctx["user"] = user.id
    config = st.access.junk.setdefault(user.id, junk_row(st, user))
    before = {k: list(v) if isinstance(v, list) else v for k, v in config.items()}
    for name in ("TrustedSendersAndDomains", "BlockedSendersAndDomains"):
        if name not in p:
            continue
        wanted = _multi_value(st, name, p[name], list(config.get(name, [])), lambda ref: str(ref).strip())
        if name == "TrustedSendersAndDomains":
            added = [w for w in wanted if w.lower() not in {c.lower() for c in config.get(name, [])}]
            # "You can't add sender email addresses from the same domain as the recipient's email address."
            own = [a for a in added if "@" in a and a.rsplit("@", 1)[1].lower() == user.domain]
            if own:
                raise ExoError(400, "BadRequest", "Microsoft.Exchange.Data.DataValidationException",
                               f"You can't add '{own[0]}' to the safe senders list: senders in your own domain are "
                               "already trusted (all mailboxes in the global address list are).")
        config[name] = wanted
    for name in ("Enabled", "TrustedListsOnly", "ContactsTrusted"):
        if name in p:
            config[name] = _bool(p, name)
    if config == before:
        return [], [_NO_CHANGE.format(identity=p["Identity"])]
    st.mutate("junk_email_changed", user, before=before, after=dict(config))
    st.access.audit_admin("Set-MailboxJunkEmailConfiguration", str(p["Identity"]), _APP_USER,
                          {k: v for k, v in p.items() if k not in ("Confirm",)})
    return [], []


# ---------------------------------------------------------------------- unified audit log

_MAX_RESULT_SIZE = 5000


def search_unified_audit_log(st: TenantState, p: Mapping[str, Any], ctx: dict) -> Result:
    """Search-UnifiedAuditLog.md: StartDate and EndDate are required (UTC); ResultSize 100 by default, at most
    5000; records of the ExchangeAdmin type (the ones modelled), newest first, AuditData a JSON string."""
    _require(p, "StartDate", "EndDate")
    start, end = parse_iso(str(p["StartDate"])), parse_iso(str(p["EndDate"]))
    if start is None or end is None:
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException",
                       "Cannot process argument transformation on parameter 'StartDate' or 'EndDate': not a date.")
    size = p.get("ResultSize", 100)
    try:
        limit = int(size)
    except (TypeError, ValueError):
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException",
                       f"Cannot process argument transformation on parameter 'ResultSize'. Cannot convert value \"{size}\" "
                       "to type \"System.Int32\".") from None
    if not 1 <= limit <= _MAX_RESULT_SIZE:
        raise ExoError(400, "BadRequest", "System.Management.Automation.ParameterBindingValidationException",
                       f"Cannot validate argument on parameter 'ResultSize'. The {limit} argument is greater than the "
                       f"maximum allowed range of {_MAX_RESULT_SIZE}.")
    record_type = p.get("RecordType")
    if record_type not in (None, "") and str(record_type).lower() != "exchangeadmin":
        return [], []
    operations = p.get("Operations")
    ops = {o.strip().lower() for o in (operations if isinstance(operations, list) else str(operations or "").split(","))
           if o.strip()}
    objects = {str(o).lower() for o in (p.get("ObjectIds") or [])} if isinstance(p.get("ObjectIds"), list) else \
        {o.strip().lower() for o in str(p.get("ObjectIds") or "").split(",") if o.strip()}
    found = []
    for record in reversed(st.access.unified_audit):
        when = parse_iso(record["CreationTime"] + "Z")
        if when is None or not start <= when <= end:
            continue
        if ops and record["Operation"].lower() not in ops:
            continue
        if objects and str(record["ObjectId"]).lower() not in objects:
            continue
        found.append(record)
    found = found[:limit]
    rows = [{"RecordType": "ExchangeAdmin", "CreationDate": r["CreationTime"], "UserIds": r["UserId"],
             "Operations": r["Operation"], "AuditData": json.dumps(r), "ResultIndex": i + 1, "ResultCount": len(found),
             "Identity": r["Id"], "IsValid": True, "ObjectState": "Unchanged"} for i, r in enumerate(found)]
    return rows, []


_COMMON = ("ErrorAction", "WarningAction", "Confirm", "Verbose", "Debug")
CMDLETS: dict[str, tuple[tuple[str, ...], Callable[[TenantState, Mapping[str, Any], dict], Result]]] = {
    "Get-BlockedSenderAddress": (("SenderAddress",), get_blocked),
    "Remove-BlockedSenderAddress": (("SenderAddress", "Reason"), remove_blocked),
    "Get-Mailbox": (("Identity", "ResultSize", "RecipientTypeDetails", "Filter"), get_mailbox),
    "Set-Mailbox": (("Identity", "ForwardingSmtpAddress", "ForwardingAddress", "DeliverToMailboxAndForward",
                     "AuditEnabled", "AuditLogAgeLimit", "Force", "GrantSendOnBehalfTo"), set_mailbox),
    "Get-InboxRule": (("Mailbox", "Identity", "IncludeHidden", "BypassScopeCheck", "DescriptionTimeFormat",
                       "DescriptionTimeZone", "SweepRules"), get_inbox_rule),
    "Disable-InboxRule": (("Identity", "Mailbox", "Force", "AlwaysDeleteOutlookRulesBlob", "WhatIf"),
                          _toggle_rule(False)),
    "Enable-InboxRule": (("Identity", "Mailbox", "Force", "AlwaysDeleteOutlookRulesBlob", "WhatIf"),
                         _toggle_rule(True)),
    "Get-OrganizationConfig": ((), get_org_config),
    "Get-MailboxAuditBypassAssociation": (("Identity", "ResultSize"), get_bypass),
    "Set-MailboxAuditBypassAssociation": (("Identity", "AuditBypassEnabled"), set_bypass),
    "Get-MailboxPermission": (("Identity", "User", "Owner", "ResultSize", "SoftDeletedMailbox", "GroupMailbox",
                               "IncludeSoftDeletedUserPermissions", "IncludeUnresolvedPermissions",
                               "IncludeUserWithDisplayName", "ReadFromDomainController"), get_mailbox_permission),
    "Add-MailboxPermission": (("Identity", "User", "AccessRights", "InheritanceType", "AutoMapping", "Deny",
                               "GroupMailbox", "IgnoreDefaultScope"), add_mailbox_permission),
    "Remove-MailboxPermission": (("Identity", "User", "AccessRights", "InheritanceType", "Deny", "BypassMasterAccountSid",
                                  "GroupMailbox", "IgnoreDefaultScope", "SoftDeletedMailbox", "WhatIf"),
                                 remove_mailbox_permission),
    "Get-RecipientPermission": (("Identity", "Trustee", "AccessRights", "ResultSize", "ReadFromDomainController",
                                 "IncludeTrusteeWithPrimarySmtpAddress"), get_recipient_permission),
    "Add-RecipientPermission": (("Identity", "Trustee", "AccessRights", "Deny", "WhatIf"), add_recipient_permission),
    "Remove-RecipientPermission": (("Identity", "Trustee", "AccessRights", "Deny", "MultiTrustees", "WhatIf"),
                                   remove_recipient_permission),
    "Get-MailboxJunkEmailConfiguration": (("Identity", "ResultSize"), get_junk),
    "Set-MailboxJunkEmailConfiguration": (("Identity", "TrustedSendersAndDomains", "BlockedSendersAndDomains",
                                           "Enabled", "TrustedListsOnly", "ContactsTrusted", "IgnoreDefaultScope",
                                           "WhatIf"), set_junk),
    "Search-UnifiedAuditLog": (("StartDate", "EndDate", "RecordType", "Operations", "ObjectIds", "UserIds", "ResultSize",
                                "SessionId", "SessionCommand", "Formatted", "FreeText", "IPAddresses", "SiteIds"),
                               search_unified_audit_log),
}
_CMDLETS_LOWER = {name.lower(): name for name in CMDLETS}


def parse_input(body: Any) -> tuple[str, dict]:
    """(CmdletName, Parameters) from the request body; ExoError 400 when malformed."""
    cmd = body.get("CmdletInput") if isinstance(body, dict) else None
    if not isinstance(cmd, dict) or not isinstance(cmd.get("CmdletName"), str):
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                       "The request body must contain CmdletInput with a CmdletName.")
    params = cmd.get("Parameters") or {}
    if not isinstance(params, dict):
        raise ExoError(400, "BadRequest", "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                       "CmdletInput.Parameters must be an object.")
    return cmd["CmdletName"], params


def invoke(st: TenantState, tenant: str, cmdlet: str, params: Mapping[str, Any], ctx: dict) -> dict:
    """Run one cmdlet; returns the envelope. Raises ExoError."""
    name = _CMDLETS_LOWER.get(cmdlet.lower())
    if name is None:
        raise ExoError(400, "BadRequest", "System.Management.Automation.CommandNotFoundException",
                       f"The term '{cmdlet}' is not recognized as the name of a cmdlet, function, script file, or "
                       "operable program.", details=True)
    allowed, handler = CMDLETS[name]
    canon = {p.lower(): p for p in allowed + _COMMON}
    normalized: dict[str, Any] = {}
    unknown = []
    for key, value in params.items():
        c = canon.get(str(key).lower())
        if c is None:
            unknown.append(str(key))
        else:
            normalized[c] = value
    if unknown:
        raise unknown_parameters(unknown)
    rows, warnings = handler(st, normalized, ctx)
    return {
        "@odata.context": f"{EXO_ROOT}/{tenant}/$metadata#Collection(Exchange.GenericHashTable)",
        "adminapi.warnings@odata.type": "#Collection(String)",
        "@adminapi.warnings": warnings,
        "value": rows,
    }
