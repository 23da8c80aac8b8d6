"""aiohttp application of the local M365 tenant simulator (loopback only).

One port serves:
  /v1.0/... and /beta/...                      Microsoft Graph (audience https://graph.microsoft.com)
  POST /adminapi/beta/{tenant}/InvokeCommand   Exchange Online admin API (audience https://outlook.office365.com)
  GET /msi/token                               App Service managed-identity endpoint (azure-identity / MSAL)
  /_sim/...                                    control API (no auth; loopback only)

Every Graph/EXO/token request (each $batch item separately) goes into a bounded request log with
secrets redacted; the Authorization header is never stored.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import secrets
import time
import uuid
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from . import exo
from .faults import Decision, FaultConfigError, FaultInjector
from .graph import ROUTER, GraphRequest, GraphResponse
from .odata import GRAPH_JSON, GraphError, iso, throttle_body, utcnow
from .state import SeedError, TenantState, load_seed

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
GRAPH_AUDIENCE = "https://graph.microsoft.com"
EXO_AUDIENCE = "https://outlook.office365.com"
AUDIENCES = frozenset({GRAPH_AUDIENCE, EXO_AUDIENCE})
REQUEST_LOG_MAX = 200_000
TOKEN_STORE_MAX = 100_000
MAX_BATCH = 20
REDACTED = "<redacted>"
SECRET_KEYS = frozenset({"password", "temporaryaccesspass", "secret", "secretkey", "client_secret", "access_token",
                         "refresh_token", "authorization", "newpassword", "currentpassword"})
LOGGED_HEADERS = ("client-request-id", "X-AnchorMailbox", "Prefer", "ConsistencyLevel", "X-ResponseFormat")
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                    'client_id="00000003-0000-0000-c000-000000000000"')
EXO_JSON = GRAPH_JSON


class LoopbackError(ValueError):
    """Refused to bind to a non-loopback address."""


def check_loopback(host: str) -> str:
    """Return the address to bind for `host`; raise LoopbackError unless it is loopback."""
    if host not in LOOPBACK_HOSTS:
        raise LoopbackError(f"refusing to bind the tenant simulator to {host!r}: only 127.0.0.1, ::1 or localhost "
                            "are allowed (it accepts any credentials and must never be reachable from a network)")
    return "127.0.0.1" if host == "localhost" else host


def redact(value: Any) -> Any:
    """Deep copy of a JSON value with secret-looking keys replaced by '<redacted>'."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and k.lower() in SECRET_KEYS and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def normalize_audience(resource: str) -> str:
    """'https://graph.microsoft.com/.default' -> 'https://graph.microsoft.com'."""
    res = resource.strip()
    if res.endswith("/.default"):
        res = res[: -len("/.default")]
    return res.rstrip("/")


# ---------------------------------------------------------------------- request log

class RequestLog:
    """Bounded in-memory log of simulated requests."""

    def __init__(self, maxlen: int = REQUEST_LOG_MAX) -> None:
        self.entries: collections.deque = collections.deque(maxlen=maxlen)
        self.seq = 0

    def record(self, service: str, method: str, path: str, query: Mapping[str, str] | None, status: int, *,
               request_id: str, user: str | None = None, permission: str | None = None, latency_ms: float = 0.0,
               fault: str | None = None, body: Any = None, batch_id: str | None = None, item_id: str | None = None,
               cmdlet: str | None = None, headers: Mapping[str, str] | None = None) -> dict:
        """Append one entry (the body is redacted here)."""
        self.seq += 1
        entry = {
            "seq": self.seq, "time": iso(utcnow()), "service": service, "method": method, "path": path,
            "query": dict(query) if query else {}, "status": status, "user": user, "permission": permission,
            "latency_ms": round(latency_ms, 3), "fault": fault, "batch_id": batch_id, "item_id": item_id,
            "request_id": request_id, "cmdlet": cmdlet,
            "body": redact(body) if body is not None else None,
        }
        if headers:
            entry["headers"] = dict(headers)
        self.entries.append(entry)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s%s -> %s%s", service, method, path, f" [{cmdlet}]" if cmdlet else "", status,
                         f" fault={fault}" if fault else "")
        return entry

    def query(self, service: str | None = None, method: str | None = None, path_contains: str | None = None,
              since: int | None = None, status: int | None = None, cmdlet: str | None = None,
              batch_id: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]:
        """Filtered entries, oldest first (`limit` keeps the newest N)."""
        out = []
        pc = path_contains.lower() if path_contains else None
        for e in self.entries:
            if since is not None and e["seq"] <= since:
                continue
            if service and e["service"] != service:
                continue
            if method and e["method"] != method.upper():
                continue
            if pc and pc not in e["path"].lower():
                continue
            if status is not None and e["status"] != status:
                continue
            if cmdlet and (e["cmdlet"] or "").lower() != cmdlet.lower():
                continue
            if batch_id and e["batch_id"] != batch_id:
                continue
            if user and (e["user"] or "").lower() != user.lower():
                continue
            out.append(e)
        if limit is not None:
            out = out[-limit:] if limit > 0 else []
        return out

    def clear(self) -> None:
        self.entries.clear()


