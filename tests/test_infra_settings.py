"""The deployment configures every setting the code reads, with the sample's defaults.

Read at test time, so this stays right as settings are added:
- every ``DEFAULTS`` dict a module under shared/ declares (shared/settings.py and friends);
- local.settings.sample.json ``Values``;
- the function bindings (infra/generated/bindings.json: %SETTING% names, connections).
The deployed settings are *evaluated* from infra/main.bicep (tools/bicep_eval.py), not grepped.
Adding a setting to the code = one line in infra/app-settings.json (this test says which).
"""
from __future__ import annotations

import ast
import importlib
import json
import re
from functools import lru_cache

from tests.helpers.infra import INFRA, ROOT, bicep_eval, main_bicep

SAMPLE = ROOT / "local.settings.sample.json"
APP_SETTINGS_JSON = INFRA / "app-settings.json"
BINDINGS = INFRA / "generated" / "bindings.json"
PARAMETERS = INFRA / "main.parameters.json"

# In the sample for local runs only; the deployment must not copy them. Each with the reason.
LOCAL_ONLY = {
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption takes the runtime from functionAppConfig.runtime (python 3.11) "
                                "and rejects this app setting",
    "AzureWebJobsFeatureFlags": "EnableWorkerIndexing is what Core Tools needs for the v2 Python model; in Azure "
                                "worker indexing is the default",
    "AzureWebJobsStorage": "the Azurite connection string; in Azure the host and the app use the identity-based "
                           "AzureWebJobsStorage__* settings (shared keys are off)",
}
# Settings whose deployed value comes from the deployment itself, not from the sample.
DERIVED = {
    "TENANT_ID": "tenant().tenantId: the tenant the app is deployed into",
}
# Identity-based connection settings (`<connection>__<property>`) are written by main.bicep from
# the deployed resources; the app settings file must not carry them.
IDENTITY_CONNECTION = re.compile(r"^(?P<conn>[A-Za-z0-9_]+?)__(?P<prop>[A-Za-z]+)$")
# App settings the Flex Consumption plan rejects or ignores (Microsoft's deprecation list).
FLEX_REJECTED = {
    "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT", "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTOVERVNET", "WEBSITE_DNS_SERVER", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
}


