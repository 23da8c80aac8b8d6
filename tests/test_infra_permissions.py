"""Least privilege, checked against the steps' own declarations.

- PERMISSIONS.md and infra/generated/*.json are exactly what tools/gen_infra.py makes from
  ``shared.steps.ALL_STEPS[*].calls`` (and the components bound in function_app);
- the Graph app roles main.bicep grants (evaluated, not grepped) are exactly the Graph
  permissions the enabled steps declare -- no more, no fewer -- for each MFA mode and playbook;
- Exchange.ManageAsApp and the directory roles are granted by infra/scripts/postprovision.py,
  run here against a fake tenant with main.bicep's own outputs: it grants what is missing,
  a second run changes nothing, --prune removes what is no longer needed.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import urllib.parse
import uuid
from functools import lru_cache

import pytest

from tests.helpers.infra import INFRA, ROOT, bicep_eval, load_tool, main_bicep

PERMISSIONS_MD = ROOT / "PERMISSIONS.md"
PERMISSIONS_JSON = INFRA / "generated" / "permissions.json"
SCRIPT = INFRA / "scripts" / "postprovision.py"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"


def gen():
    return load_tool("gen_infra")


def all_steps():
    from shared.steps import ALL_STEPS

    return ALL_STEPS


DEFAULTS_STEPS = __import__("shared.settings", fromlist=["DEFAULTS"]).DEFAULTS["PLAYBOOK_STEPS"]


def step_graph_permissions(steps: list[str] | None = None, mfa_mode: str | None = None,
                           settings: dict[str, str] | None = None) -> set[str]:
    """Straight from the steps' declared calls: Graph permissions of these steps in this MFA mode
    (None: any) and, for calls made under another setting ("(BLOCK_SIGN_IN=until-close)"), with these
    settings (None: any value; otherwise the defaults unless given)."""
    from shared.settings import DEFAULTS, MFA_MODES

    wanted = set()
    for cls in all_steps():
        if steps is not None and cls.name not in steps:
            continue
        for call in cls.calls:
            if call.service != "graph":
                continue
            other_modes = [m for m in MFA_MODES if m != mfa_mode and f"({m})" in call.what]
            if mfa_mode is not None and other_modes:
                continue
            setting, values = gen().call_condition(call.what)
            if settings is not None and setting not in ("*", "MFA_MODE"):
                current = str({**DEFAULTS, **settings}.get(setting, "")).strip().lower()
                if current not in values:
                    continue
            wanted.add(call.permission)
    return wanted


@lru_cache(maxsize=1)
def components() -> list[dict]:
    return gen().build_model()["components"]


def component_graph_permissions(settings: dict[str, str] | None = None) -> set[str]:
    """Graph permissions of the components function_app binds (poller, Secure Score, ...);
    with ``settings``, only those whose condition (e.g. SECURE_SCORE_NOTIFY=true) holds."""
    wanted = set()
    for component in components():
        for call in component["calls"]:
            setting, _, value = call["when"].partition("=")
            if setting and settings is not None:
                current = str(settings.get(setting, "")).strip().lower()
                if current not in (gen().TRUE_VALUES if value == "true" else [value]):
                    continue
            wanted.add(call["permission"])
    return wanted


def granted(**params) -> dict:
    ev = main_bicep(**params)
    return {
        "graph": ev.value("graphAppRoles"),
        "exchange": ev.value("exchangeAppRoles"),
        "roles": ev.value("directoryRoles"),
        "settings": ev.value("appSettings"),
        "outputs": {name: ev.value(name) for name in ev.names("output")},
    }


# -- the generated files ----------------------------------------------------------------------

def test_generated_files_are_current():
    stale = [p.relative_to(ROOT).as_posix() for p, text in gen().outputs().items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"stale: {stale}. Regenerate with `.venv/bin/python tools/gen_infra.py` and commit the result."


def test_permissions_json_holds_every_declared_permission():
    data = json.loads(PERMISSIONS_JSON.read_text())
    graph = {g["permission"] for g in data["graph"]}
    by_steps = {g["permission"] for g in data["graph"] if any(u["kind"] == "step" for u in g["uses"])}
    assert by_steps == step_graph_permissions(), "Graph permissions differ from the steps' declared calls"
    assert graph == step_graph_permissions() | component_graph_permissions()
    exo_steps = {cls.name for cls in all_steps() for call in cls.calls if call.service == "exo"}
    assert [e["permission"] for e in data["exchange"]] == (["Exchange.ManageAsApp"] if exo_steps else [])
    assert {u["by"] for e in data["exchange"] for u in e["uses"]} == exo_steps
    assert (data["graphAppId"], data["exchangeAppId"]) == (GRAPH_APP_ID, EXCHANGE_APP_ID)


def test_permissions_md_names_each_permission_with_the_steps_that_need_it():
    text = PERMISSIONS_MD.read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([^`]+)` \| ([^|]+) \|", line)
        if match:
            rows.setdefault(match[1], match[2])
    for cls in all_steps():
        for call in cls.calls:
            assert call.permission in rows, f"{call.permission} ({cls.name}) missing from PERMISSIONS.md"
            assert cls.name in rows[call.permission], f"PERMISSIONS.md: {call.permission} does not name {cls.name}"
        assert f"### {cls.name}" in text


# -- what main.bicep grants -------------------------------------------------------------------

def test_bicep_grants_exactly_the_graph_permissions_the_steps_declare():
    from shared.settings import DEFAULTS, MFA_MODES

    default_steps = DEFAULTS["PLAYBOOK_STEPS"].split(",")
    union = set()
    conditions = [{}, {"BLOCK_SIGN_IN": "until-close", "REMOVE_APP_ROLE_ASSIGNMENTS": "true"},
                  {"BLOCK_SIGN_IN": "until-approved", "REMOVE_APP_ROLE_ASSIGNMENTS": "yes", "RECOVERY": "tap"}]
    for mode in MFA_MODES:
        for extra in conditions:
            overrides = {"MFA_MODE": mode, "SECURE_SCORE_NOTIFY": "true", **extra}
            result = granted(mailSendScope="unscoped", appSettingOverrides=overrides)
            # RECOVERY=tap adds the recovery-pass step (settings.effective_playbook; main.bicep alike).
            steps = default_steps + (["recovery-pass"] if extra.get("RECOVERY") == "tap" else [])
            want = step_graph_permissions(steps, mode, overrides) | component_graph_permissions(result["settings"])
            assert sorted(result["graph"]) == sorted(want), f"{overrides}"
            assert len(result["graph"]) == len(set(result["graph"])), "a role granted twice"
            union |= set(result["graph"])
    # No more, no fewer: across the modes, every declared Graph permission and nothing else.
    assert union == step_graph_permissions() | component_graph_permissions()
    # By default Mail.Send is never granted tenant-wide in Entra: Exchange RBAC for Applications
    # grants it for NOTIFY_SENDER only (post-provision).
    scoped = granted(appSettingOverrides={"SECURE_SCORE_NOTIFY": "true"})
    assert set(scoped["graph"]) == (step_graph_permissions(default_steps, "ca-group", {})
                                    | component_graph_permissions(scoped["settings"])) - {"Mail.Send"}
    assert scoped["outputs"]["RESPONDER_MAIL_SEND_SCOPE"] == "exchange-rbac"
    assert granted(mailSendScope="unscoped")["outputs"]["RESPONDER_MAIL_SEND_SCOPE"] == "unscoped"


def test_default_deployment_grants_ca_group_mode_only():
    result = granted()
    assert "GroupMember.ReadWrite.All" in result["graph"]
    assert not {"Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod"} & set(result["graph"])
    # the optional sign-in block and app role assignment removal are off by default: not granted
    assert not {"User.EnableDisableAccount.All", "AppRoleAssignment.ReadWrite.All"} & set(result["graph"])
    assert {"DelegatedPermissionGrant.ReadWrite.All", "Directory.Read.All"} <= set(result["graph"])
    assert result["exchange"] == ["Exchange.ManageAsApp"]
    # The Exchange cmdlets run under a custom role group, not the tenant-wide Exchange Administrator.
    assert result["roles"] == ["User Administrator"]
    assert sorted(granted(exchangePermissions="directory-role")["roles"]) == ["Exchange Administrator", "User Administrator"]
    declared = {c for cls in all_steps() for call in cls.calls if call.service == "exo" for c in gen().cmdlets_in(call.what)}
    assert set(result["outputs"]["RESPONDER_EXCHANGE_CMDLETS"].split(",")) == declared
    assert {"Set-Mailbox", "Disable-InboxRule", "Remove-BlockedSenderAddress", "Get-MailboxAuditBypassAssociation",
            "Set-MailboxAuditBypassAssociation"} <= declared


def test_the_recovery_pass_permissions_are_granted_only_with_recovery_tap():
    tap_only = {"UserAuthMethod-TAP.ReadWrite.All", "Policy.Read.AuthenticationMethod"}
    assert not tap_only & set(granted()["graph"])
    assert tap_only <= set(granted(appSettingOverrides={"RECOVERY": "tap"})["graph"])
    # named in PLAYBOOK_STEPS but RECOVERY=none: the step skips, nothing is granted for it
    listed = DEFAULTS_STEPS.replace(",close", ",recovery-pass,close")
    assert not tap_only & set(granted(appSettingOverrides={"PLAYBOOK_STEPS": listed})["graph"])


def test_the_sign_in_block_and_app_role_removal_are_granted_only_when_switched_on():
    block = granted(appSettingOverrides={"BLOCK_SIGN_IN": "until-approved"})
    assert "User.EnableDisableAccount.All" in block["graph"] and "AppRoleAssignment.ReadWrite.All" not in block["graph"]
    roles = granted(appSettingOverrides={"REMOVE_APP_ROLE_ASSIGNMENTS": "TRUE"})
    assert "AppRoleAssignment.ReadWrite.All" in roles["graph"] and "User.EnableDisableAccount.All" not in roles["graph"]
    # a playbook without revoke-app-consent holds no consent permission at all
    steps = "snapshot,reset-password,enforce-mfa,clean-mailbox,remove-delegates,unblock-sender,mailbox-audit,close"
    lean = granted(appSettingOverrides={"PLAYBOOK_STEPS": steps, "REMOVE_APP_ROLE_ASSIGNMENTS": "true"})
    assert not {"DelegatedPermissionGrant.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"} & set(lean["graph"])


def test_a_smaller_playbook_gets_fewer_permissions():
    from shared.playbook import validate_order

    steps = validate_order(["reset-password", "enforce-mfa", "unblock-sender"])
    result = granted(appSettingOverrides={"PLAYBOOK_STEPS": ",".join(steps)})
    # (Mail.Send, which the hold-expiry mail needs, is scoped by Exchange RBAC, never granted here.)
    assert set(result["graph"]) == (step_graph_permissions(list(steps), "ca-group", {})
                                    | component_graph_permissions(result["settings"])) - {"Mail.Send"}
    assert "Mail.Send" not in result["graph"] and "MailboxSettings.ReadWrite" not in result["graph"]
    assert result["exchange"] == ["Exchange.ManageAsApp"]  # unblock-sender runs blocked-sender cmdlets
    assert result["roles"] == ["User Administrator"]
    assert result["outputs"]["RESPONDER_EXCHANGE_CMDLETS"] == "Get-BlockedSenderAddress,Remove-BlockedSenderAddress"
    fallback = granted(exchangePermissions="directory-role", appSettingOverrides={"PLAYBOOK_STEPS": ",".join(steps)})
    assert sorted(fallback["roles"]) == ["Security Administrator", "User Administrator"]

    no_exchange = granted(appSettingOverrides={"PLAYBOOK_STEPS": "reset-password,enforce-mfa"})
    assert no_exchange["exchange"] == [] and no_exchange["roles"] == ["User Administrator"]
    assert no_exchange["outputs"]["RESPONDER_EXCHANGE_APP_ROLES"] == ""
    assert no_exchange["outputs"]["RESPONDER_EXCHANGE_CMDLETS"] == ""


def test_password_reset_role_is_a_choice():
    result = granted(passwordResetRole="privileged-authentication-administrator")
    assert "Privileged Authentication Administrator" in result["roles"] and "User Administrator" not in result["roles"]


def test_outputs_carry_the_grants_to_the_post_provision_script():
    out = granted()["outputs"]
    ev = main_bicep()
    assert out["RESPONDER_GRAPH_APP_ROLES"].split(",") == ev.value("graphAppRoles")
    assert out["RESPONDER_EXCHANGE_APP_ROLES"] == "Exchange.ManageAsApp"
    assert out["RESPONDER_DIRECTORY_ROLES"].split(",") == ev.value("directoryRoles")
    assert (out["RESPONDER_GRAPH_APP_ID"], out["RESPONDER_EXCHANGE_APP_ID"]) == (GRAPH_APP_ID, EXCHANGE_APP_ID)
    assert out["RESPONDER_GRAPH_ROLES_VIA"] == "bicep"


def test_graph_roles_are_granted_through_the_graph_extension():
    text = (INFRA / "modules" / "graph-app-roles.bicep").read_text()
    assert "extension microsoftGraphV1" in text
    assert "'Microsoft.Graph/servicePrincipals@v1.0' existing" in text
    assert re.search(r"'Microsoft\.Graph/appRoleAssignedTo@v1\.0' = \[\s*for appRole in appRoles:", text)
    ev = main_bicep()
    params = ev.module_params("graphRoles")
    assert params["appRoles"].args == ("graphAppRoles",)
    cond = ev.module_condition("graphRoles")
    assert ev.eval(cond, {}) is True and main_bicep(graphRolesVia="script").eval(cond, {}) is False
    # No permission is typed into Bicep: they all come from permissions.json.
    names = {g["permission"] for g in json.loads(PERMISSIONS_JSON.read_text())["graph"]} | {"Exchange.ManageAsApp"}
    names |= {c["cmdlet"] for c in json.loads(PERMISSIONS_JSON.read_text())["exchangeCmdlets"]}
    for path in INFRA.rglob("*.bicep"):
        body = path.read_text()
        assert not [n for n in names if f"'{n}'" in body], f"{path.name} hard-codes a permission"


# -- the post-provision script against a fake tenant --------------------------------------------

def load_script():
    name = "_infra_postprovision"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class FakeTenant:
    """Just enough Microsoft Graph and ARM for the script, with a request log."""

    MI = _id("mi")
    MI_APP_ID = _id("app", "mi")

    def __init__(self, graph_roles=(), exchange_roles=(), directory_roles=()):
        all_graph = {g["permission"] for g in json.loads(PERMISSIONS_JSON.read_text())["graph"]}
        all_graph |= {"Directory.ReadWrite.All", "Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod"}
        self.sps = {
            GRAPH_APP_ID: {"id": _id("sp", "graph"), "displayName": "Microsoft Graph", "appRoles": [
                {"id": _id("role", v), "value": v, "allowedMemberTypes": ["Application"]} for v in sorted(all_graph)]},
            EXCHANGE_APP_ID: {"id": _id("sp", "exo"), "displayName": "Office 365 Exchange Online", "appRoles": [
                {"id": _id("role", v), "value": v, "allowedMemberTypes": ["Application"]}
                for v in ("Exchange.ManageAsApp", "full_access_as_app")]},
        }
        self.assignments: list[dict] = []
        for app_id, values in ((GRAPH_APP_ID, graph_roles), (EXCHANGE_APP_ID, exchange_roles)):
            for value in values:
                self._assign(app_id, value)
        self.role_defs = {name: _id("dirrole", name) for name in load_script().MANAGED_DIRECTORY_ROLES}
        self.role_assignments = [{"id": _id("ra", n), "principalId": self.MI, "roleDefinitionId": self.role_defs[n],
                                  "directoryScopeId": "/"} for n in directory_roles]
        self.diagnostic_settings: dict[str, dict] = {}
        self.log: list[tuple[str, str, object]] = []

    def _assign(self, app_id: str, value: str) -> None:
        sp = self.sps[app_id]
        role = next(r for r in sp["appRoles"] if r["value"] == value)
        self.assignments.append({"id": _id("ara", app_id, value), "principalId": self.MI, "resourceId": sp["id"],
                                 "appRoleId": role["id"]})

    def held(self, app_id: str) -> set[str]:
        sp = self.sps[app_id]
        names = {r["id"]: r["value"] for r in sp["appRoles"]}
        return {names[a["appRoleId"]] for a in self.assignments if a["resourceId"] == sp["id"]}

    def held_directory_roles(self) -> set[str]:
        names = {v: k for k, v in self.role_defs.items()}
        return {names[a["roleDefinitionId"]] for a in self.role_assignments}

    def writes(self) -> list[tuple[str, str, object]]:
        return [entry for entry in self.log if entry[0] != "GET"]

    def __call__(self, method: str, url: str, body):
        self.log.append((method, url, body))
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        path = urllib.parse.unquote(parts.path)
        if parts.netloc == "management.azure.com":
            name = path.rsplit("/", 1)[-1]
            assert path.startswith("/providers/microsoft.aadiam/diagnosticSettings/")
            if method == "GET":
                return (200, self.diagnostic_settings[name]) if name in self.diagnostic_settings else (404, {"error": {"code": "NotFound"}})
            if method == "PUT":
                self.diagnostic_settings[name] = body
                return 200, body
        path = path.removeprefix("/v1.0")
        if m := re.fullmatch(r"/servicePrincipals\(appId='([^']+)'\)", path):
            sp = self.sps.get(m[1])
            return (200, sp) if sp else (404, {"error": {"code": "Request_ResourceNotFound"}})
        if path == f"/servicePrincipals/{self.MI}":
            return 200, {"id": self.MI, "appId": self.MI_APP_ID, "displayName": "func-test"}
        if path == f"/servicePrincipals/{self.MI}/appRoleAssignments":
            if method == "GET":
                return 200, {"value": list(self.assignments)}
            assert body["principalId"] == self.MI
            entry = {**body, "id": _id("ara", body["resourceId"], body["appRoleId"])}
            self.assignments.append(entry)
            return 201, entry
        if m := re.fullmatch(rf"/servicePrincipals/{self.MI}/appRoleAssignments/(.+)", path):
            assert method == "DELETE"
            self.assignments = [a for a in self.assignments if a["id"] != m[1]]
            return 204, None
        if path == "/roleManagement/directory/roleDefinitions":
            name = re.fullmatch(r"displayName eq '(.+)'", query["$filter"][0])[1]
            return 200, {"value": [{"id": self.role_defs[name], "displayName": name}] if name in self.role_defs else []}
        if path == "/roleManagement/directory/roleAssignments":
            if method == "GET":
                principal = re.fullmatch(r"principalId eq '(.+)'", query["$filter"][0])[1]
                return 200, {"value": [a for a in self.role_assignments if a["principalId"] == principal]}
            assert body["directoryScopeId"] == "/" and body["principalId"] == self.MI
            entry = {**body, "id": _id("ra", body["roleDefinitionId"])}
            self.role_assignments.append(entry)
            return 201, entry
        if m := re.fullmatch(r"/roleManagement/directory/roleAssignments/(.+)", path):
            self.role_assignments = [a for a in self.role_assignments if a["id"] != m[1]]
            return 204, None
        raise AssertionError(f"unexpected request {method} {url}")


RULE_ID = ("/subscriptions/s/resourceGroups/rg-test/providers/Microsoft.EventHub/namespaces/evhns-x/"
           "authorizationRules/entra-diagnostics")


def azd_env(**params) -> dict[str, str]:
    """main.bicep's outputs as azd stores them, deploy-time values filled in as Azure would."""
    Runtime = bicep_eval().Runtime
    filled = {
        "functionApp.outputs.principalId": FakeTenant.MI,
        "functionApp.outputs.url": APP_URL,
        "functionApp.outputs.name": "func-test",
        "auth.outputs.clientId": _id("api"),
        "tenant().tenantId": _id("tenant"),
        "entraExport.outputs.diagnosticsRuleId": RULE_ID,
        "entraExport.outputs.id": RULE_ID.split("/authorizationRules")[0],
        "eventHubs.outputs.id": "/subscriptions/s/resourceGroups/rg-test/providers/Microsoft.EventHub/namespaces/evhns-y",
    }
    env = {"AZURE_ENV_NAME": "test"}
    for name, value in granted(**params)["outputs"].items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Runtime):
            value = filled.get(str(value), f"<{value}>")
        env[name] = value
    return env


