"""Storm: N users flagged at once against Microsoft's throttles. Prints JSON.

    python -m bench.storm [--users N] [--limits published|none] [--write-share S] [--latency-ms L]
                          [--limit NAME=VALUE ...] [--rate R] [--instances I] [--set NAME=VALUE ...]
                          [--profile FILE] [--json]
    python bench/storm.py ...            (the same)

The tenant simulator throttles as Microsoft does (localdev/simulator/limits.py): ``--limits
published`` is Graph's service-specific limits per service and scope (identity reads in resource
units, identity writes per app + tenant and per tenant, Identity Protection 1 request/s per
tenant, Outlook per mailbox, security, directory audits) and an assumed limit for the Exchange
admin API; ``--write-share S`` gives this app the share S of the tenant's 18,000 writes per 300 s
(the other apps of the tenant use the rest) and tells the responder the same through its
setting ``PACING_DIRECTORY_WRITE_SHARE`` (``--no-tell-share``: it must find out from 429s);
``--limit`` overrides one quota; ``--rate R`` adds the old single token bucket of R requests/s per
service. Every Graph / Exchange call gets L ms of latency (±20%). N incident requests go on the
alerts queue at once; the run ends when every incident is terminal.

stdout is exactly: users; contained_s (until the last user had both the password reset and the
session revoke applied: the simulator's mutation log); containment_floor_s (the least time the
calls made for each user before that user was contained need under the profile's quotas: for
each quota, their summed cost / its rate, the largest); contained_ratio; terminal_s (until the
last incident row became terminal: Table storage); terminal_floor_s (the same over every call the
simulator served, per quota and key, concurrency quotas by slot-seconds / slots); terminal_ratio;
throttled_share (429s / Graph + Exchange requests); calls_per_user (served Graph + Exchange
requests); idp_calls_per_user (Identity Protection requests, 429s included); host_cpu_ms_per_user;
storage_ops_per_user (HTTP requests the hosts sent to storage during the run, queue polling
included: a counting proxy in front of Azurite); peak_rss_mb. The details (per-quota floors and
429s, CPU of Azurite and the simulator, the machine's load) go to stderr as one JSON line.
``--profile FILE`` samples the (first) host with py-spy (requirements-dev.txt) for the whole run
and writes its collapsed stacks to FILE; py-spy's own CPU is not the host's.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/storm.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    containment_times,
    cpu_seconds,
    incidents,
    inject,
    now,
    parse_iso,
    peak_rss_mb,
    step_rows,
    tree_cpu_seconds,
    wakeups,
)
from localdev.simulator.limits import Limits, parse_overrides  # noqa: E402
from localdev.stack import LocalStack  # noqa: E402
from shared.states import SETTLED_INCIDENT_STATES  # noqa: E402

SERVICES = ("graph", "exo")
TENANT_WRITES = 18_000  # per 300 s, every app of the tenant together (throttling-limits.md)
WRITE_SHARE_SETTING = "PACING_DIRECTORY_WRITE_SHARE"
KEYS = ("users", "contained_s", "containment_floor_s", "contained_ratio", "terminal_s", "terminal_floor_s",
        "terminal_ratio", "throttled_share", "calls_per_user", "idp_calls_per_user", "host_cpu_ms_per_user",
        "storage_ops_per_user", "peak_rss_mb")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def limits_config(profile: str, write_share: float, overrides: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {"profile": profile}
    changes = parse_overrides(overrides)
    if profile == "published" and write_share != 1.0:
        changes.setdefault("dir-write-tenant", {}).setdefault("limit", TENANT_WRITES * write_share)
    if changes:
        config["overrides"] = changes
    return config


def latency_faults(latency_ms: float, rate: float) -> dict[str, Any]:
    spec: dict[str, Any] = {"latency_ms": latency_ms, "latency_jitter_ms": latency_ms * 0.2}
    if rate:
        spec.update(rate_per_s=rate, burst=rate)
    return {svc: dict(spec) for svc in SERVICES}


def entry_user(entry: dict[str, Any]) -> str | None:
    """The user a logged request was about: the simulator's resolved user, else a GUID in its $filter."""
    if entry.get("user"):
        return str(entry["user"]).lower()
    found = _GUID.search(str((entry.get("query") or {}).get("$filter") or ""))
    return found.group(0).lower() if found else None


_ID = re.compile(r"/[0-9a-fA-F-]{36}|/[^/]+@[^/]+|/[A-Za-z0-9_-]{20,}(?=/|$)|/(?=[^/]*\d)[A-Za-z0-9+_=-]{8,}(?=/|$)")