@lru_cache(maxsize=1)
def code_defaults() -> dict[str, str]:
    """Every ``DEFAULTS = {...}`` at the top of a module under shared/ (imported, not parsed)."""
    merged: dict[str, str] = {}
    for path in sorted((ROOT / "shared").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
        if "DEFAULTS" not in names:
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for key, value in module.DEFAULTS.items():
            assert merged.get(key, value) == value, f"{key} has two different defaults in shared/"
            merged[key] = value
    assert "RESPONDER_MODE" in merged, "shared/settings.py DEFAULTS not found"
    return merged


def sample_values() -> dict[str, str]:
    return json.loads(SAMPLE.read_text())["Values"]


def bindings() -> dict:
    return json.loads(BINDINGS.read_text())


def connection_names() -> set[str]:
    return set(bindings()["connections"])


def is_connection_setting(key: str) -> bool:
    match = IDENTITY_CONNECTION.match(key)
    return bool(match) and match["conn"] in connection_names()


def expected_app_settings() -> dict[str, str]:
    """What infra/app-settings.json must hold: every setting read, with the sample's value."""
    wanted = {**code_defaults(), **sample_values()}
    return {k: v for k, v in wanted.items() if k not in LOCAL_ONLY and not is_connection_setting(k)}


def deployed(**params) -> dict:
    """The app settings main.bicep gives the function app (module functionAppSettings, param appSettings)."""
    ev = main_bicep(**params)
    return ev.eval(ev.module_params("functionAppSettings")["appSettings"], {})


# -- infra/app-settings.json ------------------------------------------------------------------

def test_app_settings_file_has_exactly_the_settings_the_code_reads():
    have = json.loads(APP_SETTINGS_JSON.read_text())
    want = expected_app_settings()
    missing = {k: want[k] for k in sorted(set(want) - set(have))}
    extra = sorted(set(have) - set(want))
    assert not missing, f"add to infra/app-settings.json (one line each): {json.dumps(missing)}"
    assert not extra, f"infra/app-settings.json has settings no code reads: {extra} (remove them)"


def test_app_settings_file_defaults_match_the_sample_and_the_code():
    have = json.loads(APP_SETTINGS_JSON.read_text())
    sample = sample_values()
    wrong = {k: (have[k], expected) for k, expected in expected_app_settings().items() if have.get(k) != expected}
    assert not wrong, f"infra/app-settings.json values differ (have, want): {wrong}"
    # Where the sample and the code both name a default, they agree (else which one deploys?).
    assert {k: v for k, v in code_defaults().items() if k in sample and sample[k] != v} == {}


def test_every_exclusion_is_a_real_sample_key():
    sample = sample_values()
    assert set(LOCAL_ONLY) <= set(sample)
    connection_keys = [k for k in sample if is_connection_setting(k)]
    assert all(k.split("__")[0] in connection_names() for k in connection_keys)


# -- what main.bicep deploys ------------------------------------------------------------------

def test_deployment_sets_every_setting_with_its_default():
    Runtime = bicep_eval().Runtime
    for streams in (False, True):
        settings = deployed(enableStreams=streams)
        for key, default in expected_app_settings().items():
            assert key in settings, f"{key} is not deployed (streams={streams})"
            if key in DERIVED:
                assert isinstance(settings[key], Runtime), f"{key}: {settings[key]!r} should come from the deployment"
            else:
                assert settings[key] == default, (key, settings[key], default)
        assert not (set(settings) & set(LOCAL_ONLY)), "a local-only setting is deployed"
        assert not (set(settings) & FLEX_REJECTED), f"Flex Consumption rejects {set(settings) & FLEX_REJECTED}"


def test_derived_settings_are_exactly_the_documented_ones():
    ev = main_bicep()
    # union(appSettingDefaults, {derived...}, appSettingsGiven, {RESPONDER_MODE: responderMode})
    union = ev.decl("var", "appSettings").expr
    assert union.kind == "call" and union.args[0] == "union"
    first, derived, given, mode = union.args[1]
    assert first.args == ("appSettingDefaults",) and given.args == ("appSettingsGiven",)
    assert set(ev.eval(derived, {})) == set(DERIVED)
    assert set(ev.eval(mode, {})) == {"RESPONDER_MODE"}
    load = ev.decl("var", "appSettingDefaults").expr
    assert load.kind == "call" and load.args[0] == "loadJsonContent"
    assert ev.eval(load.args[1][0], {}) == "app-settings.json"


def test_storage_connection_is_identity_based():
    settings = deployed()
    # The system-assigned identity: no client id anywhere (DefaultAzureCredential and the host use it by default).
    assert "AZURE_CLIENT_ID" not in settings and not [k for k in settings if k.endswith("__clientId")]
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == f"storage.outputs.{service}Endpoint"
    assert "AzureWebJobsStorage" not in settings and "AzureWebJobsStorage__accountName" not in settings
    # What shared/adapters/storage.py reads when there is no connection string:
    from shared.adapters.storage import CONNECTION
    assert {f"{CONNECTION}__queueServiceUri", f"{CONNECTION}__tableServiceUri"} <= set(settings)


def test_application_insights_uses_entra_auth():
    settings = deployed()
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "monitoring.outputs.connectionString"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"  # system-assigned form
    monitoring = (INFRA / "modules" / "monitoring.bicep").read_text()
    assert "DisableLocalAuth: true" in monitoring
    assert "'3913510d-42f4-4e42-8a64-420c390055eb'" in (INFRA / "modules" / "rbac.bicep").read_text()  # Monitoring Metrics Publisher


def test_every_binding_connection_is_configured():
    conns = connection_names()
    on, off = deployed(enableStreams=True), deployed(enableStreams=False)
    assert {"ENTRA_EVENTHUB", "DEFENDER_EVENTHUB"} <= conns  # one connection per stream: two namespaces
    for conn in conns - {"AzureWebJobsStorage"}:
        # identity-based with the system-assigned identity: the namespace is all the host needs
        assert [k for k in on if k.startswith(f"{conn}__")] == [f"{conn}__fullyQualifiedNamespace"]
        assert str(on[f"{conn}__fullyQualifiedNamespace"]).endswith(".servicebus.windows.net")
        assert not [k for k in off if k.startswith(f"{conn}__")], "streams off: no Event Hubs connection"
    # The Entra export hub (SAS for Azure Monitor) and the Defender hub (no SAS) are in different namespaces.
    assert str(on["ENTRA_EVENTHUB__fullyQualifiedNamespace"]).startswith("evhns-entra-")
    assert not str(on["DEFENDER_EVENTHUB__fullyQualifiedNamespace"]).startswith("evhns-entra-")
    both = deployed(enableStreams=True, defenderStreamLocalAuth=True)
    assert both["ENTRA_EVENTHUB__fullyQualifiedNamespace"] == both["DEFENDER_EVENTHUB__fullyQualifiedNamespace"]
    # Streams off: the Event Hub triggers are disabled rather than failing on a missing namespace.
    for function in bindings()["eventHubFunctions"]:
        assert off[f"AzureWebJobs.{function}.Disabled"] == "true"
        assert f"AzureWebJobs.{function}.Disabled" not in on
    assert "'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'" in (INFRA / "modules" / "eventhubs.bicep").read_text()  # Data Receiver


def test_every_setting_a_binding_names_is_deployed():
    settings = deployed()
    refs = set(bindings()["settingReferences"])
    assert refs, "no %SETTING% bindings found"
    assert refs <= set(settings), refs - set(settings)


def test_queues_tables_and_hubs_follow_the_code():
    ev = main_bicep(enableStreams=True)
    settings = ev.value("appSettings")
    b = bindings()
    queues = ev.value("queueNames")
    bases = b["queueNames"] + [settings[s] for s in b["queueNameSettings"]]
    assert sorted(queues) == sorted(bases + [f"{q}-poison" for q in bases])
    from shared.playbook import STEP_NAMES, queue_name
    assert {queue_name(s) for s in STEP_NAMES} <= set(queues)
    assert settings["ALERTS_QUEUE"] in queues
    from shared.adapters.ledger import TABLES
    assert set(TABLES) <= set(ev.eval(ev.module_params("storage")["tableNames"], {}))
    hubs = ev.value("eventHubNames")
    assert sorted(hubs) == sorted(settings[t["hubSetting"]] for t in b["eventHubTriggers"])
    assert len(set(hubs)) == len(hubs), "two stream triggers on one hub"


# -- RESPONDER_MODE and the azd parameters ----------------------------------------------------

def test_deployment_starts_in_approval_mode():
    from shared.settings import MODES
    ev = main_bicep()
    assert ev.value("responderMode") == "approval" == sample_values()["RESPONDER_MODE"] == code_defaults()["RESPONDER_MODE"]
    assert set(ev.param_allowed("responderMode")) == set(MODES)
    assert deployed()["RESPONDER_MODE"] == "approval"
    assert ev.value("RESPONDER_MODE") == "approval"  # output
    params = json.loads(PARAMETERS.read_text())["parameters"]
    assert params["responderMode"]["value"] == "${RESPONDER_MODE=approval}"
    # Moving to auto is a parameter (azd env set RESPONDER_MODE auto); an override cannot bypass it.
    assert deployed(responderMode="auto")["RESPONDER_MODE"] == "auto"
    assert deployed(appSettingOverrides={"RESPONDER_MODE": "auto"})["RESPONDER_MODE"] == "approval"


def test_overrides_apply_and_unset_ones_keep_the_defaults():
    settings = deployed(appSettingOverrides={"MFA_MODE": "per-user", "SOC_MAILBOX": "", "TENANT_DOMAIN": "contoso.com"})
    assert settings["MFA_MODE"] == "per-user"
    assert settings["SOC_MAILBOX"] == expected_app_settings()["SOC_MAILBOX"]
    assert settings["TENANT_DOMAIN"] == "contoso.com"


def test_azd_parameters_file_matches_main_bicep():
    ev = main_bicep()
    params = json.loads(PARAMETERS.read_text())["parameters"]
    declared = set(ev.names("param"))
    assert set(params) <= declared, set(params) - declared
    required = {d.name for d in ev.decls if d.keyword == "param" and d.expr is None}
    assert required <= set(params), required - set(params)
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    overrides = params["appSettingOverrides"]["value"]
    app_settings = json.loads(APP_SETTINGS_JSON.read_text())
    assert set(overrides) <= set(app_settings), set(overrides) - set(app_settings)
    assert all(value == "${" + key + "}" for key, value in overrides.items()), overrides
    assert "RESPONDER_MODE" not in overrides  # a validated parameter of its own


def test_every_output_evaluates():
    for streams in (False, True):
        ev = main_bicep(enableStreams=streams, enableKeyVault=streams)
        for name in ev.names("output"):
            ev.value(name)  # raises on a setting or property that does not exist
