"""What is parked on ``<queue>-poison`` and why, and putting it back once the cause is fixed
(``responder poison list|replay QUEUE [--id ID]``, shared/cli.py).

Two things park a message on ``<queue>-poison``:

* the app's own quarantine (``functions.common.quarantine``) for a message that can never
  succeed (bad JSON, wrong schema version, invalid user...). It sends the body to the poison
  queue as a NEW message and then writes a row to the ``errors`` table (PartitionKey = the
  source queue, ``reason``, ``excerpt``, ``message_id`` = the ORIGINAL message's id,
  ``poison_message_id`` = the id the send returned). The listing matches rows to poison
  messages by that id;
* the Functions host, after ``maxDequeueCount`` failed attempts (an unhandled exception each
  time). The body is copied unchanged and no error row is written; the reason is in the host
  log, and the listing says "moved by the host after N failed attempts". When the redrive
  sweeper (shared/redrive.py) has since given up on the message, its ``errors`` row (with
  the same ``poison_message_id``) is shown too.

Replaying sends the poison message's stored text back to the source queue exactly as it is
stored (base64 text, as the app's QueueSender and the host write it; a body that is not
base64 is base64-encoded first, as host.json's ``messageEncoding: base64`` expects), and only
after that send succeeded deletes it from the poison queue. A replayed message that still
cannot succeed simply comes back to the poison queue with a new error row; one that can is
processed normally, and the ledger's idempotency makes a second delivery of a message that
had already half-run harmless.

Only the app's queues are accepted: the alerts queue (``ALERTS_QUEUE``, default ``alerts``)
and ``step-<name>`` for every playbook step.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from .playbook import STEP_NAMES, queue_name
from .ports import LedgerPort, QueuedMessage, QueuePort
from .redrive import GAVE_UP
from .signin import OPERATOR_QUEUE
from .timestamps import iso_seconds
from .validation import excerpt

logger = logging.getLogger(__name__)

__all__ = [
    "UnknownQueueError",
    "check_queue",
    "known_queues",
    "list_poison",
    "render_listing",
    "replay",
]

POISON_SUFFIX = "-poison"
EXCERPT_CHARS = 200
PEEK_LIMIT = 32  # the most messages Storage returns per peek / receive call
_MAX_ROWS = 5000
_HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


class UnknownQueueError(ValueError):
    """QUEUE is not one of the app's source queues. The message names the valid ones."""


def known_queues(alerts_queue: str = "alerts") -> list[str]:
    """The app's source queues: the alerts queue, one ``step-<name>`` queue per step, operator actions."""
    return [alerts_queue] + [queue_name(step) for step in STEP_NAMES] + [OPERATOR_QUEUE]


def check_queue(queue: str, alerts_queue: str = "alerts") -> str:
    """Return ``queue`` if it is one of the app's source queues, else raise UnknownQueueError."""
    known = known_queues(alerts_queue)
    if queue in known:
        return queue
    if isinstance(queue, str) and queue.endswith(POISON_SUFFIX) and queue[: -len(POISON_SUFFIX)] in known:
        raise UnknownQueueError(
            f"give the source queue, not its poison queue: {queue[: -len(POISON_SUFFIX)]!r} (not {queue!r})")
    raise UnknownQueueError(f"unknown queue {excerpt(queue)}: one of {', '.join(known)}")


def max_dequeue_count(host_json: Path = _HOST_JSON) -> int:
    """host.json's ``extensions.queues.maxDequeueCount`` (the Functions default, 5, if unset)."""
    try:
        config = json.loads(host_json.read_text(encoding="utf-8"))
        return int(config.get("extensions", {}).get("queues", {}).get("maxDequeueCount", 5))
    except (OSError, ValueError, TypeError, AttributeError):
        return 5


def _replay_content(content: str | None) -> str:
    """The text to put back on the source queue: the stored base64 text, or base64 of plain text."""
    raw = content or ""
    try:
        base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return base64.b64encode(raw.encode("utf-8")).decode("ascii")
    return raw


def _iso(value: datetime | None) -> str:
    return iso_seconds(value) if value is not None else ""


async def _error_rows(ledger: LedgerPort, queue: str) -> dict[str, dict[str, Any]]:
    """The errors rows for ``queue`` that name a poison message, by that message's id (the
    latest row wins: a body quarantined again after a replay gets its new reason)."""
    rows = await ledger.list_errors(queue, limit=_MAX_ROWS)
    by_id: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: str(r.get("recorded_at") or "")):
        poison_id = str(row.get("poison_message_id") or "")
        if poison_id:
            by_id[poison_id] = row
    return by_id


