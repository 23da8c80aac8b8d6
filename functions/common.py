"""Helpers shared by the blueprints: quarantining undecodable messages."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.deps import Deps
from shared.validation import excerpt

logger = logging.getLogger(__name__)


async def quarantine(deps: Deps, queue: str, msg: func.QueueMessage, reason: str) -> None:
    """A message that can never succeed: park it on ``<queue>-poison``, record why, don't retry.

    The body goes to the poison queue unchanged (so it can be fixed and replayed); the
    error row holds the reason, a short excerpt, the original message's id and the id of
    the poison copy (``responder poison list`` matches them by it). A crash between the two
    writes leaves a poison message without a reason (listed as moved by the host), never a
    reason without its message.
    """
    body = msg.get_body()
    text = body.decode("utf-8", errors="replace")
    poison_id = await deps.queues.send(f"{queue}-poison", text)
    row = await deps.ledger.record_error(
        queue, reason, message_id=msg.id or "", excerpt=excerpt(text, 200), dequeue_count=msg.dequeue_count or 0,
        poison_message_id=poison_id,
    )
    logger.warning(
        "[incident=- step=%s corr=%s] message %s quarantined to %s-poison as %s (error row %s): %s",
        queue, msg.id, msg.id, queue, poison_id, row, reason,
    )
