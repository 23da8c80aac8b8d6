#!/usr/bin/env python3
"""Post-provision: the tenant-level grants Bicep cannot make. azd runs it after `azd provision`.

What it does, each step idempotent (read what exists, create only what is missing):
1. Exchange Online: the app role ``Exchange.ManageAsApp`` on "Office 365 Exchange Online" for
   the function app's (system-assigned) managed identity (when an enabled step runs cmdlets).
2. Microsoft Graph app roles: only checked here (main.bicep grants them through the Microsoft
   Graph Bicep extension), or granted here when ``GRAPH_ROLES_VIA=script``.
3. Entra directory roles (tenant scope): User Administrator or Privileged Authentication
   Administrator for password resets; Exchange Administrator only with
   ``EXCHANGE_PERMISSIONS=directory-role``.
4. Exchange Online RBAC, in Exchange Online PowerShell (``pwsh`` with the ExchangeOnlineManagement
   module; the signed-in user needs Organization Management or Exchange Administrator):
   - the identity as an Exchange service principal (``New-ServicePrincipal``);
   - ``EXCHANGE_PERMISSIONS=role-group`` (default): a role group "Breach Responder" of custom
     management roles derived from the built-in roles that hold the cmdlets the enabled steps
     run (``Get-ManagementRole -Cmdlet``), each cut down to those cmdlets; the identity is its
     member. No tenant-wide Exchange Administrator.
   - ``MAIL_SEND_SCOPE=exchange-rbac`` (default): RBAC for Applications "Application Mail.Send"
     with a management scope holding only NOTIFY_SENDER, checked with
     ``Test-ServicePrincipalAuthorization``; once it is in scope, the tenant-wide Entra
     ``Mail.Send`` grant is removed (RBAC for Applications grants add to Entra's, so the scope
     means nothing while the Entra grant exists).
5. Streams on (``ENABLE_STREAMS=true``): the Entra ID diagnostic setting that streams
   ``RiskyUsers`` and ``UserRiskEvents`` to the Entra hub; it prints the Defender XDR step.
6. App Service Authentication: an anonymous request and one carrying a forged
   ``X-MS-CLIENT-PRINCIPAL`` must both get 401 from the function app (Microsoft once documented
   that Easy Auth did not block unauthenticated callers on Flex Consumption: this checks it).
   ``--verify-auth`` runs only this check (the postdeploy hook).

Exactly what to grant comes from the provisioning outputs (``RESPONDER_*`` in the azd
environment), which main.bicep computes from infra/generated/permissions.json: the permissions
the steps in ``PLAYBOOK_STEPS`` declare. ``--prune`` also removes grants the deployment no longer
needs (after a step was dropped from the playbook); without it, extra grants are only reported.

Needs the Azure CLI signed in to the tenant (``az login --tenant <tenant>``) as a user who is
Privileged Role Administrator (app and directory roles) and, for the streams, Security
Administrator -- or Global Administrator. Only the Python standard library is used.

Run by hand: ``python3 infra/scripts/postprovision.py [--dry-run] [--prune]`` (it reads the
values with ``azd env get-values`` when they are not in the environment).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

GRAPH = "https://graph.microsoft.com/v1.0"
ARM = "https://management.azure.com"
AADIAM_API = "2017-04-01-preview"
ENTRA_STREAM_CATEGORIES = ("RiskyUsers", "UserRiskEvents")
DEFENDER_EVENT_TYPES = ("AlertInfo", "AlertEvidence")
# Directory roles this app may hold; --prune only ever removes these.
MANAGED_DIRECTORY_ROLES = (
    "User Administrator",
    "Privileged Authentication Administrator",
    "Exchange Administrator",
    "Security Administrator",
)
REQUIRED = (
    "RESPONDER_IDENTITY_PRINCIPAL_ID",
    "RESPONDER_GRAPH_APP_ID",
    "RESPONDER_EXCHANGE_APP_ID",
)
ROLE_GROUP = "Breach Responder"
MAIL_SCOPE = "Breach Responder notify sender"
MAIL_ROLE = "Application Mail.Send"
# Built-in roles preferred as parents of the custom roles (the narrowest that hold our cmdlets).
PREFERRED_PARENTS = ("Mail Recipients", "Transport Hygiene", "Security Admin", "View-Only Configuration",
                     "View-Only Audit Logs", "Audit Logs", "Organization Configuration")
RESULT_MARK = "BREACH-RESPONDER-RESULT "
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CMDLET = re.compile(r"^[A-Z][a-z]+-[A-Za-z]+$")

Transport = Callable[[str, str, Any], tuple[int, Any]]
# Runs an Exchange Online PowerShell script: (exit code, stdout, stderr).
ExoRunner = Callable[[str], tuple[int, str, str]]
# A plain HTTP request to the function app: (url, headers) -> status.
Probe = Callable[[str, dict[str, str]], int]


class Failure(Exception):
    """A step that cannot be done; the message says what to do about it."""


def csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Config:
    principal_id: str
    tenant_id: str
    environment: str
    graph_app_id: str
    graph_roles: list[str]
    graph_roles_via: str
    exchange_app_id: str
    exchange_roles: list[str]
    directory_roles: list[str]
    streams: bool
    diagnostics_rule_id: str
    entra_hub: str
    defender_hub: str
    eventhub_namespace_id: str
    mode: str
    function_app: str
    api_url: str = ""
    api_client_id: str = ""
    exchange_permissions: str = "role-group"
    exchange_cmdlets: list[str] = field(default_factory=list)
    mail_send_scope: str = "none"
    notify_sender: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Config":
        missing = [key for key in REQUIRED if not env.get(key)]
        if missing:
            raise Failure(f"missing {', '.join(missing)}: run `azd provision` first (the values are its outputs)")
        return cls(
            principal_id=env["RESPONDER_IDENTITY_PRINCIPAL_ID"],
            tenant_id=env.get("AZURE_TENANT_ID", ""),
            environment=env.get("AZURE_ENV_NAME", "breach-responder"),
            graph_app_id=env["RESPONDER_GRAPH_APP_ID"],
            graph_roles=csv(env.get("RESPONDER_GRAPH_APP_ROLES")),
            graph_roles_via=env.get("RESPONDER_GRAPH_ROLES_VIA", "bicep"),
            exchange_app_id=env["RESPONDER_EXCHANGE_APP_ID"],
            exchange_roles=csv(env.get("RESPONDER_EXCHANGE_APP_ROLES")),
            directory_roles=csv(env.get("RESPONDER_DIRECTORY_ROLES")),
            streams=truthy(env.get("STREAMS_ENABLED")),
            diagnostics_rule_id=env.get("ENTRA_DIAGNOSTICS_AUTH_RULE_ID", ""),
            entra_hub=env.get("ENTRA_EVENTHUB_NAME", ""),
            defender_hub=env.get("DEFENDER_EVENTHUB_NAME", ""),
            eventhub_namespace_id=env.get("EVENTHUB_NAMESPACE_ID", ""),
            mode=env.get("RESPONDER_MODE", "approval"),
            function_app=env.get("FUNCTION_APP_NAME", ""),
            api_url=env.get("RESPONDER_API_URL") or env.get("FUNCTION_APP_URL", ""),
            api_client_id=env.get("RESPONDER_API_CLIENT_ID", ""),
            exchange_permissions=env.get("RESPONDER_EXCHANGE_PERMISSIONS", "role-group"),
            exchange_cmdlets=csv(env.get("RESPONDER_EXCHANGE_CMDLETS")),
            mail_send_scope=env.get("RESPONDER_MAIL_SEND_SCOPE", "none"),
            notify_sender=env.get("NOTIFY_SENDER", ""),
        )


def azd_env_values() -> dict[str, str]:
    """The azd environment's values (KEY="value" lines), for runs outside an azd hook."""
    try:
        out = subprocess.run(["azd", "env", "get-values"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


# -- HTTP ---------------------------------------------------------------------------------

def az_token(resource: str, tenant: str) -> str:
    cmd = ["az", "account", "get-access-token", "--resource", resource, "--query", "accessToken", "-o", "tsv"]
    if tenant:
        cmd += ["--tenant", tenant]
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        raise Failure("the Azure CLI (az) is not installed; it is needed for the tenant-level grants") from None
    except subprocess.CalledProcessError as exc:
        raise Failure(f"`az account get-access-token` failed ({exc.stderr.strip()[:300]}); run `az login --tenant {tenant or '<tenant>'}`") from None


def urllib_transport(tenant: str) -> Transport:
    tokens: dict[str, str] = {}

    def send(method: str, url: str, body: Any) -> tuple[int, Any]:
        resource = ARM + "/" if url.startswith(ARM) else "https://graph.microsoft.com"
        if resource not in tokens:
            tokens[resource] = az_token(resource, tenant)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {tokens[resource]}")
        request.add_header("Content-Type", "application/json")
        request.add_header("ConsistencyLevel", "eventual")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = {"error": {"message": raw.decode(errors="replace")[:300]}}
            return exc.code, payload

    return send


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    return str(payload)[:300]


@dataclass
class Api:
    send: Transport
    dry_run: bool = False
    log: Callable[[str], None] = print
    changes: list[str] = field(default_factory=list)

    def call(self, method: str, url: str, body: Any = None, *, ok: Iterable[int] = (200, 201, 204)) -> Any:
        status, payload = self.send(method, url, body)
        if status in ok:
            return payload
        hint = ""
        if status in (401, 403):
            hint = (" -- the signed-in user needs Privileged Role Administrator (app and directory roles) "
                    "and Security Administrator (diagnostic settings), or Global Administrator")
        raise Failure(f"{method} {url} -> HTTP {status} {_error_text(payload)}{hint}")

    def get(self, url: str) -> Any:
        return self.call("GET", url)

    def list(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while url:
            page = self.get(url)
            items.extend(page.get("value", []))
            url = page.get("@odata.nextLink", "")
        return items

    def write(self, method: str, url: str, body: Any, description: str) -> Any:
        self.changes.append(description)
        if self.dry_run:
            self.log(f"  would {description}")
            return None
        self.log(f"  {description}")
        return self.call(method, url, body)


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- steps --------------------------------------------------------------------------------

def identity_service_principal(api: Api, principal_id: str, attempts: int = 12, wait_s: float = 5.0) -> dict[str, Any]:
    """The managed identity's service principal (it can take a minute to replicate)."""
    url = f"{GRAPH}/servicePrincipals/{q(principal_id)}?$select=id,appId,displayName"
    for attempt in range(attempts):
        status, payload = api.send("GET", url, None)
        if status == 200:
            return payload
        if status != 404:
            raise Failure(f"GET {url} -> HTTP {status} {_error_text(payload)}")
        if attempt + 1 < attempts:
            time.sleep(wait_s)
    raise Failure(f"the managed identity's service principal {principal_id} was not found in the directory")


def ensure_app_roles(api: Api, principal_id: str, resource_app_id: str, wanted: list[str], *,
                     grant: bool, prune: bool, label: str, elsewhere: tuple[str, ...] = ()) -> list[str]:
    """Make the identity hold exactly ``wanted`` app roles of one resource app. Returns problems.
    ``elsewhere``: roles another step of this script decides about (left alone here)."""
    resource = api.get(f"{GRAPH}/servicePrincipals(appId='{q(resource_app_id)}')?$select=id,displayName,appRoles")
    by_value = {r["value"]: r for r in resource.get("appRoles", []) if "Application" in r.get("allowedMemberTypes", [])}
    by_id = {r["id"]: r["value"] for r in resource.get("appRoles", [])}
    unknown = [value for value in wanted if value not in by_value]
    if unknown:
        raise Failure(f"{label} has no application permission named {', '.join(unknown)}")
    assignments = [a for a in api.list(f"{GRAPH}/servicePrincipals/{q(principal_id)}/appRoleAssignments")
                   if a.get("resourceId") == resource["id"]]
    held = {by_id.get(a["appRoleId"], a["appRoleId"]): a for a in assignments}
    problems = []
    for value in wanted:
        if value in held:
            api.log(f"  ok: {label} {value}")
            continue
        if not grant:
            problems.append(f"{label} {value} is missing (it should have been granted by main.bicep)")
            continue
        api.write("POST", f"{GRAPH}/servicePrincipals/{q(principal_id)}/appRoleAssignments",
                  {"principalId": principal_id, "resourceId": resource["id"], "appRoleId": by_value[value]["id"]},
                  f"grant {label} {value}")
    for value, assignment in sorted(held.items()):
        if value in wanted or value in elsewhere:
            continue
        if prune:
            api.write("DELETE", f"{GRAPH}/servicePrincipals/{q(principal_id)}/appRoleAssignments/{q(assignment['id'])}",
                      None, f"remove {label} {value} (no enabled step needs it)")
        else:
            api.log(f"  extra: {label} {value} is held but no enabled step needs it (--prune removes it)")
    return problems


def ensure_directory_roles(api: Api, principal_id: str, wanted: list[str], *, prune: bool) -> None:
    definitions: dict[str, str] = {}
    for name in sorted(set(wanted) | (set(MANAGED_DIRECTORY_ROLES) if prune else set())):
        filter_ = urllib.parse.quote(f"displayName eq '{name}'")
        found = api.list(f"{GRAPH}/roleManagement/directory/roleDefinitions?$filter={filter_}&$select=id,displayName")
        if not found:
            raise Failure(f"no directory role named {name!r}")
        definitions[name] = found[0]["id"]
    filter_ = urllib.parse.quote(f"principalId eq '{principal_id}'")
    assignments = api.list(f"{GRAPH}/roleManagement/directory/roleAssignments?$filter={filter_}")
    tenant_wide = {a["roleDefinitionId"]: a for a in assignments if a.get("directoryScopeId", "/") == "/"}
    for name in wanted:
        if definitions[name] in tenant_wide:
            api.log(f"  ok: directory role {name}")
            continue
        api.write("POST", f"{GRAPH}/roleManagement/directory/roleAssignments",
                  {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": principal_id,
                   "roleDefinitionId": definitions[name], "directoryScopeId": "/"},
                  f"assign directory role {name}")
    for name in MANAGED_DIRECTORY_ROLES:
        definition = definitions.get(name)
        if name in wanted or definition not in tenant_wide:
            continue
        if prune:
            api.write("DELETE", f"{GRAPH}/roleManagement/directory/roleAssignments/{q(tenant_wide[definition]['id'])}",
                      None, f"remove directory role {name} (no enabled step needs it)")


def diagnostic_setting_body(config: Config) -> dict[str, Any]:
    return {
        "properties": {
            "eventHubAuthorizationRuleId": config.diagnostics_rule_id,
            "eventHubName": config.entra_hub,
            "logs": [{"category": c, "enabled": True} for c in ENTRA_STREAM_CATEGORIES],
        }
    }


def ensure_entra_stream(api: Api, config: Config) -> None:
    if not (config.diagnostics_rule_id and config.entra_hub):
        raise Failure("streams are on but ENTRA_DIAGNOSTICS_AUTH_RULE_ID / ENTRA_EVENTHUB_NAME are empty: re-run `azd provision`")
    name = f"breach-responder-{config.environment}"
    url = f"{ARM}/providers/microsoft.aadiam/diagnosticSettings/{q(name)}?api-version={AADIAM_API}"
    body = diagnostic_setting_body(config)
    current = api.call("GET", url, ok=(200, 404))
    props = (current or {}).get("properties", {}) if isinstance(current, dict) else {}
    enabled = sorted(log["category"] for log in props.get("logs", []) if log.get("enabled"))
    if (props.get("eventHubAuthorizationRuleId", "").lower() == config.diagnostics_rule_id.lower()
            and props.get("eventHubName") == config.entra_hub and enabled == sorted(ENTRA_STREAM_CATEGORIES)):
        api.log(f"  ok: Entra diagnostic setting {name} -> {config.entra_hub}")
        return
    api.write("PUT", url, body, f"stream Entra {', '.join(ENTRA_STREAM_CATEGORIES)} to Event Hub {config.entra_hub} "
              f"(diagnostic setting {name})")


# -- Exchange Online RBAC (PowerShell) -------------------------------------------------------

def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal."""
    return "'" + value.replace("'", "''") + "'"


def exchange_script(app_id: str, object_id: str, display_name: str, cmdlets: list[str], notify_sender: str) -> str:
    """The idempotent Exchange Online PowerShell that builds the role group and the Mail.Send scope.
    It prints one line ``BREACH-RESPONDER-RESULT {json}`` with what it found and did."""
    if not (GUID.match(app_id) and GUID.match(object_id)):
        raise Failure("the identity's app id / object id are not GUIDs")
    bad = [c for c in cmdlets if not CMDLET.match(c)]
    if bad:
        raise Failure(f"not cmdlet names: {bad}")
    if notify_sender and not EMAIL.match(notify_sender):
        raise Failure(f"NOTIFY_SENDER is not a mail address: {notify_sender!r}")
    lines = [
        "$ErrorActionPreference = 'Stop'",
        "$result = [ordered]@{ servicePrincipal = ''; roleGroup = ''; roles = @(); cmdlets = [ordered]@{}; missing = @(); "
        "mailSend = $null }",
        "Import-Module ExchangeOnlineManagement",
        "Connect-ExchangeOnline -ShowBanner:$false",
        "try {",
        f"  $sp = Get-ServicePrincipal -Identity {ps_quote(app_id)} -ErrorAction SilentlyContinue",
        f"  if (-not $sp) {{ $sp = New-ServicePrincipal -AppId {ps_quote(app_id)} -ObjectId {ps_quote(object_id)} "
        f"-DisplayName {ps_quote(display_name)}; $result.servicePrincipal = 'created' }} "
        "else { $result.servicePrincipal = 'exists' }",
    ]
    if cmdlets:
        lines += [
            "  # A custom role per built-in parent that holds our cmdlets, cut down to exactly those cmdlets.",
            f"  $wanted = @({', '.join(ps_quote(c) for c in cmdlets)})",
            f"  $prefer = @({', '.join(ps_quote(p) for p in PREFERRED_PARENTS)})",
            "  $byParent = [ordered]@{}",
            "  foreach ($cmdlet in $wanted) {",
            "    $roles = @(Get-ManagementRole -Cmdlet $cmdlet | Where-Object { -not $_.IsEndUserRole })",
            "    if ($roles.Count -eq 0) { $result.missing += $cmdlet; continue }",
            "    $parent = $prefer | Where-Object { $roles.Name -contains $_ } | Select-Object -First 1",
            "    if (-not $parent) { $parent = $roles[0].Name }",
            "    if (-not $byParent.Contains($parent)) { $byParent[$parent] = @() }",
            "    $byParent[$parent] += $cmdlet",
            "    $result.cmdlets[$cmdlet] = $parent",
            "  }",
            "  $custom = @()",
            "  foreach ($parent in $byParent.Keys) {",
            "    $name = 'Breach Responder - ' + $parent",
            "    if (-not (Get-ManagementRole -Identity $name -ErrorAction SilentlyContinue)) { New-ManagementRole -Name $name -Parent $parent | Out-Null }",
            "    $keep = $byParent[$parent]",
            "    Get-ManagementRoleEntry ($name + '\\*') | Where-Object { $keep -notcontains $_.Name } | "
            "ForEach-Object { Remove-ManagementRoleEntry -Identity ($name + '\\' + $_.Name) -Confirm:$false }",
            "    $custom += $name",
            "  }",
            f"  $group = Get-RoleGroup -Identity {ps_quote(ROLE_GROUP)} -ErrorAction SilentlyContinue",
            f"  if (-not $group) {{ New-RoleGroup -Name {ps_quote(ROLE_GROUP)} -Roles $custom -Description "
            "'Breach Responder: only the cmdlets its steps run' | Out-Null; $result.roleGroup = 'created' } else {",
            "    foreach ($role in $custom) { if (-not (Get-ManagementRoleAssignment -Role $role -RoleAssignee "
            f"{ps_quote(ROLE_GROUP)} -ErrorAction SilentlyContinue)) {{ New-ManagementRoleAssignment -Role $role "
            f"-SecurityGroup {ps_quote(ROLE_GROUP)} | Out-Null }} }}",
            "    $result.roleGroup = 'exists' }",
            f"  if (-not (Get-RoleGroupMember -Identity {ps_quote(ROLE_GROUP)} | Where-Object {{ $_.Identity -eq $sp.Identity "
            f"-or $_.Name -eq $sp.Name }})) {{ Add-RoleGroupMember -Identity {ps_quote(ROLE_GROUP)} -Member $sp.Identity }}",
            "  $result.roles = $custom",
        ]
    if notify_sender:
        scope_filter = f"PrimarySmtpAddress -eq '{notify_sender}'"
        lines += [
            "  # RBAC for Applications: Mail.Send only as NOTIFY_SENDER.",
            f"  $filter = {ps_quote(scope_filter)}",
            f"  $scope = Get-ManagementScope -Identity {ps_quote(MAIL_SCOPE)} -ErrorAction SilentlyContinue",
            f"  if (-not $scope) {{ New-ManagementScope -Name {ps_quote(MAIL_SCOPE)} -RecipientRestrictionFilter $filter | Out-Null }} "
            f"elseif ($scope.RecipientFilter -ne $filter) {{ Set-ManagementScope -Identity {ps_quote(MAIL_SCOPE)} "
            "-RecipientRestrictionFilter $filter }",
            f"  $assigned = Get-ManagementRoleAssignment -Role {ps_quote(MAIL_ROLE)} -RoleAssignee $sp.Identity -ErrorAction SilentlyContinue",
            f"  if (-not $assigned) {{ New-ManagementRoleAssignment -App $sp.ObjectId -Role {ps_quote(MAIL_ROLE)} "
            f"-CustomResourceScope {ps_quote(MAIL_SCOPE)} | Out-Null }}",
            f"  $test = @(Test-ServicePrincipalAuthorization -Identity $sp.Identity -Resource {ps_quote(notify_sender)} | "
            f"Where-Object {{ $_.RoleName -eq {ps_quote(MAIL_ROLE)} }})",
            "  $result.mailSend = [ordered]@{ scope = $filter; inScope = [bool]($test | Where-Object { $_.InScope -eq $true }) }",
        ]
    lines += [
        "} finally { Disconnect-ExchangeOnline -Confirm:$false | Out-Null }",
        f"{ps_quote(RESULT_MARK)} + ($result | ConvertTo-Json -Depth 5 -Compress)",
    ]
    return "\n".join(lines) + "\n"


def pwsh_runner(script: str) -> tuple[int, str, str]:
    """Run a script in PowerShell 7 (interactive sign-in to Exchange Online happens there)."""
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        return 127, "", "pwsh (PowerShell 7) is not installed"
    done = subprocess.run([pwsh, "-NoProfile", "-Command", "-"], input=script, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def _exo_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                return json.loads(line[len(RESULT_MARK):])
            except ValueError:
                return None
    return None


def ensure_exchange_rbac(api: Api, config: Config, sp: dict[str, Any], exo: ExoRunner | None) -> list[str]:
    """The Exchange role group and the Mail.Send scope (Exchange Online PowerShell); then, and only
    then, the tenant-wide grants they replace are removed. Returns problems."""
    log = api.log
    cmdlets = config.exchange_cmdlets if config.exchange_permissions == "role-group" else []
    scoped_mail = config.mail_send_scope == "exchange-rbac"
    if not cmdlets and not scoped_mail:
        log("  nothing to do (EXCHANGE_PERMISSIONS=directory-role or no cmdlets; Mail.Send not scoped here)")
        return []
    if scoped_mail and not config.notify_sender:
        return ["Mail.Send is needed but NOTIFY_SENDER is empty: set it (azd env set NOTIFY_SENDER ...) so the "
                "grant can be scoped to that mailbox"]
    script = exchange_script(sp.get("appId", ""), config.principal_id, sp.get("displayName") or "breach-responder",
                             cmdlets, config.notify_sender if scoped_mail else "")
    what = []
    if cmdlets:
        what.append(f"role group {ROLE_GROUP!r} with only {', '.join(cmdlets)}")
    if scoped_mail:
        what.append(f"{MAIL_ROLE} scoped to {config.notify_sender}")
    api.changes.append("Exchange Online RBAC: " + "; ".join(what))
    if api.dry_run:
        log(f"  would configure in Exchange Online PowerShell: {'; '.join(what)}")
        return []
    log(f"  configuring in Exchange Online PowerShell (sign in when asked): {'; '.join(what)}")
    code, stdout, stderr = (exo or pwsh_runner)(script)
    result = _exo_result(stdout) if code == 0 else None
    if result is None:
        reason = (stderr or stdout).strip().splitlines()[-1:] or ["no result"]
        return [f"Exchange Online PowerShell failed ({reason[0][:300]}). It needs PowerShell 7 with the "
                "ExchangeOnlineManagement module and a user with Organization Management; without them, "
                "`azd env set EXCHANGE_PERMISSIONS directory-role` and `azd env set MAIL_SEND_SCOPE unscoped`, then "
                "`azd provision` (tenant-wide roles instead)"]
    problems: list[str] = []
    log(f"  service principal: {result.get('servicePrincipal')}")
    if cmdlets:
        missing = result.get("missing") or []
        for cmdlet, parent in (result.get("cmdlets") or {}).items():
            log(f"  ok: {cmdlet} (custom role from {parent})")
        if missing:
            problems.append(f"no Exchange role holds {', '.join(missing)}: the role group cannot cover them")
        else:
            _drop_directory_roles(api, config.principal_id, ("Exchange Administrator", "Security Administrator"),
                                  f"replaced by the Exchange role group {ROLE_GROUP!r}")
    if scoped_mail:
        mail = result.get("mailSend") or {}
        if mail.get("inScope") is True:
            log(f"  ok: {MAIL_ROLE} in scope for {config.notify_sender} only")
            _drop_graph_role(api, config, "Mail.Send", f"scoped to {config.notify_sender} by Exchange RBAC for Applications")
        else:
            problems.append(f"{MAIL_ROLE} is not in scope for {config.notify_sender} yet (Test-ServicePrincipalAuthorization); "
                            "the tenant-wide Entra Mail.Send grant stays until it is: re-run this script")
    return problems


def _drop_directory_roles(api: Api, principal_id: str, names: tuple[str, ...], why: str) -> None:
    filter_ = urllib.parse.quote(f"principalId eq '{principal_id}'")
    assignments = api.list(f"{GRAPH}/roleManagement/directory/roleAssignments?$filter={filter_}")
    for name in names:
        filter_ = urllib.parse.quote(f"displayName eq '{name}'")
        found = api.list(f"{GRAPH}/roleManagement/directory/roleDefinitions?$filter={filter_}&$select=id,displayName")
        held = [a for a in assignments if found and a.get("roleDefinitionId") == found[0]["id"]]
        for assignment in held:
            api.write("DELETE", f"{GRAPH}/roleManagement/directory/roleAssignments/{q(assignment['id'])}", None,
                      f"remove directory role {name} ({why})")


def _drop_graph_role(api: Api, config: Config, value: str, why: str) -> None:
    resource = api.get(f"{GRAPH}/servicePrincipals(appId='{q(config.graph_app_id)}')?$select=id,appRoles")
    role_ids = {r["id"] for r in resource.get("appRoles", []) if r.get("value") == value}
    for assignment in api.list(f"{GRAPH}/servicePrincipals/{q(config.principal_id)}/appRoleAssignments"):
        if assignment.get("resourceId") == resource["id"] and assignment.get("appRoleId") in role_ids:
            api.write("DELETE", f"{GRAPH}/servicePrincipals/{q(config.principal_id)}/appRoleAssignments/{q(assignment['id'])}",
                      None, f"remove the tenant-wide Microsoft Graph {value} ({why})")


# -- App Service Authentication ---------------------------------------------------------------

def urllib_probe(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def forged_principal(tenant_id: str) -> str:
    """An X-MS-CLIENT-PRINCIPAL nobody signed: Easy Auth must never let it through."""
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "00000000-0000-4000-8000-000000000001"},
              {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tenant_id},
              {"typ": "roles", "val": "Incident.Read"}, {"typ": "roles", "val": "Incident.Approve"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "", "role_typ": ""}).encode()).decode()


def verify_easy_auth(api: Api, config: Config, probe: Probe | None) -> list[str]:
    """Anonymous and forged-principal requests must get 401 from App Service Authentication."""
    if not config.api_url:
        return ["FUNCTION_APP_URL is unknown: cannot check App Service Authentication"]
    if api.dry_run:
        api.log("  would check that anonymous and forged-principal requests get 401")
        return []
    probe = probe or urllib_probe
    url = config.api_url.rstrip("/") + "/api/incidents"
    anonymous = probe(url, {})
    forged = probe(url, {"X-MS-CLIENT-PRINCIPAL": forged_principal(config.tenant_id),
                         "X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-4000-8000-000000000001",
                         "X-MS-CLIENT-PRINCIPAL-IDP": "aad"})
    if anonymous == 401 and forged == 401:
        api.log("  ok: anonymous and forged-principal requests get 401")
        return []
    return [f"App Service Authentication is not in front of {config.api_url}: an anonymous request got {anonymous} and "
            f"a forged X-MS-CLIENT-PRINCIPAL got {forged}, not 401. Do not use this deployment until it is (check "
            "Authentication on the function app; Flex Consumption once did not block unauthenticated callers)"]


# -- main ---------------------------------------------------------------------------------

def run(config: Config, api: Api, *, prune: bool, exo: ExoRunner | None = None, probe: Probe | None = None) -> list[str]:
    """Everything, in order. Returns problems that need a person (empty: all done)."""
    log = api.log
    problems: list[str] = []
    sp = identity_service_principal(api, config.principal_id)
    log(f"Managed identity: {sp.get('displayName', '')} (client id {sp.get('appId', '')}, object id {config.principal_id})")

    log("Exchange Online application permission:")
    if config.exchange_roles or prune:
        problems += ensure_app_roles(api, config.principal_id, config.exchange_app_id, config.exchange_roles,
                                     grant=True, prune=prune, label="Office 365 Exchange Online")
    else:
        log("  none needed (no enabled step runs Exchange cmdlets)")

    log(f"Microsoft Graph application permissions ({'granted here' if config.graph_roles_via == 'script' else 'granted by main.bicep; checking'}):")
    problems += ensure_app_roles(api, config.principal_id, config.graph_app_id, config.graph_roles,
                                 grant=config.graph_roles_via == "script", prune=prune, label="Microsoft Graph",
                                 elsewhere=("Mail.Send",) if config.mail_send_scope == "exchange-rbac" else ())

    log("Entra directory roles:")
    ensure_directory_roles(api, config.principal_id, config.directory_roles, prune=prune)

    log("Alert streams:")
    if config.streams:
        ensure_entra_stream(api, config)
        log("  Defender XDR is set up in its portal (no public API): Settings > Microsoft Defender XDR >")
        log("  Streaming API > Add: Forward events to Azure Event Hub,")
        log(f"    Event Hub resource ID: {config.eventhub_namespace_id or '<EVENTHUB_NAMESPACE_ID>'}")
        log(f"    Event Hub name: {config.defender_hub}; event types: {', '.join(DEFENDER_EVENT_TYPES)}")
    else:
        log("  off (ENABLE_STREAMS=false): alerts come from the polling reconciler, the alerts queue and POST /api/incidents")

    log("Exchange Online RBAC:")
    problems += ensure_exchange_rbac(api, config, sp, exo)
    log("App Service Authentication:")
    problems += verify_easy_auth(api, config, probe)
    log(f"RESPONDER_MODE={config.mode}" + (
        ": incidents wait for `responder approve` / POST /api/incidents/{id}/approve before any change. "
        "When the approvals look right: `azd env set RESPONDER_MODE auto && azd provision`."
        if config.mode == "approval" else ""))
    return problems


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None, transport: Transport | None = None,
         exo: ExoRunner | None = None, probe: Probe | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tenant-level grants for Breach Responder (after azd provision).")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--prune", action="store_true", help="also remove grants no enabled step needs")
    parser.add_argument("--verify-auth", action="store_true",
                        help="only check that App Service Authentication refuses anonymous and forged requests (postdeploy)")
    args = parser.parse_args(argv)
    if env is None:
        env = dict(os.environ)
        if not env.get("RESPONDER_IDENTITY_PRINCIPAL_ID"):
            env = {**azd_env_values(), **env}
    prune = args.prune or truthy(env.get("PRUNE_GRANTS"))
    try:
        config = Config.from_env(env)
        api = Api(transport or urllib_transport(config.tenant_id), dry_run=args.dry_run)
        if args.verify_auth:
            problems = verify_easy_auth(api, config, probe)
        else:
            problems = run(config, api, prune=prune, exo=exo, probe=probe)
    except Failure as exc:
        print(f"postprovision: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"postprovision: {problem}", file=sys.stderr)
    verb = "would make" if args.dry_run else "made"
    print(f"postprovision: {verb} {len(api.changes)} change(s)" + (f"; {len(problems)} problem(s)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
