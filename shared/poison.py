"""``responder poison list|replay QUEUE [--id ID]``: what is parked on ``<queue>-poison`` and why,
and putting it back once the cause is fixed.

Two things park a message on ``<queue>-poison``:

* the app's own quarantine (``functions.common.quarantine``) for a message that can never
  succeed (bad JSON, wrong schema version, invalid user...). It writes a row to the ``errors``
  table (PartitionKey = the source queue, ``reason``, ``excerpt`` = ``excerpt(body, 200)``,
  ``message_id`` = the ORIGINAL message's id) and sends the body again to the poison queue as
  a NEW message (a new id). The row and the poison message are therefore matched by the body
  excerpt (and time: the row is written just before the message), one row per message;
* the Functions host, after ``maxDequeueCount`` failed attempts (an unhandled exception each
  time). The body is copied unchanged and no error row is written; the reason is in the host
  log, and the listing says "moved by the host after N failed attempts". When the redrive
  sweeper (shared/redrive.py) has since given up on a step task, its ``errors`` row (keyed by
  the incident id) is shown too.

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

import argparse
import asyncio
import base64
import binascii
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from .playbook import STEP_NAMES, queue_name
from .validation import excerpt

logger = logging.getLogger(__name__)

__all__ = [
    "UnknownQueueError",
    "known_queues",
    "check_queue",
    "list_poison",
    "replay",
    "render_listing",
    "add_poison_command",
    "cmd_poison",
]

POISON_SUFFIX = "-poison"
EXCERPT_CHARS = 200
PEEK_LIMIT = 32  # the most messages Storage returns per peek / receive call
_MAX_ROWS = 5000
_MATCH_SLACK = timedelta(minutes=2)  # clock skew between the app's row timestamp and the queue's insertion time
_HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


class UnknownQueueError(ValueError):
    """QUEUE is not one of the app's source queues. The message names the valid ones."""


def known_queues(alerts_queue: str = "alerts") -> list[str]:
    """The app's source queues: the alerts queue and one ``step-<name>`` queue per step."""
    return [alerts_queue] + [queue_name(step) for step in STEP_NAMES]


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


def _body_text(content: str | None) -> str:
    """The body as the function saw it: base64-decoded (UTF-8, undecodable bytes replaced)."""
    raw = content or ""
    try:
        data = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return raw  # not base64: stored as plain text
    return data.decode("utf-8", errors="replace")


def _replay_content(content: str | None) -> str:
    """The text to put back on the source queue: the stored base64 text, or base64 of plain text."""
    raw = content or ""
    try:
        base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return base64.b64encode(raw.encode("utf-8")).decode("ascii")
    return raw


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value or "")


