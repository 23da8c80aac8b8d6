"""The operator console, served by the function app itself: server-rendered HTML behind the same
sign-in and app roles as the API (shared/console/ renders it; this module decodes requests, checks
the caller, calls shared/, and answers with security headers).

| route | who |
|---|---|
| ``GET /api/console[?state=held][&refresh=N]`` | Incident.Read: incidents (refreshing every N s), Secure Score and its regressions |
| ``GET /api/console/incidents/{id}`` | Incident.Read: one incident (timeline, changes, snapshot, approvals) |
| ``POST /api/console/incidents/{id}/approve`` / ``reject`` / ``undo`` | Incident.Approve, with the form's CSRF token |
| ``GET /api/console/static/{name}`` | anyone Easy Auth lets through: the CSS and JS (no data) |
| ``GET /api/console/signin`` | anyone (excluded from Easy Auth in infra): a link to ``/.auth/login/aad`` |

Browsers authenticate with a session cookie (App Service Authentication's ``/.auth/login/aad`` flow in
Azure; the local host plays it): forms carry a CSRF token (shared/console/csrf.py). Every page with
personal data is ``no-store``; the Content-Security-Policy allows this origin's own script, style and
images only, no inline script, no framing (``frame-ancestors 'none'``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import azure.functions as func

from shared import console as console_pkg
from shared.approval import MAX_REJECT_REASON, approve, reject
from shared.bootstrap import get_deps
from shared.console import csrf
from shared.console.links import CONSOLE_PATH
from shared.console.pages import REFRESH_SECONDS, STATES, error_page, incident_page, incidents_page, signin_page
from shared.principal import AuthError, Role, easy_auth_in_front, principal_from_headers, require
from shared.securescore.service import trend
from shared.settings import Settings
from shared.status import incident_view, list_views
from shared.undo import request_undo, undo_offer

from .auth import OperatorCall, valid_incident_id

logger = logging.getLogger(__name__)
bp = func.Blueprint()

MAX_FORM_BYTES = 16 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the forms' POSTs (Fetch
    # standard), which the CSRF guard must refuse; same-origin still sends no referrer to any other site.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STATIC_DIR = Path(console_pkg.__file__).resolve().parent / "static"
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}
# Read once: the only files this route can ever serve.
STATIC = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}
LOGIN_PATH = "/.auth/login/aad?post_login_redirect_uri=" + quote(CONSOLE_PATH, safe="")


def _secure(req: func.HttpRequest) -> bool:
    return req.url.lower().startswith("https://")


def _html(status: int, text: str, cookie: str | None = None, *, cache: str = "no-store") -> func.HttpResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    if cookie:
        headers["Set-Cookie"] = cookie
    return func.HttpResponse(text, status_code=status, mimetype="text/html", charset="utf-8", headers=headers)


def _redirect(location: str) -> func.HttpResponse:
    return func.HttpResponse("", status_code=303, headers={**SECURITY_HEADERS, "Cache-Control": "no-store",
                                                            "Location": location})


async def _page_call(req: func.HttpRequest, role: Role, *, incident: bool = False) -> OperatorCall | func.HttpResponse:
    """The console's preamble, once (functions/auth.py ``operator_call`` answering HTML): the ports, the
    signed-in principal holding ``role``, a well-formed ``{incident_id}``; else the page that says why not."""
    deps = await get_deps()
    try:
        principal = principal_from_headers(req.headers, easy_auth=easy_auth_in_front(os.environ),
                                           tenant_id=deps.settings.tenant_id)
        require(principal, role)
    except AuthError as exc:
        logger.warning("[incident=- step=console corr=-] %s %s refused (%d): %s", req.method,
                       req.url.split("?", 1)[0][-120:], exc.status, exc)
        if exc.status == 401:
            return _html(401, error_page(401, "Sign in first.", signin=True))
        return _html(403, error_page(403, f"You are signed in, but you do not hold the app role {role.value}."))
    incident_id = req.route_params.get("incident_id", "") if incident else ""
    if incident and not valid_incident_id(incident_id):
        return _html(400, error_page(400, "Malformed incident id."))
    return OperatorCall(deps, principal, incident_id)


def _token(req: func.HttpRequest) -> tuple[str, str | None]:
    """This browser's CSRF token, and the Set-Cookie to send when it had none yet."""
    secure = _secure(req)
    token = csrf.token_from_cookies(req.headers.get("cookie"), secure)
    if token:
        return token, None
    token = csrf.new_token()
    return token, csrf.set_cookie(token, secure)


def _form(req: func.HttpRequest) -> dict[str, list[str]] | None:
    body = req.get_body() or b""
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=50, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None


def _own_origins(req: func.HttpRequest, settings: Settings) -> set[str]:
    origins = {csrf.origin_of(req.url)}
    if settings.console_base_url:
        origins.add(csrf.origin_of(settings.console_base_url))
    host = os.environ.get("WEBSITE_HOSTNAME", "")
    if host:
        origins.add(f"https://{host.lower()}")
    return origins


