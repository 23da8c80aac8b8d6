"""The simulator's control API (``/_sim/...``): no auth, loopback only, for tests and benches.

``GET /_sim/health``; ``GET|DELETE /_sim/requests``; ``GET /_sim/state``; ``GET /_sim/mutations``;
``POST /_sim/reset``; ``GET|PUT|DELETE /_sim/faults``; ``POST /_sim/faults/once``; ``GET|PUT /_sim/limits`` (the throttling
profile, limits.py; ``DELETE /_sim/limits/counters`` zeroes its counters);
``GET|PUT /_sim/permissions``; ``POST /_sim/users``; ``POST /_sim/alerts``; ``POST /_sim/risk``;
``GET|DELETE /_sim/tokens``. ``add_routes`` registers them; ``loopback_only`` is the middleware
that refuses anything not from loopback.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from .core import CORE_KEY, SimulatorCore
from .faults import FaultConfigError
from .limits import LimitsConfigError
from .state import SeedError

logger = logging.getLogger(__name__)


async def read_json(request: web.Request) -> tuple[Any, bool]:
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
    body, ok = await read_json(request)
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


async def sim_get_limits(request: web.Request) -> web.Response:
    return _control_json(request.app[CORE_KEY].limits.to_dict())


async def sim_put_limits(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    body = await _control_body(request)
    try:
        core.limits.configure(body or {})
    except LimitsConfigError as exc:
        return _control_error(str(exc))
    return _control_json(core.limits.to_dict())


async def sim_reset_limit_counters(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    core.limits.reset_counters()
    return _control_json(core.limits.to_dict())


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


def add_routes(router: web.UrlDispatcher) -> None:
    """Register every /_sim route on ``router``."""
    r = router
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
    r.add_get("/_sim/limits", sim_get_limits)
    r.add_put("/_sim/limits", sim_put_limits)
    r.add_delete("/_sim/limits/counters", sim_reset_limit_counters)
    r.add_get("/_sim/permissions", sim_get_permissions)
    r.add_put("/_sim/permissions", sim_put_permissions)
    r.add_post("/_sim/users", sim_add_users)
    r.add_post("/_sim/alerts", sim_add_alert)
    r.add_post("/_sim/risk", sim_set_risk)
    r.add_delete("/_sim/tokens", sim_clear_tokens)
    r.add_get("/_sim/tokens", sim_token_hashes)