# ---------------------------------------------------------------------- tokens

class TokenStore:
    """Opaque bearer tokens issued by /msi/token, bound to an audience."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, int]] = {}
        self.issued = 0
        # SHA-256 of every token issued (never the tokens): lets a secret scan prove that no
        # token reached a log, table or queue without the simulator handing tokens out.
        self.issued_sha256: list[str] = []

    def issue(self, audience: str, lifetime_s: int) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        expires_on = int(time.time()) + lifetime_s
        if len(self.tokens) >= TOKEN_STORE_MAX:
            self.tokens.pop(next(iter(self.tokens)))
        self.tokens[token] = (audience, expires_on)
        self.issued += 1
        if len(self.issued_sha256) < TOKEN_STORE_MAX:
            self.issued_sha256.append(hashlib.sha256(token.encode()).hexdigest())
        return token, expires_on

    def check(self, authorization: str | None, audience: str) -> GraphError | None:
        """None when `authorization` carries a valid token for `audience`, else the 401 to answer."""
        def fail(message: str) -> GraphError:
            return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": WWW_AUTHENTICATE})
        if not authorization:
            return fail("Access token is empty.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return fail("Access token is empty.")
        rec = self.tokens.get(token)
        if rec is None:
            return fail("IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in JWS or "
                        "JWE Compact Serialization Format.")
        aud, expires_on = rec
        if expires_on <= time.time():
            return fail("Lifetime validation failed, the token is expired.")
        if aud != audience:
            return fail("Access token validation failure. Invalid audience.")
        return None

    def clear(self) -> None:
        self.tokens.clear()


# ---------------------------------------------------------------------- core

class SimulatorCore:
    """State + faults + request log + tokens of one simulator instance."""

    def __init__(self, seed: Mapping[str, Any] | None = None, seed_path: str | None = None,
                 faults: Mapping[str, Any] | None = None, identity_header: str | None = None) -> None:
        self.seed_path = seed_path
        self.seed = dict(seed) if seed is not None else load_seed(seed_path)
        self.state = TenantState(self.seed)
        self.faults = FaultInjector(faults)
        self.log = RequestLog()
        self.tokens = TokenStore()
        self.identity_header = identity_header or secrets.token_urlsafe(24)
        self.started = time.time()

    def reset(self, seed: Mapping[str, Any] | None = None) -> None:
        """Rebuild the tenant from `seed`, else from the seed file (re-read) or the initial seed."""
        if seed is None:
            seed = load_seed(self.seed_path) if self.seed_path else self.seed
        self.state = TenantState(seed)
        logger.info("Tenant state reset (%d users)", len(self.state.users))

    def granted(self) -> frozenset:
        return frozenset(self.state.granted - self.state.denied)


CORE_KEY = web.AppKey("core", SimulatorCore)


# ---------------------------------------------------------------------- fault bodies

_FAULT_CODES = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Authorization_RequestDenied",
                404: "Request_ResourceNotFound", 409: "Conflict", 423: "Locked", 500: "InternalServerError",
                502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_FAULT_MESSAGES = {500: "An internal server error occurred. Please retry later.",
                   502: "The server received an invalid response from an upstream server.",
                   503: "Service is temporarily unavailable. Please retry later.",
                   504: "The gateway did not receive a response in time."}


def graph_fault(decision: Decision, rq: GraphRequest) -> GraphResponse:
    """The Graph answer for an injected fault (status 0 = drop the connection)."""
    headers = {}
    if decision.retry_after:
        headers["Retry-After"] = decision.retry_after
    if decision.status == 0:
        return GraphResponse(0, None, headers)
    if decision.status == 429:
        return GraphResponse(429, throttle_body(rq.request_id), headers)
    code = _FAULT_CODES.get(decision.status, "Error")
    message = decision.message or _FAULT_MESSAGES.get(decision.status, "Injected fault.")
    return GraphResponse(decision.status, GraphError(decision.status, code, message).body(
        rq.request_id, rq.client_request_id), headers)


def exo_fault(decision: Decision, request_id: str) -> tuple[int, Any, dict]:
    """The EXO answer for an injected fault."""
    headers = {"Retry-After": decision.retry_after} if decision.retry_after else {}
    if decision.status == 429:
        body = {"error": {"code": "TooManyRequests", "message": decision.message or
                          "The request was throttled. Please retry after the time in the Retry-After header."}}
    else:
        body = {"error": {"code": _FAULT_CODES.get(decision.status, "Error"),
                          "message": decision.message or _FAULT_MESSAGES.get(decision.status, "Injected fault.")}}
    return decision.status, body, headers


def token_fault(decision: Decision) -> tuple[int, Any, dict]:
    """The MSI endpoint's answer for an injected fault."""
    headers = {"Retry-After": decision.retry_after} if decision.retry_after else {}
    message = decision.message or ("Too many requests." if decision.status == 429 else
                                   _FAULT_MESSAGES.get(decision.status, "Injected fault."))
    return decision.status, {"statusCode": decision.status, "message": message,
                             "correlationId": str(uuid.uuid4())}, headers


