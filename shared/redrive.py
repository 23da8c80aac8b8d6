"""Poison-queue redrive: a message the host gave up on after maxDequeueCount failed
attempts gets a bounded number of second chances, then its incident is ended honestly.

Transient trouble (a throttling storm, a Graph outage, a worker killed again and again)
can outlast the host's retries. Poison must never mean "lost": every run of the sweeper
looks at ``<queue>-poison`` for the alerts and step queues and, per message,
- leaves alone what is not one of ours or does not parse (bad input the handlers
  quarantined, with an ``errors`` row; `responder poison` shows those);
- drops a step task whose step has since finished and whose incident has moved on (the
  next step has a row, or the incident is over); a finished step whose successor was never
  enqueued (a worker killed between the ledger write and the enqueue) is redriven, so the
  runner's redelivery path enqueues the successor — dropping it would strand the incident;
- re-enqueues it on its queue, with a growing delay, at most REDRIVE_MAX times (counted
  in table ``redrives``, keyed by queue and body digest) — idempotency makes this safe;
- after that, marks the step and its incident ``failed`` with the reason, writes an
  ``errors`` row, and leaves the message in the poison queue for the operator.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from .deps import Deps
from .model import IncidentRequest, MessageError, StepTask
from .notify import notify_failed
from .playbook import STEP_NAMES, incident_order, queue_name
from .ports import QueuedMessage
from .states import TERMINAL_INCIDENT_STATES, TERMINAL_STEP_STATES, IncidentState, StepState
from .steps.base import successor_started
from .timestamps import iso

logger = logging.getLogger(__name__)

MAX_PER_QUEUE = 256  # messages looked at per queue per run
GAVE_UP = "redrive-gave-up"  # the ``kind`` of the errors row written when the sweeper gives up


def _digest(queue: str, body: str) -> str:
    return hashlib.sha256(f"{queue}\n{body}".encode()).hexdigest()[:32]


async def _nothing_left(deps: Deps, task: StepTask, row: dict[str, Any] | None) -> bool:
    """True when a poison step task has nothing left to do: its step is finished and the
    incident has moved past it (or stopped). Otherwise a redrive lets the runner advance."""
    if not row or row.get("state") not in TERMINAL_STEP_STATES:
        return False
    if row.get("state") == StepState.FAILED:
        return True
    incident = await deps.ledger.get_incident(task.incident_id)
    if incident is None or incident.get("state") in TERMINAL_INCIDENT_STATES:
        return True
    order = incident_order(incident, deps.settings.playbook_steps)
    # The last step finished but the incident was never closed: a redrive lets the runner close it.
    return task.step in order and await successor_started(deps.ledger, task.incident_id, order, task.step)


async def _give_up(deps: Deps, queue: str, task: StepTask, redrives: int, poison_message_id: str) -> None:
    row = await deps.ledger.get_step(task.incident_id, task.step) or {}
    last = row.get("error") or "no error recorded (the worker may have been killed)"
    reason = f"{task.step}: transient failures outlasted {redrives} redrive(s) of the poison queue; last error: {last}"
    await deps.ledger.put_step(task.incident_id, task.step, {"state": StepState.FAILED, "error": reason[:1000],
                                                             "lease_until": "", "finished_at": iso(deps.clock())})
    if await deps.ledger.get_incident(task.incident_id) is not None:
        await deps.ledger.update_incident(task.incident_id, {"state": IncidentState.FAILED, "stopped_at": task.step,
                                                             "stop_reason": reason[:1000]})
        await notify_failed(deps, task.incident_id)
    await deps.ledger.record_error(queue, reason, message_id=task.incident_id, poison_message_id=poison_message_id,
                                   kind=GAVE_UP)
    logger.error("[incident=%s step=%s corr=%s] %s", task.incident_id, task.step, task.correlation_id, reason)


async def sweep(deps: Deps, max_redrives: int) -> dict[str, int]:
    stats = {"redriven": 0, "dropped": 0, "gave_up": 0, "left": 0}
    sources = [deps.settings.alerts_queue] + [queue_name(step) for step in STEP_NAMES]
    for source in sources:
        poison = f"{source}-poison"
        messages = await deps.queues.receive(poison, max_messages=32, visibility_timeout=120)
        for message in messages[:MAX_PER_QUEUE]:
            stats[await _sweep_one(deps, source, poison, message, max_redrives)] += 1
    return stats


async def _sweep_one(deps: Deps, source: str, poison: str, message: QueuedMessage, max_redrives: int) -> str:
    """Decide one poison message's fate; returns the stats key it counts under."""
    body = message.text
    task: StepTask | None = None
    try:
        if source == deps.settings.alerts_queue:
            IncidentRequest.from_json(body)
        else:
            task = StepTask.from_json(body)
    except (MessageError, ValueError):
        await deps.queues.make_visible(poison, message)
        return "left"  # bad input: quarantined with its reason; the operator decides
    if task is not None:
        row = await deps.ledger.get_step(task.incident_id, task.step)
        if await _nothing_left(deps, task, row):
            await deps.queues.delete(poison, message)
            return "dropped"
    digest = _digest(source, body)
    record = await deps.ledger.get_redrive(source, digest)
    count = int(record.get("count", 0))
    if record.get("gave_up"):
        await deps.queues.make_visible(poison, message)
        return "left"
    if count >= max_redrives:
        if task is not None:
            await _give_up(deps, source, task, count, message.id)
        else:
            await deps.ledger.record_error(source, f"alert outlasted {count} redrive(s); left in {source}-poison",
                                           poison_message_id=message.id, kind=GAVE_UP)
        await deps.ledger.put_redrive(source, digest, count, gave_up=True)
        await deps.queues.make_visible(poison, message)
        return "gave_up"
    await deps.ledger.put_redrive(source, digest, count + 1)
    await deps.queues.send(source, body, visibility_timeout=min(300, 15 * (count + 1)))
    await deps.queues.delete(poison, message)
    logger.warning("[incident=%s step=%s corr=-] poison message redriven to %s (redrive %d of %d)",
                   task.incident_id if task else "-", task.step if task else "intake", source, count + 1, max_redrives)
    return "redriven"