APP_URL = "https://func-test.azurewebsites.net"


class FakeExchange:
    """Exchange Online PowerShell as the script drives it: records each script it is given and
    answers with the result line the real script prints."""

    def __init__(self, in_scope: bool = True, missing: tuple[str, ...] = (), fail: str = "") -> None:
        self.scripts: list[str] = []
        self.in_scope, self.missing, self.fail = in_scope, list(missing), fail

    def __call__(self, script: str) -> tuple[int, str, str]:
        self.scripts.append(script)
        if self.fail:
            return 1, "", self.fail
        wanted = re.search(r"\$wanted = @\((.*)\)", script)
        cmdlets = re.findall(r"'([^']+)'", wanted[1]) if wanted else []
        result = {"servicePrincipal": "created" if len(self.scripts) == 1 else "exists", "roleGroup": "created",
                  "cmdlets": {c: "Mail Recipients" for c in cmdlets if c not in self.missing}, "missing": self.missing,
                  "mailSend": {"scope": "x", "inScope": self.in_scope} if "Application Mail.Send" in script else None}
        return 0, "connected\nBREACH-RESPONDER-RESULT " + json.dumps(result) + "\n", ""


class FakeApp:
    """The function app's front door: 401 for anonymous and forged requests unless told otherwise."""

    def __init__(self, anonymous: int = 401, forged: int = 401) -> None:
        self.anonymous, self.forged = anonymous, forged
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, url: str, headers: dict[str, str]) -> int:
        self.calls.append((url, headers))
        return self.forged if "X-MS-CLIENT-PRINCIPAL" in headers else self.anonymous