# ---------------------------------------------------------------------- Graph

async def dispatch_graph(core: SimulatorCore, rq: GraphRequest, *, batch_id: str | None = None,
                         item_id: str | None = None, latency_ms: float = 0.0) -> GraphResponse:
    """Route, inject faults, check permissions, run the handler and log one logical Graph request."""
    fault = None
    try:
        route, params = ROUTER.match(rq.method, rq.version, rq.segments)
        rq.params = params
        decision = core.faults.take_once("graph", rq.method, rq.path) or core.faults.decide("graph")
        if decision is not None and not decision.after_effect:
            fault = decision.describe()
            if decision.hang_s:
                await asyncio.sleep(decision.hang_s)
            resp = graph_fault(decision, rq)
        else:
            resp = route.handler(core.state, rq)
            if decision is not None:
                fault = decision.describe()
                resp = graph_fault(decision, rq)
    except GraphError as err:
        if err.permission:
            rq.permission = err.permission
        resp = GraphResponse(err.status, err.body(rq.request_id, rq.client_request_id), err.headers)
    except Exception:  # never leak a stack trace to the client
        logger.exception("Simulator error handling %s %s", rq.method, rq.path)
        resp = GraphResponse(500, GraphError(500, "InternalServerError", "Simulator internal error.").body(
            rq.request_id, rq.client_request_id))
    core.log.record("graph", rq.method, rq.path, rq.query, resp.status, request_id=rq.request_id, user=rq.user_id,
                    permission=rq.permission, latency_ms=latency_ms, fault=fault,
                    body=rq.body if rq.method in ("POST", "PATCH", "PUT") else None,
                    batch_id=batch_id, item_id=item_id)
    return resp


def split_item_url(url: str) -> tuple[list[str], dict[str, str]]:
    """Segments and query of a $batch item url ('/users/x?$select=id', 'users/x', or absolute)."""
    if url.lower().startswith(("http://", "https://")):
        parts = urlsplit(url)
        path, query = parts.path, parts.query
    else:
        path, _, query = url.partition("?")
    segs = [unquote(s) for s in path.split("/") if s]
    if segs and segs[0] in ("v1.0", "beta"):
        segs = segs[1:]
    return segs, dict(parse_qsl(query, keep_blank_values=True))


def _batch_item_error(iid: str, status: int, code: str, message: str, rq: GraphRequest) -> dict:
    return {"id": iid, "status": status, "headers": {"Content-Type": GRAPH_JSON},
            "body": GraphError(status, code, message).body(str(uuid.uuid4()), rq.client_request_id)}


