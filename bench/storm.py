"""Storm: N users flagged at once against Graph-like latency and throttling. Prints JSON.

    python -m bench.storm [--users N] [--rate R] [--latency-ms L] [--naive-sample K] [--instances I] [--json]

The tenant simulator adds L ms to every Graph / Exchange call and throttles each service
with a token bucket of R requests/s (429 + Retry-After beyond it). N incident requests go
on the alerts queue at once; the run ends when every incident is terminal.

- contained_s: until the last user had both the password reset and the session revoke
  applied (times from the simulator's mutation log);
- terminal_s: until the last incident row became terminal (times from Table storage);
- floor_s: the throttle floor, max over services of (calls that got through / R): no
  responder can make those calls faster than the bucket lets them through;
- naive_s: the obvious script (one user at a time, each call awaited, a 429 waited out)
  on a sample of K more users with the same simulator settings, scaled linearly to N;
- peak_rss_mb: the largest peak resident set of the Functions host's processes;
- host_cpu_s / azurite_cpu_s / simulator_cpu_s: CPU seconds each part of the stack used
  during the run, and stack_cpu_busy_pct: their sum over (wall time x cores);
- instances: local hosts sharing the storage (as Flex Consumption scales out); host_cpu_s
  is summed over them, peak_rss_mb is the largest of them.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
from typing import Any

from bench.common import containment_times, cpu_seconds, incidents, inject, now, peak_rss_mb, tree_cpu_seconds
from localdev.stack import LocalStack
from shared.states import SETTLED_INCIDENT_STATES

THROTTLED = ("graph", "exo")


def throttle(rate: float, latency_ms: float) -> dict[str, Any]:
    spec = {"latency_ms": latency_ms, "latency_jitter_ms": latency_ms * 0.2, "rate_per_s": rate, "burst": rate}
    return {svc: dict(spec) for svc in THROTTLED}


async def naive_responder(env: dict[str, str], users: list[dict]) -> dict[str, Any]:
    """The obvious script: for each user in turn, every playbook call awaited one after another.

    It uses the same adapters (msgraph-sdk, Exchange InvokeCommand, managed identity), which
    wait out a 429 for its Retry-After, and makes the calls the playbook makes on its main
    path; it keeps no ledger and runs no checks, so it is if anything flattered.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from shared.adapters.credentials import build_credential
        from shared.adapters.exchange import ExchangeAdapter
        from shared.adapters.graph import GraphAdapter
        from shared.passwords import generate_password

        credential = build_credential()
        graph = GraphAdapter(credential, env["GRAPH_BASE_URL"], 30.0)
        exo = ExchangeAdapter(credential, env["EXO_BASE_URL"], env["TENANT_ID"], env["TENANT_DOMAIN"], 30.0)
        per_user: list[float] = []
        contained: list[float] = []
        try:
            for user in users:
                uid, upn = user["id"], user["userPrincipalName"]
                t0 = time.monotonic()
                # evidence
                await graph.get_user(uid)
                await graph.list_auth_methods(uid)
                rules = await graph.list_message_rules(uid)
                await graph.get_risky_user(uid)
                await graph.list_risk_detections(uid)
                await exo.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True})
                mailbox = (await exo.invoke("Get-Mailbox", {"Identity": upn}) or [{}])[0]
                blocked = await exo.invoke("Get-BlockedSenderAddress", {"SenderAddress": upn})
                # contain
                await graph.reset_password(uid, generate_password())
                await graph.revoke_sessions(uid)
                contained.append(time.monotonic() - t0)
                # MFA, mailbox, sender, audit, close
                await graph.add_group_member(env["MFA_GROUP_ID"], uid)
                for rule in rules:
                    actions = rule.get("actions") or {}
                    if rule.get("isEnabled") and any(actions.get(k) for k in ("forwardTo", "redirectTo", "forwardAsAttachmentTo", "delete", "moveToFolder")):
                        await graph.disable_message_rule(uid, rule["id"])
                if mailbox.get("ForwardingSmtpAddress") or mailbox.get("ForwardingAddress"):
                    await exo.invoke("Set-Mailbox", {"Identity": upn, "ForwardingSmtpAddress": None,
                                                     "ForwardingAddress": None, "DeliverToMailboxAndForward": False})
                if blocked:
                    await exo.invoke("Remove-BlockedSenderAddress", {"SenderAddress": upn})
                await exo.invoke("Set-Mailbox", {"Identity": upn, "AuditEnabled": True})
                await graph.confirm_compromised([uid])
                await graph.send_mail(env["NOTIFY_SENDER"], env["SOC_MAILBOX"], f"Compromised account {upn} contained",
                                      f"{upn} was contained by the naive script.")
                per_user.append(time.monotonic() - t0)
        finally:
            await graph.close()
            await exo.close()
            await credential.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"per_user_s": per_user, "contained_s": contained}


def _calls(sim, since: int) -> dict[str, collections.Counter]:
    counts: dict[str, collections.Counter] = {svc: collections.Counter() for svc in ("graph", "exo", "token")}
    for entry in sim.requests(since=since):
        counts.setdefault(entry["service"], collections.Counter())[entry["status"]] += 1
    return counts


