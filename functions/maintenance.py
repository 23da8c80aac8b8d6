"""Maintenance timers: the poison-queue redrive sweeper (shared/redrive.py) and the expiry of
held incidents nobody decided on within HOLD_TTL_HOURS (shared/approval.py)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.approval import expire_held
from shared.bootstrap import get_deps
from shared.redrive import sweep

logger = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("redrive_poison")
@bp.timer_trigger(arg_name="timer", schedule="%REDRIVE_SCHEDULE%", run_on_startup=False)
async def redrive_poison(timer: func.TimerRequest) -> None:
    deps = await get_deps()
    stats = await sweep(deps, deps.settings.redrive_max)
    if any(stats[k] for k in ("redriven", "gave_up", "dropped")):
        logger.info("[incident=- step=redrive corr=-] poison sweep: %s", stats)


@bp.function_name("expire_held")
@bp.timer_trigger(arg_name="timer", schedule="%HOLD_EXPIRY_SCHEDULE%", run_on_startup=False)
async def expire_held_incidents(timer: func.TimerRequest) -> None:
    deps = await get_deps()
    stats = await expire_held(deps)
    if any(stats.values()):
        logger.info("[incident=- step=expire corr=-] held-incident sweep: %s", stats)