async def graph_batch(core: SimulatorCore, rq: GraphRequest) -> GraphResponse:
    """POST /$batch: up to 20 items, each dispatched (and logged) like a separate request."""
    body = rq.body
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    items = body["requests"]
    if not items:
        raise GraphError(400, "BadRequest", "Invalid batch payload format: no requests.")
    if len(items) > MAX_BATCH:
        raise GraphError(400, "BadRequest", f"The batch request contains {len(items)} requests; the limit is "
                         f"{MAX_BATCH}.")
    seen = set()
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("id"), (str, int)) and
                isinstance(item.get("method"), str) and isinstance(item.get("url"), str)):
            raise GraphError(400, "BadRequest", "Invalid batch payload format: every request needs id, method "
                             "and url.")
        iid = str(item["id"]).lower()
        if iid in seen:
            raise GraphError(400, "BadRequest", f"Batch request ids must be unique: '{item['id']}'.")
        seen.add(iid)
        headers = item.get("headers") or {}
        if item.get("body") is not None and not any(str(k).lower() == "content-type" for k in headers):
            raise GraphError(400, "BadRequest", f"Write request id : {item['id']} does not contain Content-Type "
                             "header or body.")
    responses = []
    status_by_id: dict[str, int] = {}
    for item in items:
        iid = str(item["id"])
        deps = item.get("dependsOn") or []
        if any(status_by_id.get(str(d).lower(), 424) >= 400 for d in deps):
            entry = _batch_item_error(iid, 424, "FailedDependency", "A request this request depends on failed.", rq)
        else:
            segs, query = split_item_url(item["url"])
            if segs and segs[0].lower() == "$batch":
                entry = _batch_item_error(iid, 400, "BadRequest", "Nested batch requests are not supported.", rq)
            else:
                headers = item.get("headers") or {}
                crid = next((str(v) for k, v in headers.items() if str(k).lower() == "client-request-id"),
                            rq.client_request_id)
                sub = GraphRequest(method=item["method"].upper(), version=rq.version, segments=segs, query=query,
                                   body=item.get("body"), base_url=rq.base_url, request_id=str(uuid.uuid4()),
                                   client_request_id=crid, granted=rq.granted)
                resp = await dispatch_graph(core, sub, batch_id=rq.request_id, item_id=iid)
                status = 504 if resp.status == 0 else resp.status
                out_headers = {"Cache-Control": "no-cache", "x-ms-resource-unit": "1"}
                if resp.body is not None:
                    out_headers["OData-Version"] = "4.0"
                    out_headers["Content-Type"] = GRAPH_JSON
                out_headers.update(resp.headers)
                entry = {"id": iid, "status": status, "headers": out_headers}
                if resp.body is not None:
                    entry["body"] = resp.body
        status_by_id[iid.lower()] = entry["status"]
        responses.append(entry)
    return GraphResponse(200, {"responses": responses})


def _json_response(status: int, body: Any, headers: Mapping[str, str], content_type: str = GRAPH_JSON
                   ) -> web.Response:
    hdrs = dict(headers)
    if body is None:
        return web.Response(status=status, headers=hdrs)
    hdrs["Content-Type"] = content_type
    return web.Response(status=status, body=json.dumps(body).encode(), headers=hdrs)


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=504)


async def _read_json(request: web.Request) -> tuple[Any, bool]:
    """(parsed body or None, ok)."""
    if not request.body_exists:
        return None, True
    raw = await request.read()
    if not raw.strip():
        return None, True
    try:
        return json.loads(raw), True
    except (ValueError, UnicodeDecodeError):
        return None, False


