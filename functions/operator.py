"""Operator endpoints: incident status, approval and re-enabling sign-in (HTTP, function key
required), and the worker side of operator actions (queue ``operator-actions``)."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.intake import approve
from shared.model import MessageError, OperatorTask
from shared.signin import OPERATOR_QUEUE, enable_sign_in, request_enable_sign_in
from shared.status import incident_view, list_views

from .common import quarantine

logger = logging.getLogger(__name__)
bp = func.Blueprint()


def _json(status: int, payload) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


def _valid_id(incident_id: str) -> bool:
    return incident_id.startswith("inc-") and incident_id[4:].isalnum() and len(incident_id) <= 64


@bp.function_name("incidents_list")
@bp.route(route="incidents", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def incidents_list(req: func.HttpRequest) -> func.HttpResponse:
    deps = await get_deps()
    return _json(200, {"incidents": await list_views(deps.ledger)})


@bp.function_name("incident_get")
@bp.route(route="incidents/{incident_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def incident_get(req: func.HttpRequest) -> func.HttpResponse:
    incident_id = req.route_params.get("incident_id", "")
    if not _valid_id(incident_id):
        return _json(400, {"error": "malformed incident id"})
    deps = await get_deps()
    view = await incident_view(deps.ledger, incident_id)
    return _json(200, view) if view else _json(404, {"error": "no such incident"})


@bp.function_name("incident_approve")
@bp.route(route="incidents/{incident_id}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def incident_approve(req: func.HttpRequest) -> func.HttpResponse:
    incident_id = req.route_params.get("incident_id", "")
    if not _valid_id(incident_id):
        return _json(400, {"error": "malformed incident id"})
    deps = await get_deps()
    result = await approve(deps, incident_id, approved_by="http")
    status = {"approved": 202, "not-found": 404, "not-held": 409}[result.outcome]
    return _json(status, {"outcome": result.outcome, "incident_id": incident_id, "reason": result.reason})


@bp.function_name("incident_enable_sign_in")
@bp.route(route="incidents/{incident_id}/enable-sign-in", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def incident_enable_sign_in(req: func.HttpRequest) -> func.HttpResponse:
    incident_id = req.route_params.get("incident_id", "")
    if not _valid_id(incident_id):
        return _json(400, {"error": "malformed incident id"})
    deps = await get_deps()
    result = await request_enable_sign_in(deps, incident_id, requested_by="http")
    status = {"queued": 202, "not-found": 404, "not-blocked": 409}[result.outcome]
    return _json(status, {"outcome": result.outcome, "incident_id": incident_id, "reason": result.reason})


@bp.function_name("operator_actions")
@bp.queue_trigger(arg_name="msg", queue_name=OPERATOR_QUEUE, connection="AzureWebJobsStorage")
async def operator_actions(msg: func.QueueMessage) -> None:
    deps = await get_deps()
    try:
        task = OperatorTask.from_json(msg.get_body())
    except MessageError as exc:
        await quarantine(deps, OPERATOR_QUEUE, msg, str(exc))
        return
    result = await enable_sign_in(deps, task)
    logger.info("[incident=%s step=%s corr=%s] message %s (dequeue %s): %s", task.incident_id, task.action,
                task.correlation_id, msg.id, msg.dequeue_count, result.outcome)
