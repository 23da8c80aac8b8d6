"""The simulator as the tenant's Entra ID token issuer for operators (dev principals).

The responder's operator routes sit behind App Service Authentication, which validates Entra ID
access tokens for the responder's app registration. Locally the local host plays Easy Auth
(localdev/host/easyauth.py) and validates tokens this module issues, the way Entra's v2.0
endpoint publishes them:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: ``issuer`` =
  ``{base}/{tenant}/v2.0`` and ``jwks_uri`` = ``{base}/{tenant}/discovery/v2.0/keys`` (the
  same paths as ``https://login.microsoftonline.com/{tenant}/v2.0/...``);
- ``GET /{tenant}/discovery/v2.0/keys``: the signing key (RSA 2048, RS256, ``kid``), as JWKS;
- ``POST /_sim/operator-token`` (control API, loopback only): a signed v2.0 access token for a
  dev principal: ``{"upn": "...", "roles": [...]}`` for a user (``oid`` = the seeded user's id,
  else a stable id derived from the UPN), ``{"app": "name", "roles": [...]}`` for an application
  (a managed identity of a Logic App, say). ``audience``, ``lifetime_s`` (negative: already
  expired), ``not_before_s`` and ``tenant`` may be overridden, to test what a validator refuses.

Claims follow the v2.0 access token reference (learn.microsoft.com/entra/identity-platform/
access-token-claims-reference): ``aud`` (the API's client id), ``iss``, ``iat``/``nbf``/``exp``,
``tid``, ``oid``, ``sub``, ``ver`` "2.0", ``azp``, ``roles``; user tokens also ``scp``,
``preferred_username`` and ``name``; app tokens have no ``scp``. The private key never leaves
the process; tokens are not stored (only counted).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from .core import CORE_KEY
from .signing import DEFAULT_LIFETIME_S, MAX_LIFETIME_S, OperatorIssuer, issuer_url

logger = logging.getLogger(__name__)

__all__ = ["add_routes"]

def _base(request: web.Request) -> str:
    return f"http://{request.host}"


def _issuer(request: web.Request) -> OperatorIssuer:
    return request.app[CORE_KEY].operator_issuer


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


async def openid_configuration(request: web.Request) -> web.Response:
    issuer = _issuer(request)
    tenant = request.match_info["tenant"]
    if tenant.lower() != issuer.tenant_id:
        return _json({"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}, 400)
    base = _base(request)
    return _json({
        "issuer": issuer_url(base, issuer.tenant_id),
        "jwks_uri": f"{base}/{issuer.tenant_id}/discovery/v2.0/keys",
        "token_endpoint": f"{base}/{issuer.tenant_id}/oauth2/v2.0/token",
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": "EU",
    })


async def signing_keys(request: web.Request) -> web.Response:
    issuer = _issuer(request)
    if request.match_info["tenant"].lower() != issuer.tenant_id:
        return _json({"error": "invalid_tenant"}, 400)
    return _json(issuer.jwks())


async def operator_token(request: web.Request) -> web.Response:
    """POST /_sim/operator-token: a signed access token for a dev principal (see the module doc)."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _json({"error": "invalid JSON"}, 400)
    if not isinstance(body, dict):
        return _json({"error": "body must be a JSON object"}, 400)
    upn, app = body.get("upn"), body.get("app")
    name = upn or app
    if bool(upn) == bool(app) or not isinstance(name, str) or len(name) > 256:
        return _json({"error": "name exactly one of upn (a user) or app (an application)"}, 400)
    roles = body.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) and 0 < len(r) <= 120 for r in roles):
        return _json({"error": "roles must be a list of strings"}, 400)
    try:
        lifetime = int(body.get("lifetime_s", DEFAULT_LIFETIME_S))
        not_before = int(body.get("not_before_s", 0))
    except (TypeError, ValueError):
        return _json({"error": "lifetime_s and not_before_s must be integers"}, 400)
    if lifetime > MAX_LIFETIME_S:
        return _json({"error": f"lifetime_s is at most {MAX_LIFETIME_S}"}, 400)
    issuer = _issuer(request)
    core = request.app[CORE_KEY]
    seeded = {str(u.props.get("userPrincipalName", "")).lower(): str(u.props.get("id", ""))
              for u in core.state.users.values()}
    object_id = str(body.get("object_id") or issuer.object_id(seeded, upn.lower() if upn else None, app))
    token, expires = issuer.token(_base(request), object_id=object_id, upn=upn.lower() if upn else None, app=app,
                                  roles=list(dict.fromkeys(roles)), audience=body.get("audience"), lifetime_s=lifetime,
                                  not_before_s=not_before, tenant=body.get("tenant"))
    logger.info("operator token issued for %s (%d role(s))", object_id, len(roles))
    return _json({"access_token": token, "token_type": "Bearer", "expires_on": expires, "object_id": object_id,
                  "upn": upn.lower() if upn else f"app:{app}", "audience": body.get("audience") or issuer.api_client_id,
                  "issuer": issuer_url(_base(request), body.get("tenant") or issuer.tenant_id)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    router.add_get("/{tenant}/discovery/v2.0/keys", signing_keys)
    router.add_post("/_sim/operator-token", operator_token)