def run_script(tenant: FakeTenant, env: dict[str, str], *args: str, exo: FakeExchange | None = None,
               app: FakeApp | None = None) -> int:
    return load_script().main(list(args), env=env, transport=tenant, exo=exo or FakeExchange(), probe=app or FakeApp())


def test_script_grants_exchange_and_directory_roles_then_changes_nothing(capsys):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    # main.bicep (Graph extension) has granted the Graph roles before the hook runs.
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    exchange = FakeExchange()
    assert run_script(tenant, env, exo=exchange) == 0
    assert tenant.held(EXCHANGE_APP_ID) == {"Exchange.ManageAsApp"}
    assert tenant.held_directory_roles() == {"User Administrator"}  # no tenant-wide Exchange role
    assert not [w for w in tenant.writes() if "appRoleAssignments" in w[1] and w[2]["resourceId"] == tenant.sps[GRAPH_APP_ID]["id"]]
    assert len(tenant.writes()) == 2
    [script] = exchange.scripts
    assert f"New-ServicePrincipal -AppId '{FakeTenant.MI_APP_ID}' -ObjectId '{FakeTenant.MI}'" in script
    for cmdlet in env["RESPONDER_EXCHANGE_CMDLETS"].split(","):
        assert f"'{cmdlet}'" in script
    assert "Add-RoleGroupMember -Identity 'Breach Responder'" in script
    assert "PrimarySmtpAddress -eq ''responder@contoso.com''" in script and "-Role 'Application Mail.Send'" in script
    tenant.log.clear()
    assert run_script(tenant, env, exo=exchange) == 0  # idempotent
    assert tenant.writes() == []
    assert "made 1 change(s)" in capsys.readouterr().out.splitlines()[-1]  # the (idempotent) Exchange script only