# -- pages ----------------------------------------------------------------------------------------

@bp.function_name("console_list")
@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_list(req: func.HttpRequest) -> func.HttpResponse:
    call = await _page_call(req, Role.READ)
    if not isinstance(call, OperatorCall):
        return call
    deps, caller = call.deps, call.caller
    state = (req.params.get("state") or "").strip()
    if state and state not in STATES:
        return _html(400, error_page(400, "Unknown state filter."))
    raw_refresh = (req.params.get("refresh") or "").strip()
    refresh = int(raw_refresh) if raw_refresh.isdigit() and 2 <= int(raw_refresh) <= 300 else REFRESH_SECONDS
    views = await list_views(deps.ledger)
    if state:
        views = [v for v in views if v.get("state") == state]
    score: dict[str, Any] | None = None
    if deps.scores is not None:
        score = await trend(deps.scores, 90)
    _, cookie = _token(req)
    return _html(200, incidents_page(views, state=state, now=deps.clock(), who=caller.name, roles=caller.roles,
                                     score=score, refresh=refresh), cookie)


@bp.function_name("console_incident")
@bp.route(route="console/incidents/{incident_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_incident(req: func.HttpRequest) -> func.HttpResponse:
    call = await _page_call(req, Role.READ, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    deps, caller, incident_id = call.deps, call.caller, call.incident_id
    view = await incident_view(deps.ledger, incident_id)
    if view is None:
        return _html(404, error_page(404, "No such incident."))
    token, cookie = _token(req)
    can_approve = caller.has(Role.APPROVE)
    offer = undo_offer(view) if can_approve else None
    evidence = await deps.ledger.list_evidence(incident_id)
    page = incident_page(view, evidence=evidence, who=caller.name, oid=caller.object_id, roles=caller.roles,
                         can_approve=can_approve, csrf=token, message=(req.params.get("msg") or "")[:40], undo=offer)
    return _html(200, page, cookie)


# -- decisions (POST + CSRF token, then 303 back to the page) ------------------------------------------------

async def _decide(req: func.HttpRequest, action: str) -> func.HttpResponse:
    call = await _page_call(req, Role.APPROVE, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    deps, caller, incident_id = call.deps, call.caller, call.incident_id
    form = _form(req)
    if form is None:
        return _html(400, error_page(400, "The form could not be read."))
    secure = _secure(req)
    refused = csrf.refusal((form.get(csrf.FIELD) or [""])[0], csrf.token_from_cookies(req.headers.get("cookie"), secure),
                           req.headers, _own_origins(req, deps.settings))
    back = f"{CONSOLE_PATH}/incidents/{incident_id}"
    if refused:
        logger.warning("[incident=%s step=console corr=-] %s by %s refused: %s", incident_id, action, caller.object_id, refused)
        return _html(403, error_page(403, refused))
    if action == "approve":
        outcome = (await approve(deps, incident_id, caller)).outcome
    elif action == "reject":
        reason = (form.get("reason") or [""])[0].strip()
        if not reason or len(reason) > MAX_REJECT_REASON * 4:
            return _redirect(f"{back}?msg=reason-required")
        outcome = (await reject(deps, incident_id, caller, reason)).outcome
    else:
        result = await request_undo(deps, incident_id, caller, form.get("forwarding") or [])
        if result.outcome != "queued":
            return _html(409 if result.outcome != "forbidden" else 403, error_page(409, f"Undo refused: {result.reason}"))
        outcome = "undo-queued"
    logger.info("[incident=%s step=console corr=-] %s by %s: %s", incident_id, action, caller.object_id, outcome)
    return _redirect(f"{back}?msg={quote(outcome)}")


@bp.function_name("console_approve")
@bp.route(route="console/incidents/{incident_id}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_approve(req: func.HttpRequest) -> func.HttpResponse:
    return await _decide(req, "approve")


@bp.function_name("console_reject")
@bp.route(route="console/incidents/{incident_id}/reject", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_reject(req: func.HttpRequest) -> func.HttpResponse:
    return await _decide(req, "reject")


@bp.function_name("console_undo")
@bp.route(route="console/incidents/{incident_id}/undo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_undo(req: func.HttpRequest) -> func.HttpResponse:
    return await _decide(req, "undo")


# -- assets and the sign-in page (no data: reachable without a role) ---------------------------------------

@bp.function_name("console_static")
@bp.route(route="console/static/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_static(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    if name not in STATIC:
        return func.HttpResponse("Not Found", status_code=404, mimetype="text/plain", headers=SECURITY_HEADERS)
    return func.HttpResponse(STATIC[name], status_code=200, mimetype=STATIC_TYPES[name], charset="utf-8",
                             headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"})


@bp.function_name("console_signin")
@bp.route(route="console/signin", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_signin(req: func.HttpRequest) -> func.HttpResponse:
    return _html(200, signin_page(LOGIN_PATH), cache="no-cache")
