#!/usr/bin/env python3
"""Generate PERMISSIONS.md and infra/generated/*.json from what the code itself declares.

Run with the app's venv from the repository root:

    .venv/bin/python tools/gen_infra.py          # rewrite the generated files
    .venv/bin/python tools/gen_infra.py --check  # exit 1 (and say which) if one is stale

Sources, all read from the code (never typed twice):
- each playbook step's ``calls`` (``shared.steps.ALL_STEPS[*].calls``: Call(service, what,
  permission)) -- the Graph app roles, Exchange.ManageAsApp and the directory roles;
- the other components that call Graph on their own (the polling reconciler, Secure Score),
  counted only when ``function_app`` registers a function bound to their schedule setting;
- the function bindings of ``function_app.app`` (queues, Event Hubs, timers, %SETTING% names);
- every ``TABLES`` tuple a module under ``shared/`` declares.

Outputs:
- ``PERMISSIONS.md``                  -- for people: each permission and the step that needs it;
- ``infra/generated/permissions.json`` -- for Bicep (grants) and the post-provision script;
- ``infra/generated/bindings.json``    -- for Bicep (queues, tables, Event Hubs, functions).

``tests/test_infra_permissions.py`` regenerates in memory and fails if a file differs.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
PERMISSIONS_MD = ROOT / "PERMISSIONS.md"
PERMISSIONS_JSON = ROOT / "infra" / "generated" / "permissions.json"
BINDINGS_JSON = ROOT / "infra" / "generated" / "bindings.json"

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"  # Office 365 Exchange Online
EXCHANGE_APP_ROLE = "Exchange.ManageAsApp"

# The Entra directory role that goes with a permission (m365-apis.md). A password reset of
# a non-admin needs User Administrator; Privileged Authentication Administrator also covers
# admins (who are held for approval anyway) -- the deployment chooses (PASSWORD_RESET_ROLE).
PASSWORD_RESET_PERMISSION = "User-PasswordProfile.ReadWrite.All"
PASSWORD_RESET_ROLE_PLACEHOLDER = "{passwordResetRole}"
EXCHANGE_ADMIN = "Exchange Administrator"
SECURITY_ADMIN = "Security Administrator"  # suffices for the blocked-sender cmdlets only

TRUE_VALUES = ["1", "true", "yes", "on"]
# Graph permissions RBAC for Applications in Exchange Online can grant with a management scope.
EXCHANGE_RBAC_SCOPED = frozenset({"Mail.Send"})


@dataclass(frozen=True)
class Use:
    """One reason a permission is needed: a step or a component, maybe under a setting's value."""

    kind: str  # step | component
    by: str  # step name, or component (function) name
    what: str
    when_setting: str = "*"
    when_values: tuple[str, ...] = ("*",)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "by": self.by, "whenSetting": self.when_setting, "whenValues": list(self.when_values)}

    @property
    def when_text(self) -> str:
        if self.when_setting == "*":
            return ""
        return f"{self.when_setting}={'|'.join(self.when_values)}"


@dataclass
class Component:
    """Code outside the playbook that calls Graph on its own schedule."""

    name: str
    schedule_setting: str  # the component is deployed iff a function binds %<this>%
    module: str
    calls: Callable[[Any], list[tuple[str, str, str, str]]]  # -> (what, permission, when_setting, when_value)
    description: str = ""


def _poller_calls(mod: Any) -> list[tuple[str, str, str, str]]:
    if hasattr(mod, "CALLS"):
        return [(c.what, c.permission, "*", "*") for c in mod.CALLS if c.service == "graph"]
    return [(f"GET {feed['path']} (poll)", feed["permission"], "*", "*") for feed in mod.FEEDS.values()]


def _securescore_calls(mod: Any) -> list[tuple[str, str, str, str]]:
    if hasattr(mod, "CALLS"):
        return [(c.what, c.permission, "*", "*") for c in mod.CALLS if c.service == "graph"]
    return [
        (f"GET {mod.PATH}", mod.PERMISSION, "*", "*"),
        ("POST /users/{sender}/sendMail (regression mail)", "Mail.Send", "SECURE_SCORE_NOTIFY", "true"),
    ]


def _declared_calls(mod: Any) -> list[tuple[str, str, str, str]]:
    return [(c.what, c.permission, "*", "*") for c in mod.CALLS if c.service == "graph"]


