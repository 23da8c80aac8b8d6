"""Alert intake triggers: the alerts queue (manual injection / producers) and POST /api/incidents."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.intake import submit
from shared.model import MAX_MESSAGE_BYTES, IncidentRequest, MessageError

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
    result = await submit(deps, request, correlation_id=msg.id)
    logger.info(
        "[incident=%s step=intake corr=%s] alert message %s: %s %s",
        result.incident_id or "-", msg.id, msg.id, result.outcome, result.reason,
    )


def _json(status: int, payload: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@bp.function_name("incidents_post")
@bp.route(route="incidents", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def incidents_post(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_MESSAGE_BYTES:
        return _json(413, {"error": f"body over {MAX_MESSAGE_BYTES} bytes"})
    try:
        data = json.loads(body or b"null")
        if not isinstance(data, dict):
            raise MessageError("body must be a JSON object (the incident-request schema)")
        data.setdefault("source", "http")
        request = IncidentRequest.from_json(json.dumps(data))
    except (MessageError, ValueError, RecursionError) as exc:
        return _json(400, {"error": str(exc)})
    deps = await get_deps()
    result = await submit(deps, request)
    status = 202 if result.outcome in ("created", "held", "attached") else 200
    return _json(status, {"outcome": result.outcome, "incident_id": result.incident_id, "reason": result.reason})
