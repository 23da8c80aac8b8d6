"""Who is calling: the operator identity App Service Authentication ("Easy Auth") validated.

In Azure, Easy Auth with Entra ID fronts the function app: it validates the caller's bearer
token (signature, issuer, audience, lifetime) and hands the app the result in request headers
that "external requests aren't allowed to set" (learn.microsoft.com/azure/app-service/
configure-authentication-user-identities): ``X-MS-CLIENT-PRINCIPAL`` (Base64 JSON
``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}``) and
``X-MS-CLIENT-PRINCIPAL-ID`` / ``-NAME`` / ``-IDP``. Easy Auth does **not** check app roles
("this isn't performed by App Service authentication"): ``require`` does, here.

The app trusts those headers only where Easy Auth is really in front of it: the platform sets
``WEBSITE_AUTH_ENABLED=True`` in the worker's environment when App Service Authentication is
on (Microsoft.Identity.Web's AppServicesAuthenticationInformation reads the same variable),
and the local host sets it when it plays Easy Auth (localdev/host/easyauth.py). Without it,
every principal header is ignored and the caller is unauthenticated (401). The deployment
verifies the platform really strips forged headers and refuses anonymous calls
(infra/scripts/postprovision.py).

Pure: parsing and role checks, no I/O. The app roles (``Incident.Submit`` / ``.Read`` /
``.Approve``) are declared on the responder's app registration (infra/modules/auth.bicep).
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from .validation import clean_text, is_guid

__all__ = [
    "AuthError",
    "Principal",
    "Role",
    "easy_auth_in_front",
    "principal_from_headers",
    "require",
]


class Role(StrEnum):
    """The responder's app roles (the ``roles`` claim values)."""

    SUBMIT = "Incident.Submit"  # Sentinel, Logic Apps, scripts: typically a managed identity
    READ = "Incident.Read"  # incident details hold personal data (forwarding addresses, rule names)
    APPROVE = "Incident.Approve"  # approve or reject held incidents, reset the storm breaker


PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
PRINCIPAL_NAME_HEADER = "x-ms-client-principal-name"
PRINCIPAL_IDP_HEADER = "x-ms-client-principal-idp"
MAX_PRINCIPAL_BYTES = 16 * 1024

# Claim types as App Service maps them (default claims mapping) and as the token names them.
OID_TYPES = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
TID_TYPES = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")
ROLE_TYPE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
SCOPE_TYPES = ("http://schemas.microsoft.com/identity/claims/scope", "scp")
NAME_TYPES = ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "upn", "preferred_username",
              "unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
APP_ID_TYPES = ("azp", "appid")


class AuthError(Exception):
    """401 (no or untrusted identity) or 403 (identity without the role, or not allowed). Safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """A validated caller: Entra object id, a display name (UPN, or ``app:<appId>`` for an
    application), app roles, tenant, and whether it is a user or an application."""

    object_id: str
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    tenant_id: str = ""
    kind: str = "user"  # "user" | "app"

    def has(self, role: Role) -> bool:
        return role.value in self.roles

    def record(self) -> dict[str, str]:
        """What is stored beside a submission, approval or rejection."""
        return {"object_id": self.object_id, "upn": self.name, "kind": self.kind}


def easy_auth_in_front(environ: Mapping[str, str]) -> bool:
    """True where App Service Authentication (or the local host playing it) fronts the app."""
    return str(environ.get("WEBSITE_AUTH_ENABLED", "")).strip().lower() in ("true", "1")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _decode(raw: str) -> dict[str, Any]:
    text = raw.strip()
    if len(text) > MAX_PRINCIPAL_BYTES:
        raise AuthError(401, "client principal too large")
    try:
        padded = text + "=" * (-len(text) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        data = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError):
        raise AuthError(401, "client principal is not Base64 JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise AuthError(401, "client principal has no claims")
    return data


def _claims(data: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for claim in data["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            out.append((claim["typ"], claim["val"]))
    return out


def _first(claims: list[tuple[str, str]], types: tuple[str, ...]) -> str:
    for wanted in types:
        for typ, val in claims:
            if typ == wanted and val.strip():
                return val.strip()
    return ""


def _roles(claims: list[tuple[str, str]], role_typ: str) -> frozenset[str]:
    """Both forms public samples show: ``{"typ": "roles"}`` and the principal's ``role_typ``
    (``.../claims/role``); one role per claim, or (tolerated) a JSON array in one claim."""
    types = {"roles", ROLE_TYPE_URI, role_typ} - {""}
    roles: set[str] = set()
    for typ, val in claims:
        if typ not in types:
            continue
        value = val.strip()
        if value.startswith("["):
            try:
                listed = json.loads(value)
            except ValueError:
                listed = []
            roles.update(r.strip() for r in listed if isinstance(r, str) and r.strip())
        elif value:
            roles.add(value)
    return frozenset(r[:120] for r in roles)


def principal_from_headers(headers: Mapping[str, str], *, easy_auth: bool, tenant_id: str = "") -> Principal:
    """The caller Easy Auth validated, or AuthError(401).

    ``easy_auth``: whether Easy Auth is in front (``easy_auth_in_front``); without it the headers
    prove nothing and are never read. ``tenant_id``: when set, the principal's ``tid`` must match.
    """
    if not easy_auth:
        raise AuthError(401, "sign-in required: no App Service Authentication in front of the app")
    raw = _header(headers, PRINCIPAL_HEADER)
    if not raw:
        raise AuthError(401, "sign-in required: no validated principal (send an Entra ID bearer token)")
    data = _decode(raw)
    claims = _claims(data)
    object_id = _first(claims, OID_TYPES).lower()
    if not is_guid(object_id):
        raise AuthError(401, "the principal carries no Entra object id (oid)")
    stated_id = (_header(headers, PRINCIPAL_ID_HEADER) or "").strip().lower()
    if stated_id and stated_id != object_id:
        raise AuthError(401, "X-MS-CLIENT-PRINCIPAL-ID does not match the principal")
    idp = (_header(headers, PRINCIPAL_IDP_HEADER) or str(data.get("auth_typ") or "aad")).strip().lower()
    if idp not in ("aad", "azureactivedirectory"):
        raise AuthError(401, "only Entra ID principals are accepted")
    tenant = _first(claims, TID_TYPES).lower()
    if tenant_id and tenant != tenant_id.strip().lower():
        raise AuthError(401, "the principal belongs to another tenant")
    name_typ = str(data.get("name_typ") or "")
    name = _first(claims, NAME_TYPES + ((name_typ,) if name_typ else ()))
    scope = _first(claims, SCOPE_TYPES)
    kind = "user" if (scope or name) else "app"
    if kind == "app":
        name = "app:" + (_first(claims, APP_ID_TYPES) or object_id)
    else:
        name = name or (_header(headers, PRINCIPAL_NAME_HEADER) or "")
    return Principal(object_id=object_id, name=clean_text(name, 256) or object_id,
                     roles=_roles(claims, str(data.get("role_typ") or "")), tenant_id=tenant, kind=kind)


def require(principal: Principal, role: Role) -> None:
    """AuthError(403) unless the principal holds ``role``."""
    if not principal.has(role):
        raise AuthError(403, f"the caller does not hold the app role {role.value}")
