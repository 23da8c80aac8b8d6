"""Latency: single alerts on an idle stack, alert enqueued → contained and → terminal. Prints JSON.

    python -m bench.latency [--alerts N] [--gap-s S] [--latency-ms L] [--json]

N alerts are put on the alerts queue one at a time, S seconds apart (so each meets an idle
stack, queue listeners backed off as far as host.json lets them), with L ms added to every
Graph / Exchange call. For each: enqueue time (taken just before the send) to contained
(password reset and session revoke both applied: the simulator's mutation log) and to
terminal (the incident row's last write: Table storage). Reports p50 / p95 / max.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.common import containment_times, incidents, inject, now, percentile
from localdev.stack import LocalStack
from shared.states import SETTLED_INCIDENT_STATES


def _summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(values, 50), 2) if values else None,
        "p95": round(percentile(values, 95), 2) if values else None,
        "max": round(max(values), 2) if values else None,
    }


def run(alerts: int, gap_s: float, latency_ms: float, progress, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    # The users are seeded as risky, so the polling reconciler would open their incidents on
    # its own schedule, before their alert is sent: it is switched off for this measurement.
    settings = {"AzureWebJobs.poll_reconciler.Disabled": "true", **(overrides or {})}
    with LocalStack(overrides=settings) as stack:
        sim, conn = stack.simulator.client, stack.azurite.connection_string
        users = sim.add_users(alerts, prefix="lat", compromised=True)
        if latency_ms:
            sim.set_faults({svc: {"latency_ms": latency_ms, "latency_jitter_ms": latency_ms * 0.2}
                            for svc in ("graph", "exo")})
        time.sleep(gap_s)  # let the listeners back off: the first alert meets an idle host too
        sent: dict[str, float] = {}
        for user in users:
            sent[user["id"]] = now()
            asyncio.run(inject(conn, [user], "latency"))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rows = [r for r in asyncio.run(incidents(conn)) if r.get("user_key") == user["id"]]
                if rows and rows[0].get("state") in SETTLED_INCIDENT_STATES:
                    break
                time.sleep(0.25)
            progress(f"alert {len(sent)}/{alerts} terminal after {now() - sent[user['id']]:.2f}s")
            time.sleep(gap_s)
        rows = {r["user_key"]: r for r in asyncio.run(incidents(conn))}
        contained = containment_times(sim.mutations(), set(sent))
    to_contained = [contained[u] - t for u, t in sent.items() if u in contained]
    to_terminal = [rows[u]["_updated"] - t for u, t in sent.items()
                   if u in rows and rows[u].get("state") in SETTLED_INCIDENT_STATES and rows[u].get("_updated")]
    return {
        "alerts": alerts,
        "gap_s": gap_s,
        "latency_ms": latency_ms,
        "contained": len(to_contained),
        "terminal": len(to_terminal),
        "alert_to_contained_s": _summary(to_contained),
        "alert_to_terminal_s": _summary(to_terminal),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--gap-s", type=float, default=3.0, help="idle seconds between alerts")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="app setting override for the run (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args.alerts, args.gap_s, args.latency_ms, progress, dict(i.split("=", 1) for i in args.set))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["terminal"] == args.alerts else 1


if __name__ == "__main__":
    sys.exit(main())