def test_script_removes_tenant_wide_grants_only_once_exchange_rbac_covers_them(capsys):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    earlier = env["RESPONDER_GRAPH_APP_ROLES"].split(",") + ["Mail.Send"]
    # Not in scope yet: the Entra Mail.Send grant stays, and the operator is told.
    tenant = FakeTenant(graph_roles=earlier, directory_roles=["User Administrator", "Exchange Administrator"])
    assert run_script(tenant, env, exo=FakeExchange(in_scope=False)) == 1
    assert "Mail.Send" in tenant.held(GRAPH_APP_ID)
    captured = capsys.readouterr()
    assert "not in scope for responder@contoso.com" in captured.err
    assert "remove directory role Exchange Administrator (replaced by the Exchange role group" in captured.out
    # The role group covered every cmdlet: Exchange Administrator went already.
    assert tenant.held_directory_roles() == {"User Administrator"}
    # In scope: Mail.Send leaves Entra.
    assert run_script(tenant, env, exo=FakeExchange(in_scope=True)) == 0
    assert "Mail.Send" not in tenant.held(GRAPH_APP_ID)
    out = capsys.readouterr().out
    assert "remove the tenant-wide Microsoft Graph Mail.Send (scoped to responder@contoso.com" in out


def test_script_keeps_exchange_administrator_when_a_cmdlet_has_no_role(capsys):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","),
                        directory_roles=["User Administrator", "Exchange Administrator"])
    assert run_script(tenant, env, exo=FakeExchange(missing=("Remove-BlockedSenderAddress",))) == 1
    assert "Exchange Administrator" in tenant.held_directory_roles()
    assert "no Exchange role holds Remove-BlockedSenderAddress" in capsys.readouterr().err