def _entry(message: QueuedMessage, row: dict[str, Any] | None, attempts: int) -> dict[str, Any]:
    text = message.text
    entry: dict[str, Any] = {
        "id": message.id,
        "inserted_at": _iso(message.inserted_on),
        "dequeue_count": message.dequeue_count,
        "size": len(text),
        "excerpt": text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else ""),
    }
    moved_by_host = (f"moved by the host after {attempts} failed attempts "
                     f"(maxDequeueCount {attempts}); the exception is in the host log")
    if row is None:
        entry.update(moved_by="host", reason=moved_by_host, original_message_id="", recorded_at="")
    elif row.get("kind") == GAVE_UP:
        entry.update(moved_by="host", reason=f"moved by the host after {attempts} failed attempts, then "
                                             f"given up by the redrive sweeper: {row.get('reason')}",
                     original_message_id="", recorded_at=str(row.get("recorded_at") or ""))
    else:
        entry.update(moved_by="app", reason=str(row.get("reason") or ""),
                     original_message_id=str(row.get("message_id") or ""),
                     recorded_at=str(row.get("recorded_at") or ""))
    return entry


async def list_poison(ledger: LedgerPort, queues: QueuePort, queue: str, alerts_queue: str = "alerts") -> list[dict[str, Any]]:
    """The messages on ``<queue>-poison`` (the first 32, oldest first) with the recorded reason.

    Each entry: ``id``, ``inserted_at``, ``dequeue_count`` (receives from the poison queue
    itself), ``size`` (characters of the body), ``excerpt`` (at most 200 characters of the
    body, never the whole of a larger one), ``moved_by`` (``app`` or ``host``), ``reason``,
    ``original_message_id`` and ``recorded_at`` (from the error row; empty when moved by the host).
    """
    queue = check_queue(queue, alerts_queue)
    messages = await queues.peek(queue + POISON_SUFFIX, PEEK_LIMIT)
    rows = await _error_rows(ledger, queue) if messages else {}
    attempts = max_dequeue_count()
    return [_entry(message, rows.get(message.id), attempts) for message in messages]


async def replay(queues: QueuePort, queue: str, message_id: str | None = None, alerts_queue: str = "alerts") -> list[str]:
    """Move poison message(s) back to ``queue``: send first, delete from poison only after.

    Returns the poison message ids replayed (``[]`` when there was nothing to replay). With
    ``message_id``, only that message is replayed; LookupError if it is not on the poison queue.
    """
    queue = check_queue(queue, alerts_queue)
    poison = queue + POISON_SUFFIX
    replayed: list[str] = []
    held: list[QueuedMessage] = []  # received but not to be replayed: hidden while we scan, visible again at the end
    try:
        # Only what is there now: a replayed message that fails again comes back as a new
        # poison message, which this run must not pick up and send round again.
        remaining = await queues.approximate_count(poison)
        while remaining > 0:
            batch = await queues.receive(poison, max_messages=min(PEEK_LIMIT, remaining), visibility_timeout=120)
            if not batch:
                break
            for message in batch:
                remaining -= 1
                if message_id is not None and message.id != message_id:
                    held.append(message)
                    continue
                await queues.send_stored(queue, _replay_content(message.content))
                await queues.delete(poison, message)
                replayed.append(message.id)
                logger.info("poison message %s replayed from %s onto %s", message.id, poison, queue)
            if message_id is not None and replayed:
                break
    finally:
        for message in held:
            if not await queues.make_visible(poison, message):
                logger.warning("poison message %s vanished while replaying %s", message.id, queue)
    if message_id is not None and not replayed:
        raise LookupError(f"no message {excerpt(message_id, 60)} on {poison}")
    return replayed


# -- rendering ---------------------------------------------------------------------------------


def render_listing(queue: str, entries: list[dict[str, Any]]) -> str:
    if not entries:
        return f"{queue}{POISON_SUFFIX} is empty"
    lines = [f"{len(entries)} message(s) on {queue}{POISON_SUFFIX}"
             + (f" (the first {PEEK_LIMIT})" if len(entries) >= PEEK_LIMIT else "")]
    for entry in entries:
        lines.append(f"- {entry['id']}  inserted {entry['inserted_at']}  dequeued {entry['dequeue_count']}x  "
                     f"{entry['size']} chars")
        lines.append(f"    reason: {entry['reason']}")
        if entry["original_message_id"]:
            lines.append(f"    original message {entry['original_message_id']}, quarantined {entry['recorded_at']}")
        lines.append(f"    body:   {json.dumps(entry['excerpt'])}")
    return "\n".join(lines)
