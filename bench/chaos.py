"""Fault storm: N compromised users under injected 429s, 5xx and hangs on every endpoint,
optionally with the Functions worker killed and restarted mid-step. Prints JSON.

    python -m bench.chaos [--incidents N] [--fault-rate F] [--kill-workers] [--json]

Every figure is computed from outside the responder: incident and step rows from Table
storage, the poison queues from Queue storage, and side effects from the tenant
simulator's own mutation log (what really changed in the "tenant"), never from the
responder's counters.
- duplicate_password_resets: password changes beyond the first, per user;
- duplicate_side_effects: any other tenant change applied twice to the same target
  (a rule disabled twice, a sender unblocked twice, a second summary mail ...);
- lost: users whose alert was queued but who have no incident at the end;
- terminal: incidents settled (succeeded / failed / dry-run, or held: shared.states.SETTLED_INCIDENT_STATES) when the run stops.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import random
import sys
import threading
import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev.stack import LocalStack
from shared.model import IncidentRequest
from shared.playbook import STEP_NAMES
from shared.states import SETTLED_INCIDENT_STATES

# Changes that must happen at most once per target. The key picks the target out of the record.
ONCE = {
    "password_reset": lambda d: "",
    "sessions_revoked": lambda d: "",
    "group_member_added": lambda d: d.get("group"),
    "per_user_mfa": lambda d: d.get("new"),
    "auth_method_deleted": lambda d: d.get("id"),
    "inbox_rule_updated": lambda d: (d.get("rule"), json.dumps(d.get("after") or d.get("changes") or {}, sort_keys=True)),
    "mailbox_updated": lambda d: json.dumps(sorted((d.get("after") or {}).keys())),
    "sender_unblocked": lambda d: d.get("was_blocked"),
    "mail_sent": lambda d: d.get("subject"),
}


def faults(rate: float, seed: int, hang_s: float) -> dict[str, Any]:
    """Split the fault rate: 60% throttling (429 + Retry-After), 30% 5xx, 10% hangs."""
    spec = {
        "error_rate": round(rate * 0.9, 4),
        "error_statuses": [429, 429, 429, 429, 429, 429, 503, 500, 502],
        "error_retry_after": "0.25",
        "hang_rate": round(rate * 0.1, 4),
        "hang_s": hang_s,
        "hang_mode": "504",
    }
    return {svc: {**spec, "seed": seed + i} for i, svc in enumerate(("graph", "exo", "token"))}


def count_duplicates(mutations: list[dict], users: set[str]) -> tuple[int, int, dict[str, int]]:
    seen: collections.Counter = collections.Counter()
    for m in mutations:
        action, user = m.get("action"), m.get("user")
        if user not in users or action not in ONCE:
            continue
        details = m.get("details") or {}
        if action == "sender_unblocked" and not details.get("was_blocked"):
            continue  # removing an address that is not listed changes nothing
        seen[(user, action, str(ONCE[action](details)))] += 1
    password = sum(c - 1 for (u, a, _), c in seen.items() if a == "password_reset" and c > 1)
    other: collections.Counter = collections.Counter()
    for (_user, a, _), c in seen.items():
        if a != "password_reset" and c > 1:
            other[a] += c - 1
    return password, sum(other.values()), dict(other)


async def _inject(conn: str, users: list[dict]) -> None:
    queues = QueueServiceClient.from_connection_string(conn)
    client = queues.get_queue_client("alerts")
    semaphore = asyncio.Semaphore(32)

    async def one(user: dict) -> None:
        body = IncidentRequest(user_id=user["id"], user_principal_name=user["userPrincipalName"], source="manual",
                               alert_ids=(f"chaos-{user['id'][:8]}",), reason="chaos benchmark").to_json()
        async with semaphore:
            await client.send_message(base64.b64encode(body.encode()).decode())

    try:
        await asyncio.gather(*(one(u) for u in users))
    finally:
        await queues.close()


async def _incidents(conn: str) -> list[dict]:
    tables = TableServiceClient.from_connection_string(conn)
    try:
        return [dict(e) async for e in tables.get_table_client("incidents").list_entities(select=["user_key", "state", "incident_id"])]
    except ResourceNotFoundError:
        return []
    finally:
        await tables.close()


async def _poison(conn: str) -> int:
    queues = QueueServiceClient.from_connection_string(conn)
    total = 0
    try:
        for name in ["alerts"] + [f"step-{s}" for s in STEP_NAMES]:
            try:
                props = await queues.get_queue_client(name + "-poison").get_queue_properties()
                total += props.approximate_message_count or 0
            except ResourceNotFoundError:
                pass
    finally:
        await queues.close()
    return total


class Killer(threading.Thread):
    """Kills the host (SIGKILL) at random moments and restarts it."""

    def __init__(self, stack: LocalStack, min_s: float, max_s: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.min_s, self.max_s = stack, min_s, max_s
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.kills = 0

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(self.min_s, self.max_s)):
            self.stack.host.kill()
            self.kills += 1
            if self.stopped.is_set():
                break
            self.stack.host.restart()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=120)
        if not self.stack.host.is_running():
            self.stack.host.restart()


def run(incidents: int, fault_rate: float, kill_workers: bool, timeout_s: float, seed: int, progress) -> dict[str, Any]:
    overrides = {
        "STORM_THRESHOLD": str(incidents * 2 + 100),
        "STORM_SOURCE_QUOTA": "0",  # one source submits every incident here: no quota
        # The faults here are random, not a quota: the simulator enforces none, so the responder's
        # pacing (which slows a bucket on every 429) is opened wide; it is measured by bench.storm.
        "PACING_DIRECTORY_RU_PER_10S": "1000000", "PACING_DIRECTORY_WRITES_PER_150S": "1000000",
        "PACING_TENANT_WRITES_PER_300S": "1000000", "PACING_IDP_PER_S": "1000", "PACING_REPORTS_PER_10S": "10000",
        "PACING_SECURITY_PER_MIN": "100000", "PACING_OUTLOOK_PER_10MIN": "1000000", "PACING_OUTLOOK_CONCURRENCY": "64",
        "PACING_EXO_PER_10S": "100000", "PACING_EXO_CONCURRENCY": "64",
        "GRAPH_TIMEOUT_SECONDS": "5",
        "STEP_LEASE_SECONDS": "20",
        "LOCALDEV_QUEUE_LEASE_SECONDS": "15",
        "REDRIVE_SCHEDULE": "*/10 * * * * *",  # sweep poison queues often: the run is short
    }
    started = time.monotonic()
    with LocalStack(overrides=overrides) as stack:
        sim, conn = stack.simulator.client, stack.azurite.connection_string
        users = sim.add_users(incidents, prefix="chaos", compromised=True)
        user_ids = {u["id"] for u in users}
        sim.set_faults(faults(fault_rate, seed, hang_s=8.0))
        t0 = time.monotonic()
        asyncio.run(_inject(conn, users))
        progress(f"{incidents} alerts queued in {time.monotonic() - t0:.1f}s; faults at {fault_rate:.0%}")
        killer = Killer(stack, 8.0, 20.0, seed) if kill_workers else None
        if killer:
            killer.start()
        deadline = time.monotonic() + timeout_s
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = [r for r in asyncio.run(_incidents(conn)) if r.get("user_key") in user_ids]
            terminal = sum(1 for r in rows if r.get("state") in SETTLED_INCIDENT_STATES)
            progress(f"t={time.monotonic() - t0:6.1f}s incidents={len(rows)} terminal={terminal}")
            if terminal >= incidents:
                break
            time.sleep(3)
        if killer:
            killer.stop()
        elapsed = time.monotonic() - t0
        sim.set_faults({})
        mutations = sim.mutations()
        poison = asyncio.run(_poison(conn))
    password_dups, other_dups, by_kind = count_duplicates(mutations, user_ids)
    states = collections.Counter(r.get("state") for r in rows)
    keys = {r.get("user_key") for r in rows}
    return {
        "incidents": incidents,
        "fault_rate": fault_rate,
        "kill_workers": kill_workers,
        "kills": killer.kills if killer else 0,
        "terminal": sum(states[s] for s in SETTLED_INCIDENT_STATES),
        "succeeded": states["succeeded"],
        "failed": states["failed"],
        "held": states["held"],
        "duplicate_password_resets": password_dups,
        "duplicate_side_effects": other_dups,
        "duplicates_by_kind": by_kind,
        "lost": len(user_ids - keys),
        "poison_messages": poison,
        "seconds": round(elapsed, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--kill-workers", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every incident to be terminal")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args.incidents, args.fault_rate, args.kill_workers, args.timeout, args.seed, progress)
    print(json.dumps(result, indent=None if args.json else 2))
    ok = result["terminal"] == args.incidents and result["lost"] == 0 and result["duplicate_password_resets"] == 0 \
        and result["duplicate_side_effects"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