async def graph_entry(request: web.Request) -> web.StreamResponse:
    """/v1.0/* and /beta/*."""
    core = request.app[CORE_KEY]
    latency = core.faults.latency("graph")
    if latency:
        await asyncio.sleep(latency)
    segs = [unquote(s) for s in request.rel_url.raw_path.split("/") if s]
    version, segs = segs[0], segs[1:]
    request_id = str(uuid.uuid4())
    crid = request.headers.get("client-request-id") or request_id
    query = {k: v for k, v in request.query.items()}
    rq = GraphRequest(method=request.method, version=version, segments=segs, query=query, body=None,
                      base_url=f"http://{request.host}", request_id=request_id, client_request_id=crid,
                      granted=core.granted())
    base_headers = {"request-id": request_id, "client-request-id": crid}
    err = core.tokens.check(request.headers.get("Authorization"), GRAPH_AUDIENCE)
    if err is not None:
        core.log.record("graph", rq.method, rq.path, query, 401, request_id=request_id, latency_ms=latency * 1000,
                        fault=None)
        return _json_response(401, err.body(request_id, crid), {**base_headers, **err.headers})
    body, ok = await _read_json(request)
    if not ok:
        err = GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header "
                         "is set and payload is of valid JSON format.")
        core.log.record("graph", rq.method, rq.path, query, 400, request_id=request_id, latency_ms=latency * 1000)
        return _json_response(400, err.body(request_id, crid), base_headers)
    rq.body = body
    if len(segs) == 1 and segs[0].lower() == "$batch":
        if request.method != "POST":
            err = GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
            return _json_response(405, err.body(request_id, crid), base_headers)
        fault = None
        decision = core.faults.take_once("graph", "POST", rq.path)
        if decision is not None and not decision.after_effect:
            fault = decision.describe()
            if decision.hang_s:
                await asyncio.sleep(decision.hang_s)
            resp = graph_fault(decision, rq)
        else:
            try:
                resp = await graph_batch(core, rq)
            except GraphError as exc:
                resp = GraphResponse(exc.status, exc.body(request_id, crid))
            if decision is not None:
                fault = decision.describe()
                resp = graph_fault(decision, rq)
        n_items = len(body["requests"]) if isinstance(body, dict) and isinstance(body.get("requests"), list) else 0
        core.log.record("graph", "POST", rq.path, query, resp.status, request_id=request_id,
                        latency_ms=latency * 1000, fault=fault, batch_id=request_id,
                        body={"requests": n_items})
    else:
        resp = await dispatch_graph(core, rq, latency_ms=latency * 1000)
    if resp.status == 0:
        return _drop(request)
    return _json_response(resp.status, resp.body, {**base_headers, **resp.headers})


async def graph_unknown(request: web.Request) -> web.Response:
    """Anything outside the served prefixes: Graph-shaped 404, never a stack trace."""
    request_id = str(uuid.uuid4())
    err = GraphError(404, "NotFound", f"The requested path '{request.rel_url.path}' is not served by the simulator.")
    return _json_response(404, err.body(request_id, request.headers.get("client-request-id")),
                          {"request-id": request_id})


# ---------------------------------------------------------------------- Exchange

