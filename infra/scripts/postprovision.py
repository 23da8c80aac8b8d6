#!/usr/bin/env python3
"""Post-provision: the tenant-level grants Bicep cannot make. azd runs it after `azd provision`.

What it does, each step idempotent (read what exists, create only what is missing):
1. Exchange Online: the app role ``Exchange.ManageAsApp`` on "Office 365 Exchange Online" for
   the function app's managed identity (when an enabled step runs Exchange cmdlets).
2. Microsoft Graph app roles: only checked here (main.bicep grants them through the Microsoft
   Graph Bicep extension), or granted here when ``GRAPH_ROLES_VIA=script``.
3. Entra directory roles (tenant scope): User Administrator or Privileged Authentication
   Administrator for password resets, Exchange Administrator (or Security Administrator when
   only the blocked-sender cmdlets are used).
4. Streams on (``ENABLE_STREAMS=true``): the Entra ID diagnostic setting that streams
   ``RiskyUsers`` and ``UserRiskEvents`` to the Entra hub; it prints the Defender XDR step.

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
import json
import os
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
    "RESPONDER_IDENTITY_CLIENT_ID",
    "RESPONDER_GRAPH_APP_ID",
    "RESPONDER_EXCHANGE_APP_ID",
)

Transport = Callable[[str, str, Any], tuple[int, Any]]


class Failure(Exception):
    """A step that cannot be done; the message says what to do about it."""


def csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Config:
    principal_id: str
    client_id: str
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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Config":
        missing = [key for key in REQUIRED if not env.get(key)]
        if missing:
            raise Failure(f"missing {', '.join(missing)}: run `azd provision` first (the values are its outputs)")
        return cls(
            principal_id=env["RESPONDER_IDENTITY_PRINCIPAL_ID"],
            client_id=env["RESPONDER_IDENTITY_CLIENT_ID"],
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
                     grant: bool, prune: bool, label: str) -> list[str]:
    """Make the identity hold exactly ``wanted`` app roles of one resource app. Returns problems."""
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
        if value in wanted:
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


# -- main ---------------------------------------------------------------------------------

def run(config: Config, api: Api, *, prune: bool) -> list[str]:
    """Everything, in order. Returns problems that need a person (empty: all done)."""
    log = api.log
    problems: list[str] = []
    sp = identity_service_principal(api, config.principal_id)
    log(f"Managed identity: {sp.get('displayName', '')} (client id {config.client_id}, object id {config.principal_id})")

    log("Exchange Online application permission:")
    if config.exchange_roles or prune:
        problems += ensure_app_roles(api, config.principal_id, config.exchange_app_id, config.exchange_roles,
                                     grant=True, prune=prune, label="Office 365 Exchange Online")
    else:
        log("  none needed (no enabled step runs Exchange cmdlets)")

    log(f"Microsoft Graph application permissions ({'granted here' if config.graph_roles_via == 'script' else 'granted by main.bicep; checking'}):")
    problems += ensure_app_roles(api, config.principal_id, config.graph_app_id, config.graph_roles,
                                 grant=config.graph_roles_via == "script", prune=prune, label="Microsoft Graph")

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

    if "Mail.Send" in config.graph_roles:
        log("Reminder: Mail.Send can send as any mailbox; scope it to NOTIFY_SENDER with an application")
        log(f"  access policy (Exchange Online PowerShell): New-ApplicationAccessPolicy -AppId {config.client_id} "
            "-PolicyScopeGroupId <group containing NOTIFY_SENDER> -AccessRight RestrictAccess")
    log(f"RESPONDER_MODE={config.mode}" + (
        ": incidents wait for `responder approve` / POST /api/incidents/{id}/approve before any change. "
        "When the approvals look right: `azd env set RESPONDER_MODE auto && azd provision`."
        if config.mode == "approval" else ""))
    return problems


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None, transport: Transport | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tenant-level grants for Breach Responder (after azd provision).")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--prune", action="store_true", help="also remove grants no enabled step needs")
    args = parser.parse_args(argv)
    if env is None:
        env = dict(os.environ)
        if not env.get("RESPONDER_IDENTITY_PRINCIPAL_ID"):
            env = {**azd_env_values(), **env}
    prune = args.prune or truthy(env.get("PRUNE_GRANTS"))
    try:
        config = Config.from_env(env)
        api = Api(transport or urllib_transport(config.tenant_id), dry_run=args.dry_run)
        problems = run(config, api, prune=prune)
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