def call_kind(entry: dict) -> str:
    """A logged request's kind: Graph method + path with ids elided, or the Exchange cmdlet."""
    if entry.get("cmdlet"):
        return f"exo {entry['cmdlet']}"
    return f"{entry['service']} {entry['method']} {_ID.sub('/{id}', entry['path'])}"


def charges_of(entry: dict, limits: Limits) -> list:
    """The quotas a logged request drew on, as the simulator classified it."""
    if entry["service"] == "graph":
        return limits.classify_graph(entry["method"], entry["path"].split("/")[2:], entry.get("query") or {})
    return limits.classify_exo(entry.get("cmdlet"))


def before_containment(entry: dict, contained: dict[str, float]) -> bool:
    """Whether the request was made for a user up to that user's containment."""
    user = entry_user(entry)
    return user in contained and parse_iso(entry["time"]) <= contained[user] + 0.001


def call_kinds(entries: list[dict], users: int, top: int = 40) -> dict[str, float]:
    """Calls per user by kind (call_kind), most first: where a storm's requests go, to see what a
    change added or saved."""
    kinds = collections.Counter(call_kind(e) for e in entries)
    return {k: round(n / users, 2) for k, n in kinds.most_common(top)}


def write_timeline(entries: list[dict], contained: dict[str, float], t0: float, limits: Limits,
                   step_s: float = 10.0) -> dict[str, list[int]]:
    """Per ``step_s`` of the run: users contained, and the tenant-write quota's writes split into those
    made for a user before that user was contained and the rest (later steps' writes, which delay the
    containment of the users still waiting when they take the quota's tokens)."""
    end = max([*contained.values(), t0]) - t0
    slots = int(end // step_s) + 1
    out = {"contained": [0] * slots, "containment_writes": [0] * slots, "other_writes": [0] * slots}
    for at in contained.values():
        out["contained"][min(slots - 1, int((at - t0) // step_s))] += 1
    for entry in entries:
        if entry["status"] == 429 or entry["service"] != "graph":
            continue
        at = parse_iso(entry["time"]) - t0
        if at > end:
            continue
        if not any(c.quota.name == "dir-write-tenant" for c in charges_of(entry, limits)):
            continue
        early = before_containment(entry, contained)
        out["containment_writes" if early else "other_writes"][min(slots - 1, int(at // step_s))] += 1
    return out


def step_timeline(rows: list[dict], t0: float) -> dict[str, list[float]]:
    """Per step: when the 1st, 10th, 50th and 100th incident started it, and the median time it took
    (seconds of the run): where the pipeline's start-up goes before the first password resets."""
    started: dict[str, list[float]] = collections.defaultdict(list)
    took: dict[str, list[float]] = collections.defaultdict(list)
    for row in rows:
        if not row.get("started_at"):
            continue
        begin = parse_iso(row["started_at"])
        started[row["RowKey"]].append(round(begin - t0, 1))
        if row.get("finished_at"):
            took[row["RowKey"]].append(parse_iso(row["finished_at"]) - begin)
    out = {}
    for step, times in started.items():
        times.sort()
        picks = [times[min(i, len(times) - 1)] for i in (0, 9, 49, 99)]
        durations = sorted(took[step])
        out[step] = picks + [round(durations[len(durations) // 2], 2) if durations else -1.0]
    return out


def throttled_calls(entries: list[dict], t0: float) -> dict[str, list[float]]:
    """The 429s by kind of call, each with its second of the run: which quota a storm ran into, and when."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    for e in entries:
        if e["status"] == 429:
            out[call_kind(e)].append(round(parse_iso(e["time"]) - t0, 1))
    return dict(out)


def containment_floor(entries: list[dict], contained: dict[str, float], limits: Limits) -> tuple[float, dict]:
    """Per quota: the cost of the calls made for each user up to that user's containment, over the quota's rate."""
    cost: dict[str, float] = collections.defaultdict(float)
    for entry in entries:
        if entry["status"] == 429 or not before_containment(entry, contained):
            continue
        for charge in charges_of(entry, limits):
            if not charge.quota.concurrent:
                cost[charge.quota.name] += charge.cost
    floors = {}
    for name, spent in cost.items():
        quota = limits.quota(name)
        if quota is not None:
            floors[name] = round(spent / quota.rate, 1)
    return max(floors.values(), default=0.0), floors


def start_profiler(pid: int, out: str) -> subprocess.Popen | None:
    """py-spy sampling ``pid`` until stopped (collapsed stacks to ``out``), or None when it is not installed."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    # --gil: only the thread holding the GIL is sampled, so the stacks are where the host's CPU goes (without
    # it the event loop's waits in epoll count as work).
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--gil", "--format", "raw",
                             "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(users: int, profile: str, write_share: float, latency_ms: float, overrides: list[str], rate: float,
        timeout_s: float, progress, settings_overrides: dict[str, str] | None = None, instances: int = 1,
        tell_share: bool = True, profile_out: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    # measuring containment, not the storm breaker (nor its per-source quota)
    settings = {"STORM_THRESHOLD": str(users * 2 + 100), "STORM_SOURCE_QUOTA": "0"}
    if tell_share:
        settings[WRITE_SHARE_SETTING] = str(write_share)
    settings.update(settings_overrides or {})
    config = limits_config(profile, write_share, overrides)
    with LocalStack(overrides=settings, instances=instances, limits=config, count_storage=True) as stack:
        sim, conn = stack.simulator.client, stack.azurite.connection_string
        storm_users = sim.add_users(users, prefix="storm", compromised=True)
        ids = {u["id"] for u in storm_users}
        tenant_users = sim.health()["users"]
        sim.set_faults(latency_faults(latency_ms, rate))
        time.sleep(2.0)
        idle0, idle_t0 = stack.storage_counter.total(), time.monotonic()
        idle_cpu0 = sum(cpu_seconds(pid) or 0 for pid in stack.host_pids)
        time.sleep(3.0)
        idle_rate = (stack.storage_counter.total() - idle0) / (time.monotonic() - idle_t0)
        # what the hosts spend doing nothing but poll their queues (maxPollingInterval): in Azure the
        # Functions host (not the Python worker) does that polling
        idle_cpu_rate = (sum(cpu_seconds(pid) or 0 for pid in stack.host_pids) - idle_cpu0) / (time.monotonic() - idle_t0)
        sim.reset_limit_counters()
        since = max((e["seq"] for e in sim.requests(limit=1)), default=0)
        host_pids = stack.host_pids
        cpu0 = sum(cpu_seconds(pid) or 0 for pid in host_pids)
        wakes0 = sum(wakeups(pid) or 0 for pid in host_pids)
        others = {"azurite": stack.azurite.pid, "simulator": stack.simulator.pid}
        others0 = {name: tree_cpu_seconds(pid) for name, pid in others.items()}
        ops0, kinds0 = stack.storage_counter.total(), stack.storage_counter.kinds()
        load0 = os.getloadavg()
        profiler = start_profiler(host_pids[0], profile_out) if profile_out else None
        t0 = now()
        asyncio.run(inject(conn, storm_users, "storm"))
        progress(f"{users} alerts queued in {now() - t0:.1f}s; limits {profile}, write share {write_share:g}, "
                 f"{latency_ms:g} ms latency")
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
        stop_profiler(profiler)
        ops = stack.storage_counter.total() - ops0
        kinds = {k: n - kinds0.get(k, 0) for k, n in stack.storage_counter.kinds().items()}
        load1 = os.getloadavg()
        cpu = sum(cpu_seconds(pid) or 0 for pid in host_pids)
        wakes = sum(wakeups(pid) or 0 for pid in host_pids) - wakes0
        others_cpu = {name: round(tree_cpu_seconds(pid) - others0[name], 1) for name, pid in others.items()}
        rss = max((peak_rss_mb(pid) or 0 for pid in host_pids), default=None)
        entries = sim.requests(since=since)
        limits_now = sim.limits()
        contained = containment_times(sim.mutations(), ids)
        steps_run = asyncio.run(step_rows(conn))
        terminal_rows = [r for r in rows if r.get("state") in SETTLED_INCIDENT_STATES]

    statuses = {svc: collections.Counter(e["status"] for e in entries if e["service"] == svc) for svc in SERVICES}
    requests_total = sum(sum(c.values()) for c in statuses.values())
    throttled = sum(c[429] for c in statuses.values())
    served = requests_total - throttled
    idp_calls = sum(1 for e in entries if e["service"] == "graph" and "/identityprotection/" in e["path"].lower())
    model = Limits(config, user_count=lambda: tenant_users)
    contain_floor, contain_floors = containment_floor(entries, contained, model)
    quota_floors = {name: q["floor_s"] for name, q in limits_now["quotas"].items()}
    if rate:  # the old single bucket per service
        for svc in SERVICES:
            contain_floors.setdefault(f"{svc}-rate", 0.0)
            quota_floors[f"{svc}-rate"] = round((sum(statuses[svc].values()) - statuses[svc][429]) / rate, 1)
    terminal_floor = max(quota_floors.values(), default=0.0)
    terminal_s = max((r["_updated"] for r in terminal_rows), default=t0) - t0 if len(terminal_rows) >= users else None
    contained_s = max(contained.values()) - t0 if len(contained) >= users else None
    result = {
        "users": users,
        "contained_s": round(contained_s, 1) if contained_s is not None else None,
        "containment_floor_s": round(contain_floor, 1),
        "contained_ratio": round(contained_s / contain_floor, 2) if contained_s is not None and contain_floor else None,
        "terminal_s": round(terminal_s, 1) if terminal_s is not None else None,
        "terminal_floor_s": round(terminal_floor, 1),
        "terminal_ratio": round(terminal_s / terminal_floor, 2) if terminal_s is not None and terminal_floor else None,
        "throttled_share": round(throttled / requests_total, 4) if requests_total else 0.0,
        "calls_per_user": round(served / users, 1),
        "idp_calls_per_user": round(idp_calls / users, 3),
        "host_cpu_ms_per_user": round((cpu - cpu0) * 1000 / users),
        "storage_ops_per_user": round(ops / users, 1),
        "peak_rss_mb": rss,
    }
    detail = {
        "limits": profile, "write_share": write_share, "latency_ms": latency_ms, "rate_per_s": rate,
        "instances": instances, "tell_share": tell_share, "overrides": config.get("overrides", {}),
        "tenant_users": tenant_users, "wall_s": round(wall, 1), "states": dict(collections.Counter(r.get("state") for r in rows)),
        "containment_floors_s": contain_floors, "terminal_floors_s": quota_floors,
        "throttled_by_quota": {n: c["throttled"] for n, c in limits_now["counters"].items() if c["throttled"]},
        "requests": {svc: sum(c.values()) for svc, c in statuses.items()}, "throttled": throttled,
        "idp_calls": idp_calls, "calls_per_user_by_kind": call_kinds(entries, users),
        "throttled_calls": throttled_calls(entries, t0),
        "until_contained_by_10s": write_timeline(entries, contained, t0, model),
        "steps_started_s": step_timeline(steps_run + [{"RowKey": "(intake: created)", "started_at": r.get("created_at")}
                                                      for r in rows], t0), "host_cpu_s": round(cpu - cpu0, 1), "azurite_cpu_s": others_cpu["azurite"],
        "simulator_cpu_s": others_cpu["simulator"],
        "stack_cpu_busy_pct": round(100 * (cpu - cpu0 + sum(others_cpu.values())) / (wall * (os.cpu_count() or 1))),
        "storage_ops": ops, "storage_idle_ops_per_s": round(idle_rate, 1),
        "host_idle_cpu_ms_per_s": round(idle_cpu_rate * 1000, 1),
        "host_wakeups_per_user": round(wakes / users, 1),
        "host_cpu_ms_per_user_beyond_idle_polling": round(((cpu - cpu0) - idle_cpu_rate * wall) * 1000 / users),
        "storage_ops_per_user_by_kind": {k: round(n / users, 2) for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])
                                         if n / users >= 0.01},
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1],
    }
    return result, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--limits", choices=("published", "none"), default="published")
    parser.add_argument("--write-share", type=float, default=1.0,
                        help="this app's share of the tenant's directory write quota (the other apps use the rest)")
    parser.add_argument("--no-tell-share", action="store_true",
                        help=f"do not set {WRITE_SHARE_SETTING}: the responder finds the share from 429s")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="override one quota of the profile (NAME.window_s=... for its window); repeatable")
    parser.add_argument("--rate", type=float, default=0.0, help="also the old single bucket: R requests/s per service")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--instances", type=int, default=1, help="local hosts sharing the storage (scale-out)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="app setting override for the run (repeatable)")
    parser.add_argument("--profile", default=None, metavar="FILE", help="py-spy the host; collapsed stacks to FILE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.write_share <= 1:
        parser.error("--write-share must be in (0, 1]")
    settings = dict(item.split("=", 1) for item in args.set)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result, detail = run(args.users, args.limits, args.write_share, args.latency_ms, args.limit, args.rate,
                         args.timeout, progress, settings, args.instances, not args.no_tell_share, args.profile)
    assert tuple(result) == KEYS
    print("detail: " + json.dumps(detail), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["terminal_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
