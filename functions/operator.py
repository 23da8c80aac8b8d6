"""Operator HTTP endpoints: incidents, approvals, rejections, the storm breaker.

Each route names the app role it needs (functions/auth.py: 401 without a validated principal,
403 without the role); the principal is recorded beside every decision.

| route | role |
|---|---|
| ``GET /api/incidents``, ``GET /api/incidents/{id}`` | Incident.Read |
| ``POST /api/incidents/{id}/approve`` | Incident.Approve (not the submitter; protected accounts need two) |
| ``POST /api/incidents/{id}/reject`` ``{"reason": "..."}`` | Incident.Approve |
| ``GET /api/storm`` | Incident.Read |
| ``POST /api/storm/reset`` | Incident.Approve |
| ``POST /api/incidents/{id}/enable-sign-in`` | Incident.Approve (re-enable an account BLOCK_SIGN_IN left blocked) |
| ``GET /api/incidents/{id}/undo`` | Incident.Read: what an undo would reverse, and what it would not |
| ``POST /api/incidents/{id}/undo`` ``{"confirm_forwarding": [...]}`` | Incident.Approve, not the submitter: reverse a false positive |

The worker side of operator actions (queue ``operator-actions``) is here too: only the worker
holds the managed identity.
"""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.approval import MAX_REJECT_REASON, approve, reject
from shared.bootstrap import get_deps
from shared.model import MessageError, OperatorTask
from shared.principal import Role
from shared.signin import OPERATOR_QUEUE, enable_sign_in, request_enable_sign_in
from shared.status import incident_view, list_views
from shared.undo import request_undo, run_undo, undo_offer

from .auth import OperatorCall, json_response, operator_call
from .common import quarantine

logger = logging.getLogger(__name__)
bp = func.Blueprint()

# What an approve/reject outcome answers.
DECISION_STATUS = {"approved": 202, "approval-recorded": 202, "rejected": 200, "not-found": 404, "not-held": 409,
                   "forbidden": 403, "already-approved": 409, "expired": 409}


def _json_body(req: func.HttpRequest, example: str) -> dict | func.HttpResponse:
    """A small JSON object body ({} when empty), or the 413/400 response."""
    body = req.get_body()
    if len(body) > 8192:
        return json_response(413, {"error": "body over 8192 bytes"})
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return json_response(400, {"error": f"body must be JSON like {example}"})
    return data


@bp.function_name("incidents_list")
@bp.route(route="incidents", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def incidents_list(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ)
    if not isinstance(call, OperatorCall):
        return call
    return json_response(200, {"incidents": await list_views(call.deps.ledger)})


@bp.function_name("incident_get")
@bp.route(route="incidents/{incident_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_get(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    view = await incident_view(call.deps.ledger, call.incident_id)
    return json_response(200, view) if view else json_response(404, {"error": "no such incident"})


@bp.function_name("incident_approve")
@bp.route(route="incidents/{incident_id}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_approve(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.APPROVE, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    decision = await approve(call.deps, call.incident_id, call.caller)
    return json_response(DECISION_STATUS[decision.outcome], decision.as_dict())


@bp.function_name("incident_reject")
@bp.route(route="incidents/{incident_id}/reject", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_reject(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.APPROVE, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    data = _json_body(req, '{"reason": "..."}')
    if isinstance(data, func.HttpResponse):
        return data
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REJECT_REASON * 4:
        return json_response(400, {"error": f"a reason is required (a string of at most {MAX_REJECT_REASON} characters)"})
    decision = await reject(call.deps, call.incident_id, call.caller, reason)
    return json_response(DECISION_STATUS[decision.outcome], decision.as_dict())


@bp.function_name("storm_get")
@bp.route(route="storm", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def storm_get(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ)
    if not isinstance(call, OperatorCall):
        return call
    deps, s = call.deps, call.deps.settings
    state = await deps.ledger.storm_state()
    return json_response(200, state.view(deps.clock(), s.storm_window_minutes, s.storm_threshold))


@bp.function_name("storm_reset")
@bp.route(route="storm/reset", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def storm_reset(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.APPROVE)
    if not isinstance(call, OperatorCall):
        return call
    deps, s, caller = call.deps, call.deps.settings, call.caller
    state = await deps.ledger.reset_storm({"object_id": caller.object_id, "upn": caller.name}, deps.clock())
    logger.warning("[incident=- step=storm corr=-] storm breaker reset by %s", caller.object_id)
    return json_response(200, state.view(deps.clock(), s.storm_window_minutes, s.storm_threshold))


@bp.function_name("incident_enable_sign_in")
@bp.route(route="incidents/{incident_id}/enable-sign-in", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_enable_sign_in(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.APPROVE, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    result = await request_enable_sign_in(call.deps, call.incident_id, requested_by=call.caller.name,
                                          requested_by_oid=call.caller.object_id)
    status = {"queued": 202, "not-found": 404, "not-blocked": 409}[result.outcome]
    return json_response(status, {"outcome": result.outcome, "incident_id": call.incident_id, "reason": result.reason})


@bp.function_name("incident_undo_plan")
@bp.route(route="incidents/{incident_id}/undo", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_undo_plan(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    view = await incident_view(call.deps.ledger, call.incident_id)
    if view is None:
        return json_response(404, {"error": "no such incident"})
    return json_response(200, {"incident_id": call.incident_id, **undo_offer(view)})


@bp.function_name("incident_undo")
@bp.route(route="incidents/{incident_id}/undo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def incident_undo(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.APPROVE, incident=True)
    if not isinstance(call, OperatorCall):
        return call
    data = _json_body(req, '{"confirm_forwarding": ["address"]}')
    if isinstance(data, func.HttpResponse):
        return data
    confirmed = data.get("confirm_forwarding", [])
    if not isinstance(confirmed, list) or not all(isinstance(c, str) and len(c) <= 320 for c in confirmed):
        return json_response(400, {"error": "confirm_forwarding must be a list of addresses"})
    result = await request_undo(call.deps, call.incident_id, call.caller, confirmed)
    status = {"queued": 202, "not-found": 404, "forbidden": 403, "not-possible": 409, "already": 409,
              "bad-request": 400}[result.outcome]
    return json_response(status, {"outcome": result.outcome, "incident_id": call.incident_id, "reason": result.reason})


@bp.function_name("operator_actions")
@bp.queue_trigger(arg_name="msg", queue_name=OPERATOR_QUEUE, connection="AzureWebJobsStorage")
async def operator_actions(msg: func.QueueMessage) -> None:
    deps = await get_deps()
    try:
        task = OperatorTask.from_json(msg.get_body())
    except MessageError as exc:
        await quarantine(deps, OPERATOR_QUEUE, msg, str(exc))
        return
    result = await (run_undo(deps, task) if task.action == "undo" else enable_sign_in(deps, task))
    logger.info("[incident=%s step=%s corr=%s] message %s (dequeue %s): %s", task.incident_id, task.action,
                task.correlation_id, msg.id, msg.dequeue_count, result.outcome)
