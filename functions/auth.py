"""Who may call an HTTP route: the validated principal and its app role (shared/principal.py).

Every operator route starts with ``call = await operator_call(req, Role.X[, incident=True])`` and
returns it when it is a response (401: no or untrusted identity; 403: a valid identity without the
role; 400: a malformed incident id); else it is the ``OperatorCall`` (deps, caller, incident_id).
``authorize(req, settings, Role.X)`` is the check alone.
The routes are ``AuthLevel.ANONYMOUS`` at the Functions host: App Service Authentication (Easy
Auth) in front authenticates, a function key proves nothing about a person, and this check
authorizes. Routes added later (another stream's operator action) take the same one line.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.bootstrap import get_deps
from shared.deps import Deps
from shared.principal import AuthError, Principal, Role, easy_auth_in_front, principal_from_headers, require
from shared.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["OperatorCall", "authorize", "denied", "json_response", "operator_call", "valid_incident_id"]


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", **(headers or {})})


def denied(exc: AuthError) -> func.HttpResponse:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else {}
    return json_response(exc.status, {"error": str(exc)}, headers)


def authorize(req: func.HttpRequest, settings: Settings, role: Role) -> Principal | func.HttpResponse:
    """The caller, if it holds ``role``; else the 401/403 response to return."""
    try:
        principal = principal_from_headers(req.headers, easy_auth=easy_auth_in_front(os.environ),
                                           tenant_id=settings.tenant_id)
        require(principal, role)
    except AuthError as exc:
        logger.warning("[incident=- step=http corr=-] %s %s refused (%d): %s", req.method, _route(req), exc.status, exc)
        return denied(exc)
    return principal


def _route(req: func.HttpRequest) -> str:
    """The path without the query string (it may hold a key)."""
    return req.url.split("?", 1)[0][-200:]


def valid_incident_id(incident_id: str) -> bool:
    """``inc-`` and letters/digits, at most 64 characters (what intake mints)."""
    return incident_id.startswith("inc-") and incident_id[4:].isalnum() and len(incident_id) <= 64


@dataclass(frozen=True)
class OperatorCall:
    """What an operator route works with once the caller is known: the ports, the principal, the incident id."""

    deps: Deps
    caller: Principal
    incident_id: str = ""


async def operator_call(req: func.HttpRequest, role: Role, *, incident: bool = False) -> OperatorCall | func.HttpResponse:
    """The preamble of every operator route, once: the worker's ports, the caller holding ``role``, and
    (``incident=True``) a well-formed ``{incident_id}`` route parameter; else the 401/403/400 response."""
    deps = await get_deps()
    caller = authorize(req, deps.settings, role)
    if isinstance(caller, func.HttpResponse):
        return caller
    incident_id = req.route_params.get("incident_id", "") if incident else ""
    if incident and not valid_incident_id(incident_id):
        return json_response(400, {"error": "malformed incident id"})
    return OperatorCall(deps, caller, incident_id)