# A component's module may declare ``CALLS = (Call(...), ...)`` like a step; until it does,
# its loader reads the shape the module has today.
COMPONENTS: tuple[Component, ...] = (
    Component("poll_reconciler", "POLL_SCHEDULE", "shared.poller", _poller_calls,
              "polling reconciler: riskyUsers and alerts_v2 since the watermark"),
    Component("secure_score", "SECURE_SCORE_SCHEDULE", "shared.securescore.service", _securescore_calls,
              "daily Secure Score snapshot and regression mail"),
    Component("hold_expiry", "HOLD_EXPIRY_SCHEDULE", "shared.approval", _declared_calls,
              "held incidents nobody decided on within HOLD_TTL_HOURS expire, with a SOC mail"),
)

# The Exchange cmdlets named in a step's declared calls ("Get-InboxRule -IncludeHidden /
# Disable-InboxRule", "Get-/Set-MailboxAuditBypassAssociation"): what the custom Exchange role
# group the post-provision step builds must hold, and nothing else.
_CMDLET = re.compile(r"\b((?:Get|Set|New|Remove|Enable|Disable|Add|Test)-(?:/(?:Get|Set|New|Remove|Enable|Disable|Add)-)?[A-Z][A-Za-z]+)")


def cmdlets_in(what: str) -> list[str]:
    names: list[str] = []
    for match in _CMDLET.findall(what):
        if "/" in match:  # Get-/Set-Noun
            first, rest = match.split("/", 1)
            verb2, noun = rest.split("-", 1)
            names += [first + noun, f"{verb2}-{noun}"]
        else:
            names.append(match)
    return list(dict.fromkeys(names))


# -- reading the code ---------------------------------------------------------------------

def _import_app() -> Any:
    """A fresh ``function_app.app`` (the registered functions are the truth).

    Loaded under a private module name: ``FunctionApp.get_functions()`` may run only once per
    app object, and the local host indexes the real ``function_app`` module itself.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("_gen_infra_function_app", ROOT / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


SETTING_REF = re.compile(r"^%([A-Za-z0-9_]+)%$")


def read_bindings(app: Any) -> dict[str, Any]:
    """The registered functions' triggers, reduced to what infra must provide."""
    functions = []
    for fn in app.get_functions():
        trigger = fn.get_trigger().get_dict_repr()
        entry: dict[str, Any] = {"name": fn.get_function_name(), "trigger": trigger["type"]}
        for key in ("connection", "queueName", "eventHubName", "schedule", "consumerGroup"):
            if trigger.get(key) is not None:
                entry[key] = trigger[key]
        functions.append(entry)
    functions.sort(key=lambda f: f["name"])
    return {"functions": functions}


def setting_name(value: str) -> str | None:
    match = SETTING_REF.match(value or "")
    return match.group(1) if match else None


def active_components(bindings: dict[str, Any]) -> list[tuple[Component, Any]]:
    bound = {setting_name(f.get("schedule", "")) for f in bindings["functions"]}
    active = []
    for component in COMPONENTS:
        if component.schedule_setting not in bound:
            continue
        module = importlib.import_module(component.module)
        active.append((component, module))
    return active


