"""The local host's HTTP front end (aiohttp): HTTP triggers, admin API and health check.

* ``/{routePrefix}/{route}`` -> HTTP-triggered functions, with route parameters, method
  filtering (405) and keys: ``anonymous`` is open; ``function`` accepts the function or the
  master key, ``admin`` only the master key, from ``?code=`` or ``x-functions-key`` (401).
  Client-sent ``X-MS-CLIENT-PRINCIPAL*`` / ``X-MS-TOKEN-*`` headers never reach a function; with
  ``LOCALDEV_EASYAUTH_ISSUER`` set, App Service Authentication runs first (easyauth.py: no valid
  Entra bearer token → 401; a valid one → the principal headers).
* ``POST /admin/functions/{name}`` with ``{"input": "..."}`` and the master key runs a
  non-HTTP function now (202), like the real host's admin API; ``?wait=true`` (local only)
  waits and answers 200 ``{"id", "status": "Succeeded"}`` or 500 ``{"status": "Failed"}``.
* ``GET /admin/host/status`` (master key) and ``GET /`` (health, open).

Request bodies over ``LOCALDEV_HTTP_MAX_BODY_BYTES`` (default 1 MiB) get 413. Request logs
carry method, path (never the query string: it may hold a key), status and duration.
An unhandled function exception is a 500 with a generic body.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, Mapping, Optional, Protocol

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .easyauth import SESSION_COOKIE, SESSION_S, STRIPPED_PREFIXES, EasyAuth, EasyAuthConfig, TokenRefused, safe_redirect
from .functions import HTTP_TRIGGER, FunctionInfo, enum_value
from .invocation import FunctionTimeout, Invoker
from .routes import RouteError, RouteTemplate, compile_route, sort_routes
from .settings import HostConfig

logger = logging.getLogger(__name__)

__all__ = ["HttpFrontEnd", "DEFAULT_MAX_BODY_BYTES", "KEY_HEADER"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
KEY_HEADER = "x-functions-key"
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_CHARSET_TYPES = ("application/json", "application/xml", "application/javascript")


class HostControl(Protocol):
    """What the front end needs from the host (runtime.LocalHost provides it); the front end
    never imports the runtime, so the two modules do not depend on each other."""

    @property
    def functions(self) -> list[FunctionInfo]: ...
    @property
    def config(self) -> HostConfig: ...
    @property
    def function_errors(self) -> dict[str, str]: ...
    @property
    def function_key(self) -> str: ...
    @property
    def master_key(self) -> str: ...
    @property
    def environ(self) -> Mapping[str, str]: ...
    @property
    def invoker(self) -> Optional[Invoker]: ...

    def get_function(self, name: str) -> Optional[FunctionInfo]: ...
    def invoke_admin(self, info: FunctionInfo, text: str) -> "asyncio.Task[Any]": ...
    def status(self) -> dict[str, Any]: ...


class _HttpRoute:
    def __init__(self, info: FunctionInfo, template: RouteTemplate, methods: Optional[set], auth_level: str):
        self.info = info
        self.template = template
        self.methods = methods  # None = any method
        self.auth_level = auth_level


class HttpFrontEnd:
    """Builds the aiohttp application for a host (see HostControl; the real one is
    :class:`~localdev.host.runtime.LocalHost`)."""

    def __init__(self, host: HostControl, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.host = host
        self.max_body_bytes = max_body_bytes
        config = EasyAuthConfig.from_env(host.environ)
        self.easy_auth: Optional[EasyAuth] = EasyAuth(config) if config else None
        self.routes: list = []
        for info in host.functions:
            if info.trigger_type != HTTP_TRIGGER:
                continue
            route = info.attr("route") or info.name
            prefix = host.config.route_prefix
            full = f"{prefix}/{route.strip('/')}" if prefix else route.strip("/")
            try:
                template = compile_route(full)
            except RouteError as exc:
                host.function_errors[info.name] = str(exc)
                logger.error("Function '%s' disabled: %s", info.name, exc)
                continue
            methods = info.attr("methods")
            method_set = {str(enum_value(m)).upper() for m in methods} if methods else None
            if method_set and "GET" in method_set:
                method_set.add("HEAD")
            auth_level = str(info.attr("auth_level", "function")).lower()
            self.routes.append(_HttpRoute(info, template, method_set, auth_level))
        self.routes = sort_routes(self.routes, key=lambda r: r.template)

    # -- application ---------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._log_middleware])
        app.router.add_get("/admin/host/status", self._host_status)
        app.router.add_post("/admin/functions/{name}", self._admin_invoke)
        if self.easy_auth is not None:
            app.router.add_get("/.auth/login/dev", self._login_dev)
            app.router.add_get("/.auth/login/aad", self._login_aad)
            app.router.add_get("/.auth/logout", self._logout)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def route_table(self) -> list:
        return [
            {"function": r.info.name, "route": "/" + r.template.template.strip("/"),
             "methods": sorted(r.methods) if r.methods else None, "auth_level": r.auth_level}
            for r in self.routes
        ]

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler):
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            logger.info("HTTP %s %s -> %d (%dms)", request.method, request.path, status,
                        (time.monotonic() - started) * 1000)

    # -- browser sign-in (local Easy Auth) -------------------------------------------------
    async def _login_dev(self, request: web.Request) -> web.StreamResponse:
        assert self.easy_auth is not None
        try:
            claims = await self.easy_auth.login(request.query.get("token"))
        except TokenRefused as exc:
            logger.info("HTTP GET /.auth/login/dev: sign-in refused: %s", exc)
            return self._text(401, f"401 Unauthorized: {exc}")
        session = self.easy_auth.sessions.start(claims)
        response = web.HTTPFound(safe_redirect(request.query.get("post_login_redirect_uri")))
        response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True, samesite="Lax", max_age=SESSION_S)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        logger.info("HTTP GET /.auth/login/dev: session started for %s", claims.get("oid"))
        return response

    async def _login_aad(self, request: web.Request) -> web.StreamResponse:
        return self._text(200, "Local stack: there is no Entra ID sign-in page here. Sign in with the URL that "
                               "`responder console-url --as UPN --role Incident.Read` prints.")

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        assert self.easy_auth is not None
        self.easy_auth.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPFound(safe_redirect(request.query.get("post_logout_redirect_uri"), "/api/console/signin"))
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def _supplied_key(request: web.Request) -> str:
        return request.headers.get(KEY_HEADER) or request.query.get("code") or ""

    def _authorized(self, request: web.Request, level: str) -> bool:
        if level == "anonymous":
            return True
        supplied = self._supplied_key(request)
        if not supplied:
            return False
        keys = [self.host.master_key] if level == "admin" else [self.host.function_key, self.host.master_key]
        return any(hmac.compare_digest(supplied.encode(), key.encode()) for key in keys if key)

    @staticmethod
    def _text(status: int, text: str) -> web.Response:
        return web.Response(status=status, text=text, content_type="text/plain")

    # -- HTTP triggers -------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.strip("/")
        method_mismatch = False
        for route in self.routes:
            params = route.template.match(path)
            if params is None:
                continue
            if route.methods is not None and request.method.upper() not in route.methods:
                method_mismatch = True
                continue
            return await self._run_http(request, route, params)
        if method_mismatch:
            return self._text(405, "Method Not Allowed")
        if path == "" and request.method in ("GET", "HEAD"):
            return self._text(200, "Local Functions host is running")
        return self._text(404, "Not Found")

    async def _run_http(self, request: web.Request, route: _HttpRoute, params: dict) -> web.StreamResponse:
        info = route.info
        if info.is_disabled(self.host.environ) or info.name in self.host.function_errors:
            return self._text(404, "Not Found")
        principal: dict = {}
        if self.easy_auth is not None and not self.easy_auth.excluded(request.path):
            try:
                session = None if request.headers.get("Authorization") else \
                    self.easy_auth.sessions.claims(request.cookies.get(SESSION_COOKIE))
                principal = self.easy_auth.principal_headers(
                    session if session is not None else await self.easy_auth.validate(request.headers.get("Authorization")))
            except TokenRefused as exc:
                logger.info("HTTP %s %s: Easy Auth refused the request: %s", request.method, request.path, exc)
                return web.Response(status=401, text="401 Unauthorized: " + str(exc), content_type="text/plain",
                                    headers={"WWW-Authenticate": 'Bearer realm="local Easy Auth"'})
        if not self._authorized(request, route.auth_level):
            return self._text(401, "Unauthorized")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._text(413, "Request Entity Too Large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._text(413, "Request Entity Too Large")
        headers: dict = {}
        for key, value in request.headers.items():
            if key.lower().startswith(STRIPPED_PREFIXES):
                continue  # only the platform sets these
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        headers.update(principal)
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query),
            route_params=params,
            body=body,
        )
        invoker = self.host.invoker
        if invoker is None:  # not started yet, or stopping
            return self._text(503, "Service Unavailable")
        try:
            result = await invoker.invoke(info, req, reason=f"HTTP {request.method} request")
        except (Exception, FunctionTimeout):
            return self._text(500, "Internal Server Error")
        return self._to_response(info, result)

    @staticmethod
    def _to_response(info: FunctionInfo, result: Any) -> web.StreamResponse:
        if isinstance(result, func.HttpResponse):
            headers: CIMultiDict[str] = CIMultiDict()
            for key, value in result.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    headers.add(key, value)
            if "content-type" not in headers:
                mimetype = result.mimetype or "text/plain"
                if result.charset and (mimetype.startswith("text/") or mimetype in _CHARSET_TYPES):
                    headers["Content-Type"] = f"{mimetype}; charset={result.charset}"
                else:
                    headers["Content-Type"] = mimetype
            return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
        if result is None:
            return web.Response(status=204)
        if isinstance(result, str):
            return web.Response(status=200, text=result, content_type="text/plain")
        if isinstance(result, (bytes, bytearray)):
            return web.Response(status=200, body=bytes(result), content_type="application/octet-stream")
        logger.error("Function '%s' returned %s; an HTTP function must return func.HttpResponse",
                     info.name, type(result).__name__)
        return web.Response(status=500, text="Internal Server Error", content_type="text/plain")

    # -- admin API -----------------------------------------------------------------------
    async def _host_status(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "admin"):
            return self._text(401, "Unauthorized")
        return web.json_response(self.host.status())

    async def _admin_invoke(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "admin"):
            return self._text(401, "Unauthorized")
        name = request.match_info["name"]
        info = self.host.get_function(name)
        if info is None:
            return self._text(404, "Not Found")
        if info.trigger_type == HTTP_TRIGGER:
            return self._text(400, "HTTP-triggered functions are invoked through their route")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._text(413, "Request Entity Too Large")
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return self._text(400, "Body must be JSON like {\"input\": \"...\"}")
        if not isinstance(payload, dict):
            return self._text(400, "Body must be JSON like {\"input\": \"...\"}")
        value = payload.get("input", "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            value = json.dumps(value)
        try:
            task = self.host.invoke_admin(info, value)
        except ValueError as exc:
            return self._text(400, str(exc))
        wait = request.query.get("wait", "").lower() in ("1", "true", "yes")
        invocation_id = task.get_name()
        if not wait:
            return web.Response(status=202, headers={"x-invocation-id": invocation_id})
        ok = await task
        return web.json_response({"id": invocation_id, "status": "Succeeded" if ok else "Failed"},
                                 status=200 if ok else 500)
