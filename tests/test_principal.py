"""Reading the principal App Service Authentication validated (shared/principal.py): both role
claim forms, the object id and tenant checks, and never trusting the headers without Easy Auth."""
from __future__ import annotations

import base64
import json

import pytest

from shared.principal import AuthError, Role, easy_auth_in_front, principal_from_headers, require

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID = "http://schemas.microsoft.com/identity/claims/tenantid"
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
ALICE = "93794d87-3e72-5e73-b6c2-919f0b7576f6"


def headers(claims: list[tuple[str, str]], role_typ: str = ROLE_URI, **extra: str) -> dict[str, str]:
    principal = {"auth_typ": "aad", "claims": [{"typ": t, "val": v} for t, v in claims],
                 "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "role_typ": role_typ}
    return {"x-ms-client-principal": base64.b64encode(json.dumps(principal).encode()).decode(), **extra}


USER = [(OID, ALICE), (TID, TENANT), ("preferred_username", "alice@contoso.com"),
        ("http://schemas.microsoft.com/identity/claims/scope", "user_impersonation")]


@pytest.mark.parametrize("role_claims", [
    [("roles", "Incident.Read"), ("roles", "Incident.Approve")],
    [(ROLE_URI, "Incident.Read"), (ROLE_URI, "Incident.Approve")],
    [("roles", '["Incident.Read", "Incident.Approve"]')],
], ids=["roles", "role-uri", "json-array"])
def test_both_role_claim_forms_are_read(role_claims):
    principal = principal_from_headers(headers(USER + role_claims), easy_auth=True, tenant_id=TENANT)
    assert principal.roles == {"Incident.Read", "Incident.Approve"}
    assert principal.object_id == ALICE and principal.name == "alice@contoso.com" and principal.kind == "user"
    require(principal, Role.APPROVE)


def test_an_application_is_named_by_its_app_id():
    principal = principal_from_headers(headers([(OID, ALICE), (TID, TENANT), ("azp", "1234"), ("roles", "Incident.Submit")]),
                                       easy_auth=True, tenant_id=TENANT)
    assert principal.kind == "app" and principal.name == "app:1234" and principal.has(Role.SUBMIT)


@pytest.mark.parametrize("hdrs, easy_auth, message", [
    (headers(USER + [("roles", "Incident.Read")]), False, "no App Service Authentication"),
    ({}, True, "no validated principal"),
    ({"x-ms-client-principal": "not base64 json!"}, True, "not Base64 JSON"),
    (headers([(TID, TENANT), ("roles", "Incident.Read")]), True, "no Entra object id"),
    (headers(USER, **{"x-ms-client-principal-id": "0dc668f6-43fa-5f46-a937-25829277128d"}), True, "does not match"),
    (headers([(OID, ALICE), (TID, "11111111-2222-3333-4444-555555555555")]), True, "another tenant"),
    (headers(USER, **{"x-ms-client-principal-idp": "github"}), True, "only Entra ID"),
], ids=["no-easy-auth", "no-header", "garbage", "no-oid", "id-mismatch", "other-tenant", "other-idp"])
def test_an_untrusted_or_incomplete_principal_is_401(hdrs, easy_auth, message):
    with pytest.raises(AuthError) as caught:
        principal_from_headers(hdrs, easy_auth=easy_auth, tenant_id=TENANT)
    assert caught.value.status == 401 and message in str(caught.value)


def test_a_valid_principal_without_the_role_is_403():
    principal = principal_from_headers(headers(USER + [("roles", "Incident.Read")]), easy_auth=True, tenant_id=TENANT)
    with pytest.raises(AuthError) as caught:
        require(principal, Role.APPROVE)
    assert caught.value.status == 403


@pytest.mark.parametrize("value, expected", [("True", True), ("true", True), ("1", True), ("False", False), ("", False)])
def test_easy_auth_is_known_to_be_in_front_only_from_website_auth_enabled(value, expected):
    assert easy_auth_in_front({"WEBSITE_AUTH_ENABLED": value}) is expected
    assert easy_auth_in_front({}) is False
