"""Maintenance timers: the poison-queue redrive sweeper (see shared/redrive.py)."""
from __future__ import annotations

import logging

import azure.functions as func

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
