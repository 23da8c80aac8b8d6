"""Helpers shared by the blueprints: quarantining undecodable messages."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.deps import Deps
from shared.validation import excerpt

logger = logging.getLogger(__name__)


async def quarantine(deps: Deps, queue: str, msg: func.QueueMessage, reason: str) -> None:
    """A message that can never succeed: record why, park it on ``<queue>-poison``, don't retry.

    The body goes to the poison queue unchanged (so it can be fixed and replayed); the
    error row holds the reason and a short excerpt only.
    """
    body = msg.get_body()
    text = body.decode("utf-8", errors="replace")
    row = await deps.ledger.record_error(
        queue, reason, message_id=msg.id or "", excerpt=excerpt(text, 200), dequeue_count=msg.dequeue_count or 0
    )
    await deps.queues.send(f"{queue}-poison", text)
    logger.warning(
        "[incident=- step=%s corr=%s] message %s quarantined to %s-poison (error row %s): %s",
        queue, msg.id, msg.id, queue, row, reason,
    )
