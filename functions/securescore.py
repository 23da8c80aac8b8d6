"""Secure Score: the daily snapshot timer and the trend/chart endpoints (Incident.Read).

- ``securescore_snapshot`` timer (``%SECURE_SCORE_SCHEDULE%``): backfill on the first run,
  then the newest day(s); regressions become findings (and a mail when configured). Not run
  on start-up in Azure; the local stack runs it through the admin API when it starts.
- ``GET /api/securescore[?days=N]``: JSON trend, latest control changes, regressions.
- ``GET /api/securescore/chart.svg[?days=N]``: the line chart, rendered server-side.
Both need the Incident.Read app role (functions/auth.py): the tenant's security posture is not public.
"""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.deps import Deps
from shared.errors import ConfigError
from shared.ports import ScoreStorePort
from shared.principal import Role
from shared.securescore.chart import render_trend_svg
from shared.securescore.config import ScoreSettings
from shared.securescore.service import snapshot, trend

from .auth import OperatorCall, operator_call

logger = logging.getLogger(__name__)
bp = func.Blueprint()

MAX_DAYS_PARAM = 730


def _json(status: int, payload) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


def _store(deps: Deps) -> ScoreStorePort:
    if deps.scores is None:
        raise ConfigError("no Secure Score store is wired")
    return deps.scores


def _days(req: func.HttpRequest, default: int) -> int | None:
    raw = (req.params.get("days") or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS_PARAM:
        return None
    return int(raw)


@bp.function_name("securescore_snapshot")
@bp.timer_trigger(arg_name="timer", schedule="%SECURE_SCORE_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def securescore_snapshot(timer: func.TimerRequest) -> None:
    deps = await get_deps()
    result = await snapshot(deps.require_graph(), _store(deps), ScoreSettings.from_env())
    logger.info(
        "Secure Score snapshot done (past_due=%s): stored %d day(s), %d finding(s), %d mail(s)",
        getattr(timer, "past_due", False), len(result.stored), len(result.findings), result.mailed,
    )


@bp.function_name("securescore_get")
@bp.route(route="securescore", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def securescore_get(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ)
    if not isinstance(call, OperatorCall):
        return call
    deps = call.deps
    days = _days(req, 30)
    if days is None:
        return _json(400, {"error": f"days must be an integer from 1 to {MAX_DAYS_PARAM}"})
    return _json(200, await trend(_store(deps), days))


@bp.function_name("securescore_chart")
@bp.route(route="securescore/chart.svg", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def securescore_chart(req: func.HttpRequest) -> func.HttpResponse:
    call = await operator_call(req, Role.READ)
    if not isinstance(call, OperatorCall):
        return call
    deps = call.deps
    days = _days(req, 90)
    if days is None:
        return _json(400, {"error": f"days must be an integer from 1 to {MAX_DAYS_PARAM}"})
    svg = render_trend_svg(await trend(_store(deps), days))
    return func.HttpResponse(
        svg,
        status_code=200,
        mimetype="image/svg+xml",
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