def test_script_without_exchange_powershell_says_what_to_do(capsys):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    assert run_script(tenant, env, exo=FakeExchange(fail="pwsh (PowerShell 7) is not installed")) == 1
    err = capsys.readouterr().err
    assert "EXCHANGE_PERMISSIONS directory-role" in err and "pwsh (PowerShell 7) is not installed" in err


def test_script_asks_for_notify_sender_before_scoping_mail_send(capsys):
    env = azd_env()  # NOTIFY_SENDER unset
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    assert run_script(tenant, env) == 1
    assert "NOTIFY_SENDER is empty" in capsys.readouterr().err


@pytest.mark.parametrize("anonymous, forged", [(200, 401), (401, 200), (404, 404)])
def test_script_fails_when_app_service_authentication_is_not_in_front(capsys, anonymous, forged):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    app = FakeApp(anonymous=anonymous, forged=forged)
    assert run_script(tenant, env, app=app) == 1
    assert "App Service Authentication is not in front" in capsys.readouterr().err
    assert [url for url, _ in app.calls] == [f"{APP_URL}/api/incidents"] * 2
    assert load_script().main(["--verify-auth"], env=env, transport=tenant, probe=FakeApp()) == 0


def test_script_grants_graph_roles_when_asked_to(capsys):
    env = azd_env(graphRolesVia="script", appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant()
    assert run_script(tenant, env) == 0
    assert tenant.held(GRAPH_APP_ID) == set(env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    assert tenant.held(GRAPH_APP_ID) == set(main_bicep().value("graphAppRoles"))


def test_script_reports_a_graph_role_bicep_did_not_grant(capsys):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    roles = env["RESPONDER_GRAPH_APP_ROLES"].split(",")
    tenant = FakeTenant(graph_roles=roles[1:])
    assert run_script(tenant, env) == 1
    assert f"Microsoft Graph {roles[0]} is missing" in capsys.readouterr().err
    assert roles[0] not in tenant.held(GRAPH_APP_ID)  # the script does not paper over it


def test_script_streams_entra_risk_to_the_event_hub_once(capsys):
    env = azd_env(enableStreams=True, appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    assert run_script(tenant, env) == 0
    (setting,) = tenant.diagnostic_settings.values()
    props = setting["properties"]
    assert props["eventHubAuthorizationRuleId"] == RULE_ID
    assert props["eventHubName"] == env["ENTRA_EVENTHUB_NAME"] == main_bicep().value("appSettings")["ENTRA_EVENTHUB_NAME"]
    assert sorted(log["category"] for log in props["logs"] if log["enabled"]) == ["RiskyUsers", "UserRiskEvents"]
    out = capsys.readouterr().out
    assert env["DEFENDER_EVENTHUB_NAME"] in out and "Streaming API" in out
    tenant.log.clear()
    assert run_script(tenant, env) == 0
    assert tenant.writes() == []


def test_script_prunes_only_when_asked(capsys):
    env = azd_env(exchangePermissions="directory-role", mailSendScope="unscoped",
                  appSettingOverrides={"PLAYBOOK_STEPS": "reset-password,enforce-mfa"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(",") + ["MailboxSettings.ReadWrite"],
                        exchange_roles=["Exchange.ManageAsApp"],
                        directory_roles=["User Administrator", "Exchange Administrator"])
    assert run_script(tenant, env) == 0
    assert "MailboxSettings.ReadWrite" in tenant.held(GRAPH_APP_ID) and "Exchange Administrator" in tenant.held_directory_roles()
    assert "--prune removes it" in capsys.readouterr().out
    assert run_script(tenant, env, "--prune") == 0
    assert tenant.held(GRAPH_APP_ID) == set(env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    assert tenant.held(EXCHANGE_APP_ID) == set()
    assert tenant.held_directory_roles() == {"User Administrator"}


def test_script_dry_run_changes_nothing(capsys):
    env = azd_env(enableStreams=True, appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))
    exchange, app = FakeExchange(), FakeApp()
    assert run_script(tenant, env, "--dry-run", exo=exchange, app=app) == 0
    assert tenant.writes() == [] and exchange.scripts == [] and app.calls == []
    out = capsys.readouterr().out
    assert "would grant Office 365 Exchange Online Exchange.ManageAsApp" in out
    assert "would assign directory role User Administrator" in out
    assert "would stream Entra RiskyUsers, UserRiskEvents" in out
    assert "would configure in Exchange Online PowerShell: role group 'Breach Responder'" in out
    assert "would make 4 change(s)" in out


def test_script_without_provision_outputs_says_so(capsys):
    assert run_script(FakeTenant(), {"AZURE_ENV_NAME": "x"}) == 1
    assert "run `azd provision` first" in capsys.readouterr().err


@pytest.mark.parametrize("status", [401, 403])
def test_script_names_the_missing_admin_role_on_403(capsys, status):
    env = azd_env(appSettingOverrides={"NOTIFY_SENDER": "responder@contoso.com"})
    tenant = FakeTenant(graph_roles=env["RESPONDER_GRAPH_APP_ROLES"].split(","))

    def denying(method, url, body):
        if method == "POST":
            return status, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}
        return tenant(method, url, body)

    assert load_script().main([], env=env, transport=denying, exo=FakeExchange(), probe=FakeApp()) == 1
    assert "Privileged Role Administrator" in capsys.readouterr().err