async def exo_entry(request: web.Request) -> web.StreamResponse:
    """POST /adminapi/beta/{tenant}/InvokeCommand."""
    core = request.app[CORE_KEY]
    latency = core.faults.latency("exo")
    if latency:
        await asyncio.sleep(latency)
    st = core.state
    tenant = request.match_info["tenant"]
    path = request.rel_url.path
    request_id = str(uuid.uuid4())
    crid = request.headers.get("client-request-id") or request_id
    base_headers = {"request-id": request_id, "client-request-id": crid}
    logged_headers = {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers}
    err = core.tokens.check(request.headers.get("Authorization"), EXO_AUDIENCE)
    if err is None and tenant.lower() not in (st.tenant_id, st.domain.lower()):
        err = GraphError(401, "InvalidAuthenticationToken",
                         f"The tenant '{tenant}' in the request URL does not match the token's tenant.",
                         {"WWW-Authenticate": WWW_AUTHENTICATE})
    if err is not None:
        core.log.record("exo", "POST", path, {}, 401, request_id=request_id, latency_ms=latency * 1000,
                        headers=logged_headers)
        return _json_response(401, err.body(request_id, crid), {**base_headers, **err.headers})
    body, ok = await _read_json(request)
    ctx: dict[str, Any] = {}
    cmdlet = None
    fault = None
    permission = None
    status: int
    out_headers: dict[str, str] = {}
    try:
        if not ok:
            raise exo.ExoError(400, "BadRequest", "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                               "The request body is not valid JSON.")
        cmdlet, params = exo.parse_input(body)
        decision = core.faults.take_once("exo", "POST", f"{path}#{cmdlet}", cmdlet) or core.faults.decide("exo")
        if decision is not None and not decision.after_effect:
            fault = decision.describe()
            if decision.hang_s:
                await asyncio.sleep(decision.hang_s)
            if decision.status == 0:
                core.log.record("exo", "POST", path, {}, 0, request_id=request_id, latency_ms=latency * 1000,
                                fault=fault, body=body, cmdlet=cmdlet, headers=logged_headers)
                return _drop(request)
            status, payload, out_headers = exo_fault(decision, request_id)
        else:
            if "Exchange.ManageAsApp" in core.granted():
                permission = "Exchange.ManageAsApp"
                payload = exo.invoke(st, tenant, cmdlet, params, ctx)
                status = 200
            else:
                permission = "missing:Exchange.ManageAsApp"
                status = 403
                payload = GraphError(403, "Authorization_RequestDenied",
                                     "Insufficient privileges to complete the operation.").body(request_id, crid)
            if decision is not None:
                fault = decision.describe()
                status, payload, out_headers = exo_fault(decision, request_id)
    except exo.ExoError as exc:
        status, payload = exc.status, exc.body()
    except Exception:
        logger.exception("Simulator error handling InvokeCommand %s", cmdlet)
        status, payload = 500, {"error": {"code": "InternalServerError", "message": "Simulator internal error."}}
    core.log.record("exo", "POST", path, {}, status, request_id=request_id, user=ctx.get("user"),
                    permission=permission, latency_ms=latency * 1000, fault=fault, body=body, cmdlet=cmdlet,
                    headers=logged_headers)
    return _json_response(status, payload, {**base_headers, **out_headers}, EXO_JSON)


# ---------------------------------------------------------------------- managed identity

async def msi_token(request: web.Request) -> web.StreamResponse:
    """GET /msi/token?api-version=2019-08-01&resource=...  (App Service managed identity protocol)."""
    core = request.app[CORE_KEY]
    st = core.state
    latency = core.faults.latency("token")
    if latency:
        await asyncio.sleep(latency)
    q = request.query
    query = {k: v for k, v in q.items()}
    resource = q.get("resource", "")
    request_id = str(uuid.uuid4())
    fault = None
    headers: dict[str, str] = {}
    secret = request.headers.get("X-IDENTITY-HEADER")

    def error(status: int, message: str) -> tuple[int, dict]:
        return status, {"statusCode": status, "message": message, "correlationId": request_id}

    if secret is None:
        status, payload = error(400, "Missing X-IDENTITY-HEADER header.")
    elif not secrets.compare_digest(secret.encode(), core.identity_header.encode()):
        status, payload = error(401, "The X-IDENTITY-HEADER header is invalid.")
    else:
        decision = (core.faults.take_once("token", "GET", f"{request.rel_url.path}?resource={resource}")
                    or core.faults.decide("token"))
        if decision is not None and not decision.after_effect:
            fault = decision.describe()
            if decision.hang_s:
                await asyncio.sleep(decision.hang_s)
            if decision.status == 0:
                core.log.record("token", "GET", request.rel_url.path, query, 0, request_id=request_id,
                                latency_ms=latency * 1000, fault=fault)
                return _drop(request)
            status, payload, headers = token_fault(decision)
        else:
            audience = normalize_audience(resource)
            ids = {k: q[k].lower() for k in ("client_id", "object_id", "principal_id", "mi_res_id") if q.get(k)}
            if q.get("api-version") != "2019-08-01":
                status, payload = error(400, f"Unsupported api-version '{q.get('api-version')}'. Use 2019-08-01.")
            elif not resource:
                status, payload = error(400, "Required query variable 'resource' is missing.")
            elif audience not in AUDIENCES:
                status, payload = error(400, f"AADSTS500011: The resource principal named {resource} was not found "
                                        f"in the tenant named {st.tenant_name}.")
            elif (("client_id" in ids and ids["client_id"] != st.mi_client_id)
                  or ("object_id" in ids and ids["object_id"] != st.mi_object_id)
                  or ("principal_id" in ids and ids["principal_id"] != st.mi_object_id)
                  or ("mi_res_id" in ids and ids["mi_res_id"] != (st.mi_resource_id or "").lower())):
                status, payload = error(400, "Unable to load the proper Managed Identity.")
            else:
                token, expires_on = core.tokens.issue(audience, st.token_lifetime_s)
                status = 200
                payload = {"access_token": token, "expires_on": str(expires_on), "resource": resource,
                           "token_type": "Bearer", "client_id": st.mi_client_id}
            if decision is not None:
                fault = decision.describe()
                status, payload, headers = token_fault(decision)
    core.log.record("token", "GET", request.rel_url.path, query, status, request_id=request_id,
                    latency_ms=latency * 1000, fault=fault)
    return _json_response(status, payload, headers, "application/json; charset=utf-8")


# ---------------------------------------------------------------------- control API

def _control_json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def _control_error(message: str, status: int = 400) -> web.Response:
    return _control_json({"error": message}, status)


@web.middleware
async def loopback_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse anything not coming from loopback (the bind is loopback already; belt and braces)."""
    if request.remote not in ("127.0.0.1", "::1", None) and not str(request.remote).startswith("127."):
        return _control_error("loopback only", 403)
    return await handler(request)


async def _control_body(request: web.Request) -> Any:
    body, ok = await _read_json(request)
    if not ok:
        raise web.HTTPBadRequest(text=json.dumps({"error": "invalid JSON"}), content_type="application/json")
    return body


async def sim_health(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    return _control_json({"status": "ok", "tenant_id": core.state.tenant_id, "users": len(core.state.users),
                          "uptime_s": round(time.time() - core.started, 3), "requests_recorded": core.log.seq,
                          "tokens_issued": core.tokens.issued})


async def sim_requests(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    q = request.query
    try:
        since = int(q["since"]) if "since" in q else None
        status = int(q["status"]) if "status" in q else None
        limit = int(q["limit"]) if "limit" in q else None
    except ValueError:
        return _control_error("since, status and limit must be integers")
    entries = core.log.query(service=q.get("service"), method=q.get("method"), path_contains=q.get("path_contains"),
                             since=since, status=status, cmdlet=q.get("cmdlet"), batch_id=q.get("batch_id"),
                             user=q.get("user"), limit=limit)
    return _control_json({"count": len(entries), "last_seq": core.log.seq, "requests": entries})


async def sim_clear_requests(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    core.log.clear()
    return _control_json({"cleared": True, "last_seq": core.log.seq})


async def sim_state(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    users = request.query.getall("user", [])
    include = request.query.get("users", "true").lower() not in ("0", "false", "no")
    return _control_json(core.state.dump(users or None, include))


async def sim_mutations(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    since = int(request.query.get("since", "0") or 0)
    return _control_json({"mutations": [m for m in core.state.mutations if m["seq"] > since]})


async def sim_reset(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request)
    if isinstance(body, dict) and set(body) == {"seed"}:
        body = body["seed"]
    if body is not None and not isinstance(body, dict):
        return _control_error("seed must be a JSON object")
    try:
        core.reset(body)
    except (SeedError, KeyError, TypeError, ValueError) as exc:
        return _control_error(f"invalid seed: {exc}")
    return _control_json({"reset": True, "tenant_id": core.state.tenant_id, "users": len(core.state.users)})


async def sim_get_faults(request: web.Request) -> web.Response:
    return _control_json(request.app[CORE_KEY].faults.to_dict())


async def sim_put_faults(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request)
    try:
        core.faults.configure(body or {})
    except (FaultConfigError, TypeError, ValueError) as exc:
        return _control_error(str(exc))
    return _control_json(core.faults.to_dict())


async def sim_delete_faults(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    core.faults.clear()
    return _control_json(core.faults.to_dict())


async def sim_fault_once(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request)
    specs = body if isinstance(body, list) else [body]
    try:
        shots = [core.faults.add_once(spec or {}) for spec in specs]
    except (FaultConfigError, TypeError, ValueError) as exc:
        return _control_error(str(exc))
    return _control_json({"queued": [s.to_dict() for s in shots]})


def _permissions_view(core: SimulatorCore) -> dict:
    st = core.state
    return {"granted": sorted(st.granted), "denied": sorted(st.denied), "effective": sorted(st.granted - st.denied),
            "directoryRoles": sorted(st.directory_roles)}


async def sim_get_permissions(request: web.Request) -> web.Response:
    return _control_json(_permissions_view(request.app[CORE_KEY]))


async def sim_put_permissions(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request)
    if not isinstance(body, dict):
        return _control_error("expected {\"granted\": [...], \"denied\": [...], \"directoryRoles\": [...]}")
    for key in body:
        if key not in ("granted", "denied", "directoryRoles"):
            return _control_error(f"unknown key {key!r}")
        if not isinstance(body[key], list) or not all(isinstance(v, str) for v in body[key]):
            return _control_error(f"{key} must be a list of strings")
    st = core.state
    if "granted" in body:
        st.granted = set(body["granted"])
    if "denied" in body:
        st.denied = set(body["denied"])
    if "directoryRoles" in body:
        st.directory_roles = set(body["directoryRoles"])
    logger.info("Permissions set: denied=%s roles=%s", sorted(st.denied), sorted(st.directory_roles))
    return _control_json(_permissions_view(core))


async def sim_add_users(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request) or {}
    try:
        count = int(body.get("count", 1))
        start = int(body.get("start", 1))
    except (TypeError, ValueError):
        return _control_error("count and start must be integers")
    prefix = str(body.get("prefix", "user"))
    if not 1 <= count <= 100_000 or start < 0:
        return _control_error("count must be between 1 and 100000")
    if not prefix or not all(c.isalnum() or c in ".-_" for c in prefix):
        return _control_error("prefix must be letters, digits, '.', '-' or '_'")
    users = core.state.add_generated_users(count, prefix, start, bool(body.get("risky")),
                                           bool(body.get("compromised")))
    return _control_json({"count": len(users), "users": users})


async def sim_add_alert(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request) or {}
    st = core.state
    if isinstance(body.get("alert"), dict):
        alert = st.add_alert(body["alert"])
    else:
        user = st.find_user(str(body.get("user", "")))
        if user is None:
            return _control_error("unknown user")
        alert = st.user_alert(user, body.get("title", "Suspicious inbox forwarding"), body.get("severity", "high"))
    st.mutate("alert_created", None, alert=alert["id"])
    return _control_json(alert)


async def sim_set_risk(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request) or {}
    st = core.state
    user = st.find_user(str(body.get("user", "")))
    if user is None:
        return _control_error("unknown user")
    rec = st.set_risk(user, body.get("riskLevel", "high"), body.get("riskState", "atRisk"),
                      body.get("riskDetail", "none"))
    det = None
    if body.get("detection", True):
        det = st.add_detection(user, {"riskLevel": body.get("riskLevel", "high"),
                                      "riskEventType": body.get("riskEventType", "unfamiliarFeatures")})
    return _control_json({"riskyUser": rec, "detection": det})


async def sim_token_hashes(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    return _control_json({"sha256": list(core.tokens.issued_sha256), "length": 43})


async def sim_clear_tokens(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    core.tokens.clear()
    return _control_json({"cleared": True})


# ---------------------------------------------------------------------- app

def create_app(core: SimulatorCore) -> web.Application:
    """The aiohttp application for `core`."""
    app = web.Application(middlewares=[loopback_only], client_max_size=16 * 1024 * 1024)
    app[CORE_KEY] = core
    r = app.router
    r.add_get("/_sim/health", sim_health)
    r.add_get("/_sim/requests", sim_requests)
    r.add_delete("/_sim/requests", sim_clear_requests)
    r.add_get("/_sim/state", sim_state)
    r.add_get("/_sim/mutations", sim_mutations)
    r.add_post("/_sim/reset", sim_reset)
    r.add_get("/_sim/faults", sim_get_faults)
    r.add_put("/_sim/faults", sim_put_faults)
    r.add_delete("/_sim/faults", sim_delete_faults)
    r.add_post("/_sim/faults/once", sim_fault_once)
    r.add_get("/_sim/permissions", sim_get_permissions)
    r.add_put("/_sim/permissions", sim_put_permissions)
    r.add_post("/_sim/users", sim_add_users)
    r.add_post("/_sim/alerts", sim_add_alert)
    r.add_post("/_sim/risk", sim_set_risk)
    r.add_delete("/_sim/tokens", sim_clear_tokens)
    r.add_get("/_sim/tokens", sim_token_hashes)
    r.add_get("/msi/token", msi_token)
    r.add_post("/adminapi/beta/{tenant}/InvokeCommand", exo_entry)
    r.add_route("*", r"/{version:(?:v1\.0|beta)}/{tail:.*}", graph_entry)
    r.add_route("*", "/{tail:.*}", graph_unknown)
    return app


class Simulator:
    """Embeddable simulator: `async with Simulator() as sim: ... sim.url`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, seed: Mapping[str, Any] | None = None,
                 seed_path: str | None = None, faults: Mapping[str, Any] | None = None,
                 identity_header: str | None = None) -> None:
        self.bind_host = check_loopback(host)
        self.port = port
        self.core = SimulatorCore(seed, seed_path, faults, identity_header)
        self.app = create_app(self.core)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"http://{host}:{self.port}"

    @property
    def identity_endpoint(self) -> str:
        return self.url + "/msi/token"

    @property
    def identity_header(self) -> str:
        return self.core.identity_header

    async def start(self) -> "Simulator":
        """Bind and start serving."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind_host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        logger.info("Tenant simulator listening on %s (tenant %s)", self.url, self.core.state.tenant_id)
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "Simulator":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
