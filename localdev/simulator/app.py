"""aiohttp application of the local M365 tenant simulator (loopback only).

One port serves:
  /v1.0/... and /beta/...                      Microsoft Graph (audience https://graph.microsoft.com)
  POST /adminapi/beta/{tenant}/InvokeCommand   Exchange Online admin API (audience https://outlook.office365.com)
  GET /msi/token                               App Service managed-identity endpoint (azure-identity / MSAL)
  GET /{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/discovery/v2.0/keys
                                               the operator token issuer (identity.py; Easy Auth validates against it)
  /_sim/...                                    control API (no auth; loopback only)

Every Graph/EXO/token request (each $batch item separately) goes into a bounded request log with
secrets redacted; the Authorization header is never stored.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import uuid
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from . import control, exo, identity
from .core import CORE_KEY, REDACTED, SECRET_KEYS, WWW_AUTHENTICATE, RequestLog, SimulatorCore, TokenStore, redact
from .faults import Decision
from .graph import ROUTER, GraphRequest, GraphResponse
from .limits import Charge, Throttled
from .odata import GRAPH_JSON, GraphError, throttle_body

logger = logging.getLogger(__name__)

__all__ = ["CORE_KEY", "REDACTED", "SECRET_KEYS", "LoopbackError", "RequestLog", "Simulator", "SimulatorCore",
           "TokenStore", "apply_faults", "check_loopback", "create_app", "redact"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
GRAPH_AUDIENCE = "https://graph.microsoft.com"
EXO_AUDIENCE = "https://outlook.office365.com"
AUDIENCES = frozenset({GRAPH_AUDIENCE, EXO_AUDIENCE})
MAX_BATCH = 20
LOGGED_HEADERS = ("client-request-id", "X-AnchorMailbox", "Prefer", "ConsistencyLevel", "X-ResponseFormat")
EXO_JSON = GRAPH_JSON


class LoopbackError(ValueError):
    """Refused to bind to a non-loopback address."""


def check_loopback(host: str) -> str:
    """Return the address to bind for `host`; raise LoopbackError unless it is loopback."""
    if host not in LOOPBACK_HOSTS:
        raise LoopbackError(f"refusing to bind the tenant simulator to {host!r}: only 127.0.0.1, ::1 or localhost "
                            "are allowed (it accepts any credentials and must never be reachable from a network)")
    return "127.0.0.1" if host == "localhost" else host


def normalize_audience(resource: str) -> str:
    """'https://graph.microsoft.com/.default' -> 'https://graph.microsoft.com'."""
    res = resource.strip()
    if res.endswith("/.default"):
        res = res[: -len("/.default")]
    return res.rstrip("/")


# ---------------------------------------------------------------------- fault bodies

_FAULT_CODES = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Authorization_RequestDenied",
                404: "Request_ResourceNotFound", 409: "Conflict", 423: "Locked", 500: "InternalServerError",
                502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_FAULT_MESSAGES = {500: "An internal server error occurred. Please retry later.",
                   502: "The server received an invalid response from an upstream server.",
                   503: "Service is temporarily unavailable. Please retry later.",
                   504: "The gateway did not receive a response in time."}


GATEWAY_TIMEOUT_HTML = ("<!DOCTYPE html><html><head><title>504 Gateway Time-out</title></head><body>"
                        "<h1>504 Gateway Time-out</h1><p>The server didn't respond in time.</p></body></html>")


def graph_fault(decision: Decision, rq: GraphRequest) -> GraphResponse:
    """The Graph answer for an injected fault (status 0 = drop the connection).

    - 429: the throttling body of samples/graph-error-429.json with Retry-After, except from Identity
      Protection (riskyUsers, riskDetections), which throttles "without a Retry-After header"
      (learn.microsoft.com/graph/throttling-limits, Identity Protection limits);
    - 503: Graph's error body, Retry-After when the fault carries one (concepts/errors.md: "may be specified");
    - 504: the front door's HTML page, not a Graph JSON body (assumed: the gateway answers, not the service).
    """
    headers = dict(decision.headers)
    if decision.retry_after:
        headers["Retry-After"] = decision.retry_after
    if decision.status == 0:
        return GraphResponse(0, None, headers)
    if decision.status == 429:
        if rq.segments and rq.segments[0].lower() == "identityprotection":
            headers.pop("Retry-After", None)
        return GraphResponse(429, throttle_body(rq.request_id), headers)
    if decision.status == 504:
        return GraphResponse(504, GATEWAY_TIMEOUT_HTML, headers, content_type="text/html")
    code = _FAULT_CODES.get(decision.status, "Error")
    message = decision.message or _FAULT_MESSAGES.get(decision.status, "Injected fault.")
    return GraphResponse(decision.status, GraphError(decision.status, code, message).body(
        rq.request_id, rq.client_request_id), headers)


def exo_fault(decision: Decision, request_id: str) -> tuple[int, Any, dict]:
    """The EXO answer for an injected fault."""
    headers = dict(decision.headers)
    if decision.retry_after:
        headers["Retry-After"] = decision.retry_after
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


# ---------------------------------------------------------------------- applying a fault (once)

@dataclasses.dataclass
class Outcome:
    """What one request answers after fault injection: the handler's answer or the fault's."""

    value: Any
    fault: str | None = None  # Decision.describe() for the request log
    drop: bool = False  # status 0: close the connection without an answer


async def apply_faults(core: SimulatorCore, service: str, method: str, target: str,
                       work: Callable[[], Awaitable[Any]], answer: Callable[[Decision], Any], *,
                       cmdlet: str | None = None, random_faults: bool = True,
                       charges: Sequence[Charge] = ()) -> Outcome:
    """The one place a fault is applied to a request of ``service`` (graph | exo | token).

    A queued one-shot matching (method, target, cmdlet) wins, else the throttling profile's
    quotas the request is charged on (``charges``, limits.py: 429 when one is spent), else the
    service's throttle / random error / hang decision (unless ``random_faults`` is off: a $batch
    envelope, whose items are decided one by one). A fault answers before the work runs (no side
    effect), after sleeping ``hang_s``; with ``after_effect`` the work runs first and the fault is
    answered anyway (an error the work raises is answered instead). ``answer(decision)`` builds
    the service's fault answer; status 0 sets ``drop``.
    """
    decision = core.faults.take_once(service, method, target, cmdlet)
    if decision is None and random_faults and charges:
        throttled = core.limits.take(charges)
        if throttled is not None:
            decision = Decision("limit", 429, throttled.retry_after, headers=throttled.headers,
                                quota=throttled.quota.name)
    if decision is None and random_faults:
        decision = core.faults.decide(service)
    if decision is None:
        return Outcome(await work())
    if decision.after_effect:
        await work()
    elif decision.hang_s:
        await asyncio.sleep(decision.hang_s)
    return Outcome(answer(decision), decision.describe(), drop=decision.status == 0)


# ---------------------------------------------------------------------- Graph

async def dispatch_graph(core: SimulatorCore, rq: GraphRequest, *, batch_id: str | None = None,
                         item_id: str | None = None, latency_ms: float = 0.0,
                         charges: Sequence[Charge] | None = None) -> GraphResponse:
    """Route, inject faults, check permissions, run the handler and log one logical Graph request
    (``charges``: its quotas, when the caller classified it already)."""
    fault = None
    try:
        route, params = ROUTER.match(rq.method, rq.version, rq.segments)
        rq.params = params

        async def work() -> GraphResponse:
            return route.handler(core.state, rq)

        if charges is None:
            charges = core.limits.classify_graph(rq.method, rq.segments, rq.query, core.mailbox_key)
        outcome = await apply_faults(core, "graph", rq.method, rq.path, work, lambda d: graph_fault(d, rq),
                                     charges=charges)
        resp, fault = outcome.value, outcome.fault
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
                    batch_id=batch_id, item_id=item_id, headers=rq.headers or None)
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
                logged = {h: str(v) for k, v in headers.items() for h in LOGGED_HEADERS if str(k).lower() == h.lower()}
                sub = GraphRequest(method=item["method"].upper(), version=rq.version, segments=segs, query=query,
                                   body=item.get("body"), base_url=rq.base_url, request_id=str(uuid.uuid4()),
                                   client_request_id=crid, granted=rq.granted, headers=logged)
                resp = await dispatch_graph(core, sub, batch_id=rq.request_id, item_id=iid)
                status = 504 if resp.status == 0 else resp.status
                out_headers = {"Cache-Control": "no-cache", "x-ms-resource-unit": "1"}
                if resp.body is not None:
                    out_headers["OData-Version"] = "4.0"
                    out_headers["Content-Type"] = resp.content_type or GRAPH_JSON
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
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # str: a non-JSON (gateway) body
    return web.Response(status=status, body=raw, headers=hdrs)


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=504)


async def graph_entry(request: web.Request) -> web.StreamResponse:
    """/v1.0/* and /beta/*: a request holds its concurrency quotas (limits.py) for its whole life."""
    core = request.app[CORE_KEY]
    segs = [unquote(s) for s in request.rel_url.raw_path.split("/") if s]
    query = {k: v for k, v in request.query.items()}
    batch = len(segs) == 2 and segs[1].lower() == "$batch"
    charges = [] if batch else core.limits.classify_graph(request.method, segs[1:], query, core.mailbox_key)
    with core.limits.concurrency(charges) as denied:
        return await _graph_entry(request, core, segs[0], segs[1:], query, charges, denied)


async def _graph_entry(request: web.Request, core: SimulatorCore, version: str, segs: list[str],
                       query: dict[str, str], charges: Sequence[Charge], denied: Throttled | None
                       ) -> web.StreamResponse:
    latency = core.faults.latency("graph")
    if latency:
        await asyncio.sleep(latency)
    request_id = str(uuid.uuid4())
    crid = request.headers.get("client-request-id") or request_id
    rq = GraphRequest(method=request.method, version=version, segments=segs, query=query, body=None,
                      base_url=f"http://{request.host}", request_id=request_id, client_request_id=crid,
                      granted=core.granted(),
                      headers={h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers})
    base_headers = {"request-id": request_id, "client-request-id": crid}
    err = core.tokens.check(request.headers.get("Authorization"), GRAPH_AUDIENCE)
    if err is not None:
        core.log.record("graph", rq.method, rq.path, query, 401, request_id=request_id, latency_ms=latency * 1000,
                        fault=None)
        return _json_response(401, err.body(request_id, crid), {**base_headers, **err.headers})
    body, ok = await control.read_json(request)
    if not ok:
        err = GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header "
                         "is set and payload is of valid JSON format.")
        core.log.record("graph", rq.method, rq.path, query, 400, request_id=request_id, latency_ms=latency * 1000)
        return _json_response(400, err.body(request_id, crid), base_headers)
    rq.body = body
    if denied is not None:
        decision = Decision("limit", 429, denied.retry_after, headers=denied.headers, quota=denied.quota.name)
        resp = graph_fault(decision, rq)
        core.log.record("graph", rq.method, rq.path, query, 429, request_id=request_id, latency_ms=latency * 1000,
                        fault=decision.describe(), headers=rq.headers or None)
        return _json_response(429, resp.body, {**base_headers, **resp.headers})
    if len(segs) == 1 and segs[0].lower() == "$batch":
        if request.method != "POST":
            err = GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
            return _json_response(405, err.body(request_id, crid), base_headers)
        async def run_batch() -> GraphResponse:
            try:
                return await graph_batch(core, rq)
            except GraphError as exc:
                return GraphResponse(exc.status, exc.body(request_id, crid))

        # Throttling and random errors apply per item inside the batch, not to the envelope.
        outcome = await apply_faults(core, "graph", "POST", rq.path, run_batch, lambda d: graph_fault(d, rq),
                                     random_faults=False)
        resp, fault = outcome.value, outcome.fault
        n_items = len(body["requests"]) if isinstance(body, dict) and isinstance(body.get("requests"), list) else 0
        core.log.record("graph", "POST", rq.path, query, resp.status, request_id=request_id,
                        latency_ms=latency * 1000, fault=fault, batch_id=request_id,
                        body={"requests": n_items})
    else:
        resp = await dispatch_graph(core, rq, latency_ms=latency * 1000, charges=charges)
    if resp.status == 0:
        return _drop(request)
    return _json_response(resp.status, resp.body, {**base_headers, **resp.headers},
                          resp.content_type or GRAPH_JSON)


async def graph_unknown(request: web.Request) -> web.Response:
    """Anything outside the served prefixes: Graph-shaped 404, never a stack trace."""
    request_id = str(uuid.uuid4())
    err = GraphError(404, "NotFound", f"The requested path '{request.rel_url.path}' is not served by the simulator.")
    return _json_response(404, err.body(request_id, request.headers.get("client-request-id")),
                          {"request-id": request_id})


# ---------------------------------------------------------------------- Exchange

async def exo_entry(request: web.Request) -> web.StreamResponse:
    """POST /adminapi/beta/{tenant}/InvokeCommand: holds the Exchange concurrency quota for its whole life."""
    core = request.app[CORE_KEY]
    charges = core.limits.classify_exo(None)
    with core.limits.concurrency(charges) as denied:
        return await _exo_entry(request, core, charges, denied)


async def _exo_entry(request: web.Request, core: SimulatorCore, charges: Sequence[Charge],
                     denied: Throttled | None) -> web.StreamResponse:
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
    body, ok = await control.read_json(request)
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
        exo.check_anchor(st, tenant, request.headers.get("X-AnchorMailbox"), cmdlet)
        if denied is not None:
            decision = Decision("limit", 429, denied.retry_after, headers=denied.headers, quota=denied.quota.name)
            status, payload, out_headers = exo_fault(decision, request_id)
            core.log.record("exo", "POST", path, {}, status, request_id=request_id, latency_ms=latency * 1000,
                            fault=decision.describe(), body=body, cmdlet=cmdlet, headers=logged_headers)
            return _json_response(status, payload, {**base_headers, **out_headers}, EXO_JSON)

        async def work() -> tuple[int, Any, dict]:
            nonlocal permission
            if "Exchange.ManageAsApp" not in core.granted():
                permission = "missing:Exchange.ManageAsApp"
                return 403, GraphError(403, "Authorization_RequestDenied",
                                       "Insufficient privileges to complete the operation.").body(request_id, crid), {}
            permission = "Exchange.ManageAsApp"
            return 200, exo.invoke(st, tenant, cmdlet, params, ctx), {}

        outcome = await apply_faults(core, "exo", "POST", f"{path}#{cmdlet}", work,
                                     lambda d: exo_fault(d, request_id), cmdlet=cmdlet, charges=charges)
        fault = outcome.fault
        if outcome.drop:
            core.log.record("exo", "POST", path, {}, 0, request_id=request_id, latency_ms=latency * 1000,
                            fault=fault, body=body, cmdlet=cmdlet, headers=logged_headers)
            return _drop(request)
        status, payload, out_headers = outcome.value
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
        def issue() -> tuple[int, Any, dict]:
            audience = normalize_audience(resource)
            ids = {k: q[k].lower() for k in ("client_id", "object_id", "principal_id", "mi_res_id") if q.get(k)}
            if q.get("api-version") != "2019-08-01":
                return (*error(400, f"Unsupported api-version '{q.get('api-version')}'. Use 2019-08-01."), {})
            if not resource:
                return (*error(400, "Required query variable 'resource' is missing."), {})
            if audience not in AUDIENCES:
                return (*error(400, f"AADSTS500011: The resource principal named {resource} was not found "
                                    f"in the tenant named {st.tenant_name}."), {})
            if (("client_id" in ids and ids["client_id"] != st.mi_client_id)
                    or ("object_id" in ids and ids["object_id"] != st.mi_object_id)
                    or ("principal_id" in ids and ids["principal_id"] != st.mi_object_id)
                    or ("mi_res_id" in ids and ids["mi_res_id"] != (st.mi_resource_id or "").lower())):
                return (*error(400, "Unable to load the proper Managed Identity."), {})
            token, expires_on = core.tokens.issue(audience, st.token_lifetime_s)
            return 200, {"access_token": token, "expires_on": str(expires_on), "resource": resource,
                         "token_type": "Bearer", "client_id": st.mi_client_id}, {}

        async def work() -> tuple[int, Any, dict]:
            return issue()

        outcome = await apply_faults(core, "token", "GET", f"{request.rel_url.path}?resource={resource}", work,
                                     token_fault)
        fault = outcome.fault
        if outcome.drop:
            core.log.record("token", "GET", request.rel_url.path, query, 0, request_id=request_id,
                            latency_ms=latency * 1000, fault=fault)
            return _drop(request)
        status, payload, headers = outcome.value
    core.log.record("token", "GET", request.rel_url.path, query, status, request_id=request_id,
                    latency_ms=latency * 1000, fault=fault)
    return _json_response(status, payload, headers, "application/json; charset=utf-8")


# ---------------------------------------------------------------------- app

def create_app(core: SimulatorCore) -> web.Application:
    """The aiohttp application for `core`."""
    app = web.Application(middlewares=[control.loopback_only], client_max_size=16 * 1024 * 1024)
    app[CORE_KEY] = core
    r = app.router
    control.add_routes(r)
    identity.add_routes(r)
    r.add_get("/msi/token", msi_token)
    r.add_post("/adminapi/beta/{tenant}/InvokeCommand", exo_entry)
    r.add_route("*", r"/{version:(?:v1\.0|beta)}/{tail:.*}", graph_entry)
    r.add_route("*", "/{tail:.*}", graph_unknown)
    return app


class Simulator:
    """Embeddable simulator: `async with Simulator() as sim: ... sim.url`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, seed: Mapping[str, Any] | None = None,
                 seed_path: str | None = None, faults: Mapping[str, Any] | None = None,
                 identity_header: str | None = None, limits: Mapping[str, Any] | None = None) -> None:
        self.bind_host = check_loopback(host)
        self.port = port
        self.core = SimulatorCore(seed, seed_path, faults, identity_header, limits)
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