def _parse_iso(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


async def _peek_all(client: Any) -> list[Any]:
    try:
        return list(await client.peek_messages(max_messages=PEEK_LIMIT))
    except ResourceNotFoundError:
        return []


async def _error_rows(store: Any, queue: str) -> list[dict[str, Any]]:
    try:
        return await store.ledger.list_errors(queue, limit=_MAX_ROWS)
    except ResourceNotFoundError:  # the app creates its tables on its first invocation
        return []


def _match_rows(messages: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Give each message the error row the app's quarantine wrote for it (or none).

    A row matches a message when its excerpt is the message body's excerpt and it was written
    no later than the message was inserted (plus clock slack). Each row explains at most one
    message; the latest eligible row wins, newest messages first, so a body quarantined again
    after a replay gets its new reason.
    """
    by_excerpt: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_excerpt.setdefault(str(row.get("excerpt") or ""), []).append(row)
    for candidates in by_excerpt.values():
        candidates.sort(key=lambda r: str(r.get("recorded_at") or ""), reverse=True)
    order = sorted(messages, key=lambda m: m["inserted_at"] or "", reverse=True)
    for message in order:
        inserted = _parse_iso(message["inserted_at"])
        candidates = by_excerpt.get(message["_key"], [])
        for index, row in enumerate(candidates):
            recorded = _parse_iso(row.get("recorded_at"))
            if inserted is None or recorded is None or recorded <= inserted + _MATCH_SLACK:
                message["error_row"] = row
                del candidates[index]
                break


def _match_given_up(messages: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """A step task the redrive sweeper gave up on (shared/redrive.py) has a row keyed by its incident id."""
    from .model import MessageError, StepTask

    given_up: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: str(r.get("recorded_at") or "")):
        if "redrive" in str(row.get("reason") or "") and row.get("message_id"):
            given_up[str(row["message_id"])] = row
    if not given_up:
        return
    for message in messages:
        if message["error_row"] is not None:
            continue
        try:
            task = StepTask.from_json(message["_text"])
        except (MessageError, ValueError, OverflowError):
            continue
        row = given_up.get(task.incident_id)
        if row is not None:
            message["error_row"] = {**row, "message_id": ""}
            message["_given_up"] = True


async def list_poison(store: Any, queue: str) -> list[dict[str, Any]]:
    """The messages on ``<queue>-poison`` (the first 32, oldest first) with the recorded reason.

    Each entry: ``id``, ``inserted_at``, ``dequeue_count`` (receives from the poison queue
    itself), ``size`` (characters of the body), ``excerpt`` (at most 200 characters of the
    body, never the whole of a larger one), ``moved_by`` (``app`` or ``host``), ``reason``,
    ``original_message_id`` and ``recorded_at`` (from the error row; empty when moved by the host).
    """
    queue = check_queue(queue, getattr(store, "alerts_queue", "alerts"))
    client = store.clients.queues.get_queue_client(queue + POISON_SUFFIX)
    peeked = await _peek_all(client)
    attempts = max_dequeue_count()
    messages = []
    for raw in peeked:
        text = _body_text(raw.content)
        messages.append({
            "id": raw.id,
            "inserted_at": _iso(raw.inserted_on),
            "dequeue_count": int(raw.dequeue_count or 0),
            "size": len(text),
            "excerpt": text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else ""),
            "_key": excerpt(text, EXCERPT_CHARS),
            "_text": text,
            "error_row": None,
        })
    if messages:
        rows = await _error_rows(store, queue)
        _match_rows(messages, rows)
        _match_given_up(messages, rows)
    out = []
    for message in messages:
        row = message.pop("error_row")
        message.pop("_key")
        message.pop("_text")
        if message.pop("_given_up", False):
            message.update(moved_by="host", reason=f"moved by the host after {attempts} failed attempts, then "
                                                   f"given up by the redrive sweeper: {row.get('reason')}",
                           original_message_id="", recorded_at=str(row.get("recorded_at") or ""))
        elif row is not None:
            message.update(moved_by="app", reason=str(row.get("reason") or ""),
                           original_message_id=str(row.get("message_id") or ""),
                           recorded_at=str(row.get("recorded_at") or ""))
        else:
            message.update(moved_by="host",
                           reason=f"moved by the host after {attempts} failed attempts "
                                  f"(maxDequeueCount {attempts}); the exception is in the host log",
                           original_message_id="", recorded_at="")
        out.append(message)
    return out


async def replay(store: Any, queue: str, message_id: str | None = None) -> list[str]:
    """Move poison message(s) back to ``queue``: send first, delete from poison only after.

    Returns the poison message ids replayed (``[]`` when there was nothing to replay). With
    ``message_id``, only that message is replayed; LookupError if it is not on the poison queue.
    """
    queue = check_queue(queue, getattr(store, "alerts_queue", "alerts"))
    poison = store.clients.queues.get_queue_client(queue + POISON_SUFFIX)
    target = store.clients.queues.get_queue_client(queue)
    replayed: list[str] = []
    held: list[Any] = []  # received but not to be replayed: hidden while we scan, visible again at the end
    try:
        # Only what is there now: a replayed message that fails again comes back as a new
        # poison message, which this run must not pick up and send round again.
        remaining = (await poison.get_queue_properties()).approximate_message_count or 0
        while remaining > 0:
            batch = [m async for m in poison.receive_messages(max_messages=min(PEEK_LIMIT, remaining),
                                                               visibility_timeout=120)]
            if not batch:
                break
            for message in batch:
                remaining -= 1
                if message_id is not None and message.id != message_id:
                    held.append(message)
                    continue
                try:
                    await target.send_message(_replay_content(message.content))
                except ResourceNotFoundError:
                    await target.create_queue()
                    await target.send_message(_replay_content(message.content))
                await poison.delete_message(message)
                replayed.append(message.id)
                logger.info("poison message %s replayed from %s%s onto %s", message.id, queue, POISON_SUFFIX, queue)
            if message_id is not None and replayed:
                break
    except ResourceNotFoundError:
        pass  # no poison queue yet: nothing to replay
    finally:
        for message in held:
            try:
                await poison.update_message(message, visibility_timeout=0)
            except ResourceNotFoundError:
                logger.warning("poison message %s vanished while replaying %s", message.id, queue)
    if message_id is not None and not replayed:
        raise LookupError(f"no message {excerpt(message_id, 60)} on {queue}{POISON_SUFFIX}")
    return replayed


# -- CLI ---------------------------------------------------------------------------------------


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


async def _list_cmd(store: Any, queue: str) -> list[dict[str, Any]]:
    return await list_poison(store, queue)


async def _replay_cmd(store: Any, queue: str, message_id: str | None) -> list[str]:
    return await replay(store, queue, message_id)


def cmd_poison(args: argparse.Namespace) -> int:
    """``responder poison list|replay QUEUE [--id ID] [--json]``."""
    from .cli import CliError, _storage_env, _with_store

    env = _storage_env()
    try:
        check_queue(args.queue, env.get("ALERTS_QUEUE", "alerts"))
    except UnknownQueueError as exc:
        raise CliError(str(exc)) from None
    if args.action == "list":
        entries = asyncio.run(_with_store(_list_cmd, args.queue))
        print(json.dumps(entries, indent=2) if args.json else render_listing(args.queue, entries))
        return 0
    try:
        ids = asyncio.run(_with_store(_replay_cmd, args.queue, args.id))
    except LookupError as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None
    if args.json:
        print(json.dumps({"queue": args.queue, "replayed": ids}))
    elif ids:
        print(f"replayed {len(ids)} message(s) from {args.queue}{POISON_SUFFIX} onto {args.queue}: {', '.join(ids)}")
    else:
        print(f"{args.queue}{POISON_SUFFIX} is empty: nothing to replay")
    return 0


def add_poison_command(sub: Any) -> argparse.ArgumentParser:
    """Add ``poison list|replay QUEUE [--id ID] [--json]`` to the ``responder`` sub-parsers."""
    poison = sub.add_parser("poison", help="show poison messages with their reason, or replay them")
    poison.add_argument("action", choices=("list", "replay"))
    poison.add_argument("queue", help="the source queue: alerts or step-<name> (not the -poison queue)")
    poison.add_argument("--id", help="replay only this poison message id (see `poison list`)")
    poison.add_argument("--json", action="store_true")
    poison.set_defaults(fn=cmd_poison)
    return poison
