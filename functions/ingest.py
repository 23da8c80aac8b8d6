"""Alert intake triggers: the alerts queue (manual injection / producers), POST /api/incidents
(a principal with Incident.Submit) and, only when KEY_ONLY_INTAKE=true, POST /api/key-intake
(a function key alone, for producers that cannot get an Entra token)."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.errors import TransientError
from shared.intake import IntakeResult, submit
from shared.model import MAX_MESSAGE_BYTES, IncidentRequest, MessageError
from shared.principal import Principal, Role

from .auth import authorize, json_response
from .common import quarantine

logger = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("alerts")
@bp.queue_trigger(arg_name="msg", queue_name="%ALERTS_QUEUE%", connection="AzureWebJobsStorage")
async def alerts(msg: func.QueueMessage) -> None:
    deps = await get_deps()
    try:
        request = IncidentRequest.from_json(msg.get_body())
    except MessageError as exc:
        await quarantine(deps, deps.settings.alerts_queue, msg, str(exc))
        return
    result = await submit(deps, request, correlation_id=msg.id, via="queue")
    if result.outcome == "refused":  # a valid message the intake refuses: parked with its reason, like a bad one
        await quarantine(deps, deps.settings.alerts_queue, msg, result.reason)
        return
    logger.info(
        "[incident=%s step=intake corr=%s] alert message %s: %s %s",
        result.incident_id or "-", msg.id, msg.id, result.outcome, result.reason,
    )


def _parse(req: func.HttpRequest) -> IncidentRequest | func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_MESSAGE_BYTES:
        return json_response(413, {"error": f"body over {MAX_MESSAGE_BYTES} bytes"})
    try:
        data = json.loads(body or b"null")
        if not isinstance(data, dict):
            raise MessageError("body must be a JSON object (the incident-request schema)")
        data.setdefault("source", "http")
        return IncidentRequest.from_json(json.dumps(data))
    except (MessageError, ValueError, RecursionError) as exc:
        return json_response(400, {"error": str(exc)})


async def _submit(req: func.HttpRequest, submitter: Principal | None) -> func.HttpResponse:
    request = _parse(req)
    if isinstance(request, func.HttpResponse):
        return request
    deps = await get_deps()
    try:
        result: IntakeResult = await submit(deps, request, via="http", submitter=submitter)
    except TransientError as exc:
        logger.warning("[incident=- step=intake corr=-] HTTP intake unavailable: %s", exc)
        return json_response(503, {"error": "the tenant or storage is briefly unavailable; retry"}, {"Retry-After": "30"})
    if result.outcome == "refused":
        return json_response(400, {"error": result.reason, "outcome": "refused"})
    status = 202 if result.outcome in ("created", "held", "attached") else 200
    body = {"outcome": result.outcome, "incident_id": result.incident_id, "reason": result.reason}
    if result.protection:
        body["protection"] = result.protection
    return json_response(status, body)


@bp.function_name("incidents_post")
@bp.route(route="incidents", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def incidents_post(req: func.HttpRequest) -> func.HttpResponse:
    deps = await get_deps()
    caller = authorize(req, deps.settings, Role.SUBMIT)
    if isinstance(caller, func.HttpResponse):
        return caller
    return await _submit(req, caller)


@bp.function_name("key_intake")
@bp.route(route="key-intake", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def key_intake(req: func.HttpRequest) -> func.HttpResponse:
    """Intake with a function key alone: off unless KEY_ONLY_INTAKE=true (infra then excludes this
    one path from Easy Auth). The incident records no submitter (submitted_via http); approving it
    still needs a principal with Incident.Approve."""
    deps = await get_deps()
    if not deps.settings.key_only_intake:
        return json_response(403, {"error": "key-only intake is off (KEY_ONLY_INTAKE=false): "
                                            "POST /api/incidents with an Entra token holding Incident.Submit"})
    return await _submit(req, None)