def declared_tables() -> list[str]:
    """Every ``TABLES = (...)`` a module under shared/ declares at top level."""
    tables: set[str] = set()
    for path in sorted((ROOT / "shared").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(isinstance(t, ast.Name) and t.id == "TABLES" for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
            for node in tree.body
        ):
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tables.update(importlib.import_module(module).TABLES)
    return sorted(tables)


# -- building the model -------------------------------------------------------------------

@dataclass
class Grant:
    name: str
    uses: list[Use] = field(default_factory=list)

    def add(self, use: Use) -> None:
        if use not in self.uses:
            self.uses.append(use)

    def as_json(self, key: str = "permission") -> dict[str, Any]:
        # Merge the calls: for Bicep only (kind, by, condition) matters.
        seen: list[dict[str, Any]] = []
        for use in self.uses:
            entry = use.as_json()
            if entry not in seen:
                seen.append(entry)
        return {key: self.name, "uses": seen}


CONDITION = re.compile(r"\(([A-Z][A-Z0-9_]+)=([a-z0-9/\-]+)\)")


def call_condition(what: str) -> tuple[str, tuple[str, ...]]:
    """When a call is made, from its description: "... (ca-group)" or "... (per-user)" for the two
    MFA modes, "... (SETTING=value/value)" for any other setting ("true" = any true spelling);
    ("*", ("*",)) when it is made always."""
    from shared.settings import MFA_MODES

    match = CONDITION.search(what)
    if match:
        values = tuple(match.group(2).split("/"))
        return match.group(1), tuple(TRUE_VALUES) if values == ("true",) else values
    for mode in MFA_MODES:
        if f"({mode})" in what:
            return "MFA_MODE", (mode,)
    return "*", ("*",)


mfa_condition = call_condition  # the name issue 12 used


def exchange_role_for(what: str) -> str:
    return SECURITY_ADMIN if "BlockedSenderAddress" in what else EXCHANGE_ADMIN


def build_model() -> dict[str, Any]:
    from shared.playbook import STEP_NAMES
    from shared.steps import ALL_STEPS

    app = _import_app()
    bindings = read_bindings(app)
    graph: dict[str, Grant] = {}
    exchange: dict[str, Grant] = {}
    cmdlets: dict[str, Grant] = {}
    roles: dict[str, Grant] = {}
    steps: list[dict[str, Any]] = []

    for cls in ALL_STEPS:
        rows = []
        for call in cls.calls:
            if call.service == "graph":
                setting, values = call_condition(call.what)
                use = Use("step", cls.name, call.what, setting, values)
                graph.setdefault(call.permission, Grant(call.permission)).add(use)
                if call.permission == PASSWORD_RESET_PERMISSION:
                    roles.setdefault(PASSWORD_RESET_ROLE_PLACEHOLDER, Grant(PASSWORD_RESET_ROLE_PLACEHOLDER)).add(
                        Use("step", cls.name, call.what))
            elif call.service == "exo":
                if call.permission != EXCHANGE_APP_ROLE:
                    raise SystemExit(f"{cls.name}: exo call {call.what!r} declares {call.permission!r}; "
                                     f"Exchange Online admin API calls need {EXCHANGE_APP_ROLE}")
                use = Use("step", cls.name, call.what)
                exchange.setdefault(call.permission, Grant(call.permission)).add(use)
                for cmdlet in cmdlets_in(call.what):
                    cmdlets.setdefault(cmdlet, Grant(cmdlet)).add(Use("step", cls.name, call.what))
            else:
                raise SystemExit(f"{cls.name}: unknown service {call.service!r} in {call}")
            rows.append({"service": call.service, "what": call.what, "permission": call.permission})
        exo_calls = [call.what for call in cls.calls if call.service == "exo"]
        if exo_calls:
            # One Exchange role per step: Security Administrator only if every cmdlet the
            # step runs is a blocked-sender one, else Exchange Administrator (covers those too).
            role = SECURITY_ADMIN if all(exchange_role_for(w) == SECURITY_ADMIN for w in exo_calls) else EXCHANGE_ADMIN
            roles.setdefault(role, Grant(role)).add(Use("step", cls.name, "; ".join(exo_calls)))
        steps.append({"name": cls.name, "calls": rows})
    assert [s["name"] for s in steps] == list(STEP_NAMES)

    components = []
    for component, module in active_components(bindings):
        rows = []
        for what, permission, when_setting, when_value in component.calls(module):
            values = tuple(TRUE_VALUES) if when_value == "true" else (when_value,)
            graph.setdefault(permission, Grant(permission)).add(
                Use("component", component.name, what, when_setting, values))
            rows.append({"service": "graph", "what": what, "permission": permission,
                         "when": f"{when_setting}={when_value}" if when_setting != "*" else ""})
        components.append({"name": component.name, "module": component.module,
                           "description": component.description, "calls": rows})

    return {
        "steps": steps,
        "components": components,
        "graph": [graph[k] for k in sorted(graph)],
        "exchange": [exchange[k] for k in sorted(exchange)],
        "cmdlets": [cmdlets[k] for k in sorted(cmdlets)],
        "roles": [roles[k] for k in sorted(roles)],
        "bindings": bindings,
        "tables": declared_tables(),
    }


# -- rendering ----------------------------------------------------------------------------

def permissions_json(model: dict[str, Any]) -> str:
    data = {
        "_generated": "by tools/gen_infra.py from shared.steps.ALL_STEPS[*].calls and the "
                      "components bound in function_app; do not edit",
        "graphAppId": GRAPH_APP_ID,
        "exchangeAppId": EXCHANGE_APP_ID,
        # exchangeRbac: a permission Exchange RBAC for Applications can grant scoped to mailboxes
        # (main.bicep leaves it to the post-provision step when MAIL_SEND_SCOPE=exchange-rbac).
        "graph": [{**g.as_json(), "exchangeRbac": g.name in EXCHANGE_RBAC_SCOPED} for g in model["graph"]],
        "exchange": [g.as_json() for g in model["exchange"]],
        "exchangeCmdlets": [g.as_json("cmdlet") for g in model["cmdlets"]],
        "directoryRoles": [
            {**g.as_json("role"),
             "supersededBy": EXCHANGE_ADMIN if g.name == SECURITY_ADMIN else "",
             # an Exchange role: replaced by the custom role group unless EXCHANGE_PERMISSIONS=directory-role
             "exchange": g.name in (EXCHANGE_ADMIN, SECURITY_ADMIN)}
            for g in model["roles"]
        ],
        "passwordResetRolePlaceholder": PASSWORD_RESET_ROLE_PLACEHOLDER,
    }
    return json.dumps(data, indent=2) + "\n"


def bindings_json(model: dict[str, Any]) -> str:
    functions = model["bindings"]["functions"]
    queue_settings, queue_names, hubs, eh_functions, connections = [], [], [], [], set()
    for fn in functions:
        if fn["trigger"] == "queueTrigger":
            name = fn["queueName"]
            (queue_settings if setting_name(name) else queue_names).append(setting_name(name) or name)
        if fn["trigger"] == "eventHubTrigger":
            hub_setting = setting_name(fn["eventHubName"])
            if not hub_setting:
                raise SystemExit(f"{fn['name']}: name the Event Hub with a %SETTING% so infra can create it")
            hubs.append({"function": fn["name"], "hubSetting": hub_setting,
                         "connection": fn["connection"], "consumerGroup": fn.get("consumerGroup", "$Default")})
            eh_functions.append(fn["name"])
        if fn.get("connection"):
            connections.add(fn["connection"])
    data = {
        "_generated": "by tools/gen_infra.py from function_app.app and shared/**/TABLES; do not edit",
        "queueNames": sorted(queue_names),
        "queueNameSettings": sorted(queue_settings),
        "tables": model["tables"],
        "eventHubTriggers": hubs,
        "eventHubFunctions": sorted(eh_functions),
        "eventHubConnections": sorted({h["connection"] for h in hubs}),
        "connections": sorted(connections),
        "settingReferences": sorted({s for fn in functions for v in fn.values()
                                     if isinstance(v, str) and (s := setting_name(v))}),
    }
    return json.dumps(data, indent=2) + "\n"


def _md_list(items: Iterable[str]) -> str:
    return ", ".join(items)


def _uses_text(grant: Grant) -> tuple[str, str]:
    """(who needs it, when): "when" is "always" unless some use is conditional."""
    by: list[str] = []
    when: dict[str, str] = {}
    for use in grant.uses:
        label = use.by if use.kind == "step" else f"{use.by} (component)"
        if label not in by:
            by.append(label)
        condition = "always" if use.when_setting == "*" else \
            f"{use.when_setting}={'true' if list(use.when_values) == TRUE_VALUES else ' or '.join(use.when_values)}"
        when.setdefault(use.by, condition)
    if set(when.values()) == {"always"}:
        return _md_list(by), "always"
    return _md_list(by), "; ".join(f"{who}: {cond}" for who, cond in when.items())


def permissions_md(model: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    w("# Permissions")
    w("")
    w("<!-- Generated by tools/gen_infra.py; do not edit. Run `.venv/bin/python tools/gen_infra.py` after")
    w("     changing a step's `calls`; tests/test_infra_permissions.py fails while this file is stale. -->")
    w("")
    w("Everything the function app's **system-assigned managed identity** is granted, and why. The source")
    w("is each playbook step's declared calls (`calls = (Call(service, what, permission), ...)` in")
    w("`shared/steps/*.py`) plus the components that call Graph on a timer. The deployment grants a")
    w("permission only while a step in `PLAYBOOK_STEPS` (or an active component) needs it, and only in")
    w("the `MFA_MODE` (or other setting, e.g. `BLOCK_SIGN_IN`) that uses it; `infra/generated/permissions.json`")
    w("carries the same table to Bicep.")
    w("")
    w("| kind | granted by |")
    w("|---|---|")
    w("| Microsoft Graph app roles | `infra/modules/graph-app-roles.bicep` (Bicep Microsoft Graph extension); "
      "with `GRAPH_ROLES_VIA=script`, `infra/scripts/postprovision.py`. Not `Mail.Send`: see below |")
    w("| `Mail.Send`, scoped to `NOTIFY_SENDER` | `infra/scripts/postprovision.py`: Exchange RBAC for Applications "
      "(\"Application Mail.Send\" with a management scope), and the tenant-wide Entra grant removed "
      "(`MAIL_SEND_SCOPE=unscoped` keeps the Entra app role instead) |")
    w(f"| `{EXCHANGE_APP_ROLE}` (Office 365 Exchange Online) | `infra/scripts/postprovision.py` |")
    w("| Exchange Online role group `Breach Responder` (custom roles holding only the cmdlets below) | "
      "`infra/scripts/postprovision.py` (Exchange Online PowerShell); `EXCHANGE_PERMISSIONS=directory-role` "
      "assigns Exchange Administrator instead |")
    w("| Entra directory roles | `infra/scripts/postprovision.py` |")
    w("| Azure RBAC roles | `infra/modules/rbac.bicep`, `infra/modules/eventhubs.bicep` (per hub) |")
    w("")
    w("## Microsoft Graph application permissions")
    w("")
    w("| permission | needed by | when | calls |")
    w("|---|---|---|---|")
    for grant in model["graph"]:
        by, when = _uses_text(grant)
        calls = "<br>".join(f"`{u.what}` ({u.by})" for u in grant.uses)
        w(f"| `{grant.name}` | {by} | {when} | {calls} |")
    w("")
    w("## Exchange Online application permission")
    w("")
    w("| permission | needed by | cmdlets |")
    w("|---|---|---|")
    for grant in model["exchange"]:
        by, _ = _uses_text(grant)
        calls = "<br>".join(f"`{u.what}` ({u.by})" for u in grant.uses)
        w(f"| `{grant.name}` | {by} | {calls} |")
    w("")
    w("## Exchange Online role group (custom)")
    w("")
    w("Exchange Online runs a cmdlet for an app only if the app's RBAC allows it. Instead of the")
    w("tenant-wide Exchange Administrator role, the post-provision step adds the app's service principal")
    w("(`New-ServicePrincipal`) to a custom role group `Breach Responder` whose roles are copies of the")
    w("built-in roles that hold these cmdlets (found with `Get-ManagementRole -Cmdlet`), with every other")
    w("cmdlet removed (`Remove-ManagementRoleEntry`). Parameters are not narrowed: the cmdlets need their")
    w("identity and switch parameters, and Exchange offers no per-value restriction beyond a scope.")
    w("")
    w("| cmdlet | needed by |")
    w("|---|---|")
    for grant in model["cmdlets"]:
        by, _ = _uses_text(grant)
        w(f"| `{grant.name}` | {by} |")
    w("")
    w("## Entra directory roles")
    w("")
    w("| role | needed by | why |")
    w("|---|---|---|")
    for grant in model["roles"]:
        by, _ = _uses_text(grant)
        if grant.name == PASSWORD_RESET_ROLE_PLACEHOLDER:
            name = ("User Administrator (default) or Privileged Authentication Administrator "
                    "(`PASSWORD_RESET_ROLE`)")
            why = ("a password reset through `passwordProfile` needs a directory role besides "
                   f"`{PASSWORD_RESET_PERMISSION}`; User Administrator covers non-admin users (admins are "
                   "held for approval), Privileged Authentication Administrator covers every user")
        elif grant.name == SECURITY_ADMIN:
            name = SECURITY_ADMIN
            why = ("only with `EXCHANGE_PERMISSIONS=directory-role`: the blocked-sender cmdlets; assigned only when no "
                   f"enabled step needs {EXCHANGE_ADMIN}, which covers them too")
        else:
            name = grant.name
            why = ("only with `EXCHANGE_PERMISSIONS=directory-role`: the Exchange Online cmdlets run through the admin API "
                   "(mailbox, inbox rules, audit); by default the custom role group above replaces it")
        w(f"| {name} | {by} | {why} |")
    w("")
    w("## Azure RBAC roles (resource scope)")
    w("")
    w("| role | scope | why |")
    w("|---|---|---|")
    for role, scope, why in AZURE_RBAC:
        w(f"| {role} | {scope} | {why} |")
    w("")
    w("## By step")
    w("")
    for step in model["steps"]:
        w(f"### {step['name']}")
        w("")
        if not step["calls"]:
            w("No Graph or Exchange calls.")
        else:
            w("| service | call | permission |")
            w("|---|---|---|")
            for call in step["calls"]:
                w(f"| {call['service']} | `{call['what']}` | `{call['permission']}` |")
        w("")
    if model["components"]:
        w("## Other components")
        w("")
        for component in model["components"]:
            w(f"### {component['name']} (`{component['module']}`)")
            w("")
            w(component["description"] + ".")
            w("")
            w("| service | call | permission | when |")
            w("|---|---|---|---|")
            for call in component["calls"]:
                w(f"| {call['service']} | `{call['what']}` | `{call['permission']}` | {call['when'] or 'always'} |")
            w("")
    w("## Who may call the app")
    w("")
    w("App Service Authentication (Entra ID) fronts every route; the app checks the app roles of the")
    w("responder's app registration (`infra/modules/auth.bicep`; assignment required):")
    w("")
    w("| app role | allows |")
    w("|---|---|")
    w("| `Incident.Submit` | `POST /api/incidents` (users and applications, e.g. a Logic App's managed identity) |")
    w("| `Incident.Read` | `GET /api/incidents[/{id}]`, `GET /api/storm`, `GET /api/securescore[/chart.svg]` |")
    w("| `Incident.Approve` | `POST /api/incidents/{id}/approve` and `/reject`, `POST /api/storm/reset` |")
    w("")
    w("## Left as they are, and why")
    w("")
    w("- Directory roles are tenant-wide. Where a restricted administrative unit fits, assign User")
    w("  Administrator on that unit instead of the tenant (protected accounts are held anyway).")
    w("- The Entra export Event Hubs namespace keeps SAS (local) auth: Azure Monitor diagnostic settings")
    w("  deliver only through a namespace authorization rule (MicrosoftDocs/azure-docs#119932). It holds")
    w("  the Entra hub alone; the Defender hub is in a namespace with local auth off.")
    w("")
    w("## Why the consent and sign-in permissions are these")
    w("")
    w("- `DelegatedPermissionGrant.ReadWrite.All` (revoke-app-consent): `DELETE /oauth2PermissionGrants/{id}`")
    w("  needs it (or `Directory.ReadWrite.All`); no narrower permission deletes a grant. It can also *create*")
    w("  grants, so it is only granted while `revoke-app-consent` is in `PLAYBOOK_STEPS`.")
    w("- `Directory.Read.All` (snapshot, revoke-app-consent): the least-privileged application permission")
    w("  Microsoft documents for listing a user's `oauth2PermissionGrants` and `appRoleAssignments` and reading")
    w("  service principals; read-only.")
    w("- `AppRoleAssignment.ReadWrite.All`: the only permission that deletes a user's app role assignment; with it")
    w("  an app can grant itself any application permission (a path to Global Administrator). It is granted only")
    w("  with `REMOVE_APP_ROLE_ASSIGNMENTS=true`; by default those assignments are listed for review instead.")
    w("- `User.EnableDisableAccount.All` (reset-password, close): the least-privileged permission for")
    w("  `accountEnabled` (with `User.Read.All`), granted only when `BLOCK_SIGN_IN` is `until-close` or")
    w("  `until-approved`. The operator's `enable-sign-in` (queue `operator-actions`) uses the same grant.")
    w("- Mailbox delegates, SendAs, SendOnBehalf, trusted senders and `Search-UnifiedAuditLog` run through the")
    w("  Exchange admin API: `Exchange.ManageAsApp` and the Exchange Administrator role, nothing new.")
    w("")
    return "\n".join(out)


AZURE_RBAC: tuple[tuple[str, str, str], ...] = (
    ("Storage Blob Data Owner", "storage account", "Functions host (locks, timers, Event Hubs checkpoints) "
     "and the Flex Consumption deployment package container"),
    ("Storage Queue Data Contributor", "storage account", "queue triggers, `alerts` and `step-<name>` queues"),
    ("Storage Table Data Contributor", "storage account", "the ledger tables"),
    ("Monitoring Metrics Publisher", "Application Insights", "telemetry with Entra auth (local auth is off)"),
    ("Azure Event Hubs Data Receiver", "each stream hub (streams on), not the namespace", "the Event Hub triggers"),
    ("Key Vault Secrets User", "Key Vault (when deployed)", "Key Vault references in app settings"),
)


def outputs() -> dict[Path, str]:
    model = build_model()
    return {
        PERMISSIONS_MD: permissions_md(model),
        PERMISSIONS_JSON: permissions_json(model),
        BINDINGS_JSON: bindings_json(model),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale (run .venv/bin/python tools/gen_infra.py):", ", ".join(map(str, stale)))
        return 1
    print(("rewrote: " + ", ".join(map(str, stale))) if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
