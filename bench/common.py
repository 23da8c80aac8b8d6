"""Pieces the benchmarks share: queue alerts, read incidents with their storage timestamps,
read the simulator's clock-stamped mutation log, sample a process tree's peak memory.

Every figure comes from outside the responder (Table storage, the simulator's logs, /proc),
never from the responder's own counters.
"""
from __future__ import annotations

import asyncio
import base64
import os
from datetime import datetime, timezone
from typing import Any, Iterable

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.model import IncidentRequest
from shared.timestamps import parse_timestamp


def parse_iso(value: str) -> float:
    """Epoch seconds of an ISO 8601 UTC timestamp ('...Z')."""
    return parse_timestamp(value).timestamp()


def incident_request(user: dict, tag: str) -> str:
    return IncidentRequest(user_id=user["id"], user_principal_name=user["userPrincipalName"], source="manual",
                           alert_ids=(f"{tag}-{user['id'][:8]}",), reason=f"{tag} benchmark").to_json()


async def inject(conn: str, users: Iterable[dict], tag: str, queue: str = "alerts", parallel: int = 32) -> None:
    """Queue one incident request per user, base64 as host.json expects."""
    service = QueueServiceClient.from_connection_string(conn)
    client = service.get_queue_client(queue)
    semaphore = asyncio.Semaphore(parallel)

    async def one(user: dict) -> None:
        async with semaphore:
            await client.send_message(base64.b64encode(incident_request(user, tag).encode()).decode())

    try:
        await asyncio.gather(*(one(u) for u in users))
    finally:
        await service.close()


async def _rows(conn: str, table: str, select: list[str]) -> list[Any]:
    """Every entity of ``table`` with the ``select``ed properties ([] before the app created the table)."""
    service = TableServiceClient.from_connection_string(conn)
    try:
        return [entity async for entity in service.get_table_client(table).list_entities(select=select)]
    except ResourceNotFoundError:
        return []
    finally:
        await service.close()


async def step_rows(conn: str) -> list[dict[str, Any]]:
    """Every step row's incident, step, started_at and finished_at (when each step of each incident ran)."""
    return [dict(e) for e in await _rows(conn, "steps", ["PartitionKey", "RowKey", "started_at", "finished_at", "state"])]


async def incidents(conn: str) -> list[dict[str, Any]]:
    """Incident rows with ``_updated`` (epoch seconds of the row's last write, from storage)."""
    out = []
    # Timestamp selected: else the entity's metadata lacks it
    for entity in await _rows(conn, "incidents", ["user_key", "state", "incident_id", "created_at", "Timestamp"]):
        row = dict(entity)
        stamp = entity.metadata.get("timestamp")
        row["_updated"] = stamp.timestamp() if stamp else None
        out.append(row)
    return out


def containment_times(mutations: list[dict], user_ids: set[str]) -> dict[str, float]:
    """Per user: epoch seconds when both the password reset and the session revoke had landed."""
    first: dict[tuple[str, str], float] = {}
    for m in mutations:
        action, user = m.get("action"), m.get("user")
        if user in user_ids and action in ("password_reset", "sessions_revoked"):
            first.setdefault((user, action), parse_iso(m["time"]))
    out = {}
    for user in user_ids:
        a, b = first.get((user, "password_reset")), first.get((user, "sessions_revoked"))
        if a is not None and b is not None:
            out[user] = max(a, b)
    return out


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def peak_rss_mb(pid: int | None) -> float | None:
    """Largest VmHWM (peak resident set) of a process and its descendants, in MB."""
    if not pid:
        return None
    best = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        best = max(best, int(line.split()[1]))
        except OSError:
            continue
        stack.extend(_children(current))
    return round(best / 1024.0, 1) if best else None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (not its children)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wakeups(pid: int | None) -> int | None:
    """Voluntary context switches of a process's threads so far: how often it slept and was woken (on
    a VM a wake from idle costs far more CPU than the same work on a busy core: docs/benchmarks.md)."""
    if not pid:
        return None
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended in between
    return total


def tree_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total, stack = 0.0, [pid] if pid else []
    while stack:
        current = stack.pop()
        total += cpu_seconds(current) or 0.0
        stack.extend(_children(current))
    return total


def now() -> float:
    return datetime.now(timezone.utc).timestamp()
