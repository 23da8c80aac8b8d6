"""Who may call an HTTP route: the validated principal and its app role (shared/principal.py).

Every operator route starts with ``caller = authorize(req, settings, Role.X)`` and returns the
response when it is one (401: no or untrusted identity; 403: a valid identity without the role).
The routes are ``AuthLevel.ANONYMOUS`` at the Functions host: App Service Authentication (Easy
Auth) in front authenticates, a function key proves nothing about a person, and this check
authorizes. Routes added later (another stream's operator action) take the same one line.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import azure.functions as func

from shared.principal import AuthError, Principal, Role, easy_auth_in_front, principal_from_headers, require
from shared.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["authorize", "json_response", "denied"]


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
