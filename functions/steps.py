"""One queue-triggered function per playbook step, on queue ``step-<name>``.

The list comes from shared.playbook.STEP_NAMES (the single source of step names); each
handler only decodes the StepTask and hands it to the shared StepRunner.
"""
from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_deps, get_runner
from shared.model import MessageError, StepTask
from shared.playbook import STEP_NAMES, queue_name

from .common import quarantine

logger = logging.getLogger(__name__)
bp = func.Blueprint()


def _make_handler(step: str):
    queue = queue_name(step)

    async def handler(msg: func.QueueMessage) -> None:
        deps = await get_deps()
        try:
            task = StepTask.from_json(msg.get_body())
            if task.step != step:
                raise MessageError(f"step task for {task.step!r} arrived on queue {queue}")
        except MessageError as exc:
            await quarantine(deps, queue, msg, str(exc))
            return
        runner = await get_runner()
        outcome = await runner.run(task)
        logger.info(
            "[incident=%s step=%s corr=%s] message %s (dequeue %s): %s",
            task.incident_id, step, task.correlation_id, msg.id, msg.dequeue_count, outcome,
        )

    handler.__name__ = handler.__qualname__ = "step_" + step.replace("-", "_")
    return handler


for _step in STEP_NAMES:
    _fn = _make_handler(_step)
    bp.function_name(_fn.__name__)(bp.queue_trigger(arg_name="msg", queue_name=queue_name(_step), connection="AzureWebJobsStorage")(_fn))