def run(users: int, rate: float, latency_ms: float, naive_sample: int, timeout_s: float, progress,
        overrides: dict[str, str] | None = None, instances: int = 1) -> dict[str, Any]:
    settings = {"STORM_THRESHOLD": str(users * 2 + 100), "STORM_SOURCE_QUOTA": "0"}  # containment, not the storm breaker
    settings.update(overrides or {})
    with LocalStack(overrides=settings, instances=instances) as stack:
        sim, conn = stack.simulator.client, stack.azurite.connection_string
        storm_users = sim.add_users(users, prefix="storm", compromised=True)
        naive_users = sim.add_users(naive_sample, prefix="naive", compromised=True) if naive_sample else []
        ids = {u["id"] for u in storm_users}
        sim.set_faults(throttle(rate, latency_ms))
        since = max((e["seq"] for e in sim.requests(limit=1)), default=0)
        host_pids = stack.host_pids
        cpu0 = sum(cpu_seconds(pid) or 0 for pid in host_pids)
        others = {"azurite": stack.azurite.pid, "simulator": stack.simulator.pid}
        others0 = {name: tree_cpu_seconds(pid) for name, pid in others.items()}
        t0 = now()
        asyncio.run(inject(conn, storm_users, "storm"))
        progress(f"{users} alerts queued in {now() - t0:.1f}s; {rate:g} req/s per service, {latency_ms:g} ms latency")
        deadline = time.monotonic() + timeout_s
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = [r for r in asyncio.run(incidents(conn)) if r.get("user_key") in ids]
            terminal = [r for r in rows if r.get("state") in SETTLED_INCIDENT_STATES]
            progress(f"t={now() - t0:6.1f}s incidents={len(rows)} terminal={len(terminal)}")
            if len(terminal) >= users:
                break
            time.sleep(2)
        wall = now() - t0
        cpu = sum(cpu_seconds(pid) or 0 for pid in host_pids)
        others_cpu = {name: round(tree_cpu_seconds(pid) - others0[name], 1) for name, pid in others.items()}
        rss = max((peak_rss_mb(pid) or 0 for pid in host_pids), default=None)
        calls = _calls(sim, since)
        contained = containment_times(sim.mutations(), ids)
        terminal_rows = [r for r in rows if r.get("state") in SETTLED_INCIDENT_STATES]
        naive = None
        if naive_users:
            progress(f"naive script on {len(naive_users)} users ...")
            naive = asyncio.run(naive_responder(stack.env, naive_users))
    served = {svc: sum(c for status, c in calls[svc].items() if status != 429) for svc in THROTTLED}
    floor = max(served[svc] / rate for svc in THROTTLED)
    terminal_s = max((r["_updated"] for r in terminal_rows), default=t0) - t0 if len(terminal_rows) >= users else None
    contained_s = max(contained.values()) - t0 if len(contained) >= users else None
    naive_s = sum(naive["per_user_s"]) / len(naive["per_user_s"]) * users if naive else None
    states = collections.Counter(r.get("state") for r in rows)
    return {
        "users": users,
        "instances": instances,
        "rate_per_s": rate,
        "latency_ms": latency_ms,
        "contained_s": round(contained_s, 1) if contained_s is not None else None,
        "contained_users": len(contained),
        "terminal_s": round(terminal_s, 1) if terminal_s is not None else None,
        "states": dict(states),
        "floor_s": round(floor, 1),
        "ratio_to_floor": round(terminal_s / floor, 2) if terminal_s is not None and floor else None,
        "contained_ratio_to_floor": round(contained_s / floor, 2) if contained_s is not None and floor else None,
        "naive_s": round(naive_s, 1) if naive_s is not None else None,
        "naive_sampled_users": len(naive_users),
        "naive_per_user_s": round(naive_s / users, 2) if naive_s is not None else None,
        "speedup_vs_naive": round(naive_s / terminal_s, 1) if naive_s and terminal_s else None,
        "graph_calls": served["graph"] + calls["graph"][429],
        "exo_calls": served["exo"] + calls["exo"][429],
        "calls_per_user": round((served["graph"] + served["exo"]) / users, 1),
        "throttled_429s": sum(calls[svc][429] for svc in THROTTLED),
        "host_cpu_s": round(cpu - cpu0, 1),
        "host_cpu_ms_per_user": round((cpu - cpu0) * 1000 / users),
        "azurite_cpu_s": others_cpu["azurite"],
        "simulator_cpu_s": others_cpu["simulator"],
        # Share of the machine's cores busy with the stack during the run (the benchmark's
        # own polling not counted): near 100% means CPU, not the throttle, sets the pace.
        "stack_cpu_busy_pct": round(100 * (cpu - cpu0 + sum(others_cpu.values())) / (wall * (os.cpu_count() or 1))),
        "peak_rss_mb": rss,
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per service before 429s")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--naive-sample", type=int, default=10, help="users the sequential script runs on")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--instances", type=int, default=1, help="local hosts sharing the storage (scale-out)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="app setting override for the run (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args.users, args.rate, args.latency_ms, args.naive_sample, args.timeout, progress, overrides, args.instances)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["terminal_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
