"""Who may call the deployed app and what its identity holds, read from infra/ (offline):
App Service Authentication with Entra ID in front (authsettingsV2, Return401, the v2.0 issuer of
the tenant, the app registration's client id), app roles that are exactly the ones the code
enforces, a system-assigned identity, Event Hubs without SAS except the one namespace Azure
Monitor needs it for, and the Data Receiver role per hub."""
from __future__ import annotations

import re

from tests.helpers.infra import INFRA, main_bicep

MODULES = INFRA / "modules"


def text(name: str) -> str:
    return (MODULES / name).read_text()


def test_app_service_authentication_fronts_every_route_with_entra_id():
    body = text("functionapp.bicep")
    auth = body[body.index("resource auth 'Microsoft.Web/sites/config@"):]
    assert "name: 'authsettingsV2'" in auth
    assert "requireAuthentication: true" in auth and "unauthenticatedClientAction: 'Return401'" in auth
    assert "openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'" in auth
    assert "clientId: authClientId" in auth and "allowedApplications: []" in auth
    ev = main_bicep()
    params = ev.module_params("functionApp")
    assert ev.eval(params["authClientId"], {}) == "auth.outputs.clientId"
    # KEY_ONLY_INTAKE=false: no way around Easy Auth but the console's sign-in page and its CSS/JS (no data)
    console = ["/api/console/signin", "/api/console/static"]
    assert ev.eval(params["authExcludedPaths"], {}) == console
    keyed = main_bicep(appSettingOverrides={"KEY_ONLY_INTAKE": "true"})
    assert keyed.eval(keyed.module_params("functionApp")["authExcludedPaths"], {}) == console + ["/api/key-intake"]
    settings = ev.eval(ev.module_params("functionAppSettings")["appSettings"], {})
    assert settings["WEBSITE_AUTH_AAD_ALLOWED_TENANTS"] == "tenant().tenantId"
    assert settings["KEY_ONLY_INTAKE"] == "false"


def test_the_app_registration_declares_exactly_the_roles_the_code_enforces():
    from shared.principal import Role

    body = text("auth.bicep")
    assert "extension microsoftGraphV1" in body
    assert set(re.findall(r"value: '(Incident\.[A-Za-z]+)'", body)) == {r.value for r in Role}
    assert "appRoleAssignmentRequired: true" in body and "requestedAccessTokenVersion: 2" in body
    submit = body[body.index("value: 'Incident.Submit'"):body.index("value: 'Incident.Read'")]
    assert "'Application'" in submit  # a Logic App's or Sentinel's managed identity may submit
    approve = body[body.index("value: 'Incident.Approve'"):]
    assert "'Application'" not in approve.split("]")[0]  # approving is for people
    out = main_bicep().value("RESPONDER_API_SCOPE")
    assert str(out) == "auth.outputs.clientId/.default"


def test_the_function_app_runs_as_its_system_assigned_identity():
    body = text("functionapp.bicep")
    assert "type: 'SystemAssigned'" in body and "type: 'SystemAssignedIdentity'" in body
    assert not (MODULES / "identity.bicep").exists()
    for path in INFRA.rglob("*.bicep"):
        assert "userAssignedIdentities" not in path.read_text(), path.name
    ev = main_bicep(enableStreams=True, enableKeyVault=True)
    for module in ("rbac", "graphRoles"):
        assert ev.eval(ev.module_params(module)["principalId"], {}) == "functionApp.outputs.principalId"
    for module in ("eventHubs", "entraExport", "keyVault"):
        assert ev.eval(ev.module_params(module)["readerPrincipalId"], {}) == "functionApp.outputs.principalId"


def test_event_hubs_keep_sas_only_where_azure_monitor_needs_it_and_the_app_reads_each_hub():
    body = text("eventhubs.bicep")
    assert "disableLocalAuth: !localAuthForExport" in body
    assert re.search(r"roleAssignments@[0-9-]+' = \[\s*for \(hubName, i\) in hubNames:.*?scope: hubs\[i\]", body, re.S)
    assert "'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'" in body  # Azure Event Hubs Data Receiver
    assert "resource diagnosticsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = if (localAuthForExport)" in body
    ev = main_bicep(enableStreams=True)
    locked, export = ev.module_params("eventHubs"), ev.module_params("entraExport")
    assert ev.eval(locked["localAuthForExport"], {}) is False and ev.eval(export["localAuthForExport"], {}) is True
    settings = ev.value("appSettings")
    assert ev.eval(export["hubNames"], {}) == [settings["ENTRA_EVENTHUB_NAME"]]  # the SAS namespace holds the Entra hub only
    assert ev.eval(locked["hubNames"], {}) == [settings["DEFENDER_EVENTHUB_NAME"]]
    moved = main_bicep(enableStreams=True, defenderStreamLocalAuth=True)
    assert moved.value("lockedHubNames") == [] and len(moved.value("exportHubNames")) == 2
