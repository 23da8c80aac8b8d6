"""The simulator driven through the real client libraries: azure-identity's managed-identity credentials
(App Service flow) and msgraph-sdk's GraphServiceClient over plain http on 127.0.0.1."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

ADELE = "adele.vance@contoso.onmicrosoft.com"
ADELE_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"


@pytest.mark.asyncio
async def test_managed_identity_credential_gets_audience_bound_tokens(sim_identity_env):
    sim = sim_identity_env
    async with ManagedIdentityCredential() as cred:
        graph = await cred.get_token("https://graph.microsoft.com/.default")
        exo = await cred.get_token("https://outlook.office365.com/.default")
    assert graph.token and exo.token and graph.token != exo.token
    assert graph.expires_on > 0
    reqs = sim.client.requests(service="token")
    assert [r["query"]["resource"] for r in reqs] == ["https://graph.microsoft.com", "https://outlook.office365.com"]
    assert all(r["query"]["api-version"] == "2019-08-01" and r["status"] == 200 for r in reqs)
    user = "/v1.0/users/" + ADELE
    assert sim.client.raw("GET", user, token=graph.token)[0] == 200
    assert sim.client.raw("GET", user, token=exo.token)[0] == 401
    invoke = {"CmdletInput": {"CmdletName": "Get-OrganizationConfig", "Parameters": {}}}
    anchor = {"X-AnchorMailbox": f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{TENANT}"}
    assert sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=exo.token, body=invoke,
                          headers=anchor)[0] == 200
    assert sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=graph.token, body=invoke)[0] == 401


@pytest.mark.asyncio
async def test_default_azure_credential_uses_the_simulator(sim_identity_env):
    sim = sim_identity_env
    async with DefaultAzureCredential(
            exclude_environment_credential=True, exclude_workload_identity_credential=True,
            exclude_shared_token_cache_credential=True, exclude_cli_credential=True,
            exclude_powershell_credential=True, exclude_developer_cli_credential=True,
            exclude_visual_studio_code_credential=True, exclude_interactive_browser_credential=True) as cred:
        token = await cred.get_token("https://graph.microsoft.com/.default")
    assert sim.client.raw("GET", "/v1.0/users/" + ADELE, token=token.token)[0] == 200


def test_sync_managed_identity_credential_via_msal(sim_identity_env):
    sim = sim_identity_env
    cred = SyncManagedIdentityCredential()
    try:
        token = cred.get_token("https://graph.microsoft.com/.default")
    finally:
        cred.close()
    assert sim.client.raw("GET", "/v1.0/users/" + ADELE, token=token.token)[0] == 200


@pytest.mark.asyncio
async def test_wrong_identity_header_is_rejected(sim_identity_env, monkeypatch):
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    async with ManagedIdentityCredential() as cred:
        with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
            await cred.get_token("https://graph.microsoft.com/.default")
    assert [r["status"] for r in sim_identity_env.client.requests(service="token")][-1] == 401


@pytest.mark.asyncio
async def test_msgraph_sdk_against_the_simulator(sim_identity_env):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

    sim = sim_identity_env
    async with ManagedIdentityCredential() as cred:
        auth = AzureIdentityAuthenticationProvider(cred, scopes=["https://graph.microsoft.com/.default"],
                                                   allowed_hosts=["127.0.0.1"])
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = sim.url + "/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        params = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "userPrincipalName", "accountEnabled", "onPremisesSyncEnabled"])
        user = await client.users.by_user_id(ADELE).get(
            request_configuration=RequestConfiguration(query_parameters=params))
        assert user.id == ADELE_ID and user.user_principal_name == ADELE
        assert user.account_enabled is True and user.on_premises_sync_enabled is None
        # the SDK's retry handler honours a fractional Retry-After from the simulator
        sim.client.fault_once(service="graph", path_contains="/revokeSignInSessions", status=429, retry_after="0.1")
        result = await client.users.by_user_id(user.id).revoke_sign_in_sessions.post()
        assert result.value is True
        with pytest.raises(ODataError) as info:
            await client.users.by_user_id("68be84bf-a585-4776-80b3-30aa5207aa22").get()
        assert info.value.response_status_code == 404
        assert info.value.error.code == "Request_ResourceNotFound"
    graph_calls = [(r["method"], r["path"], r["status"]) for r in sim.client.requests(service="graph")]
    assert graph_calls == [
        ("GET", f"/v1.0/users/{ADELE}", 200),
        ("POST", f"/v1.0/users/{ADELE_ID}/revokeSignInSessions", 429),
        ("POST", f"/v1.0/users/{ADELE_ID}/revokeSignInSessions", 200),
        ("GET", "/v1.0/users/68be84bf-a585-4776-80b3-30aa5207aa22", 404),
    ]
    assert sim.client.requests(service="graph")[0]["query"]["$select"] == (
        "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled")
    assert sim.client.user_state(ADELE)["revocations"] == 1
