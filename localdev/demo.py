"""``responder demo``: one real alert through the real queues into the real steps.

Starts the local stack, puts incident requests on the alerts queue exactly as a person
would with Storage Explorer (the compromised demo user, and the break-glass account that
policy must hold) — or, with ``--eventhub FILE``, delivers an Entra/Defender Event Hub
batch to the stream function instead — follows the incidents from Table storage until they are terminal,
prints the ledger, checks the simulator's request log (exactly one password PATCH and
one revoke for the demo user; nothing changed for the break-glass account), stops
everything, and exits 0 only if all of that holds.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from shared.bootstrap import open_storage
from shared.cli import compact, render_incident
from shared.model import IncidentRequest
from shared.normalize import detect_source, parse_payload
from shared.ports import LedgerPort
from shared.states import SETTLED_INCIDENT_STATES, TERMINAL_INCIDENT_STATES, IncidentState, StepState
from shared.status import incident_view

from .securescore import stored_summary
from .stack import SEED_FILE, LocalStack

ProgressFn = Callable[[str], None]


def demo_users(seed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    users = seed["users"]
    demo = next(u for u in users if u.get("demo") or u["userPrincipalName"].startswith("adele.vance@"))
    glass = next(u for u in users if "breakglass" in u["userPrincipalName"])
    return demo, glass


async def _find_incident(ledger: LedgerPort, user_key: str) -> str | None:
    found = await ledger.get_open(user_key)
    return found[0]["incident_id"] if found else None


async def _follow(stack: LocalStack, requests: list[IncidentRequest], expect_terminal: dict[str, frozenset[IncidentState]],
                  timeout_s: float, progress: ProgressFn, eventhub_payload: bytes | None = None) -> dict[str, dict[str, Any]]:
    storage = open_storage({"AzureWebJobsStorage": stack.azurite.connection_string})
    ledger, queues = storage.ledger, storage.queues
    views: dict[str, dict[str, Any]] = {}
    try:
        if eventhub_payload is None:
            await queues.ensure(["alerts"])
            for request in requests:
                await queues.send(stack.env.get("ALERTS_QUEUE", "alerts"), request.to_json())
                progress(f"alert queued for {request.user_key}")
        else:
            function = "defender_stream" if detect_source(eventhub_payload) == "defender-stream" else "entra_stream"
            await asyncio.to_thread(_invoke, stack, function, eventhub_payload)
            progress(f"Event Hub batch delivered to {function} ({len(requests)} user(s))")
        deadline = time.monotonic() + timeout_s
        seen: dict[tuple[str, str], str] = {}
        while time.monotonic() < deadline:
            done = True
            for request in requests:
                incident_id = await _find_incident(ledger, request.user_key)
                if incident_id is None:
                    done = False
                    continue
                view = await incident_view(ledger, incident_id)
                if view is None:
                    done = False
                    continue
                views[request.user_key] = view
                for step in view["steps"]:
                    key = (incident_id, step["name"])
                    if step["state"] != "pending" and seen.get(key) != step["state"]:
                        seen[key] = step["state"]
                        progress(f"{request.user_key:<40} {step['name']:<16} {step['state']}")
                if view["state"] not in expect_terminal[request.user_key]:
                    done = False
            if done:
                return views
            await asyncio.sleep(0.25)
        return views
    finally:
        await storage.close()


def _invoke(stack: LocalStack, function: str, payload: bytes) -> None:
    """Deliver one Event Hub event to a function, as the platform would (local admin API)."""
    body = json.dumps({"input": json.dumps([json.loads(payload)])}).encode()
    request = urllib.request.Request(f"{stack.host.url}/admin/functions/{function}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "x-functions-key": stack.host.master_key})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status not in (200, 202):
            raise RuntimeError(f"invoking {function} answered {response.status}")


def _view_for(views: dict[str, dict], user: dict) -> dict:
    for view in views.values():
        if view.get("user_id") == user["id"] or view.get("user") == user["userPrincipalName"].lower():
            return view
    return {}


def _checks(stack: LocalStack, demo: dict, glass: dict, views: dict[str, dict]) -> list[dict[str, Any]]:
    client = stack.simulator.client
    log = client.requests()
    demo_id, glass_id = demo["id"], glass["id"]

    def hits(method: str, suffix: str, user_id: str) -> int:
        return sum(
            1 for r in log
            if r.get("service") == "graph" and r.get("method") == method and r.get("status", 0) < 300
            and r.get("path", "").rstrip("/").endswith(suffix.format(id=user_id))
        )

    demo_view = _view_for(views, demo)
    glass_view = _view_for(views, glass)
    # The simulator's own record of state changes, not our guess from request methods
    # (checkMemberGroups is a POST that changes nothing).
    glass_changes = [m for m in client.mutations() if glass_id in json.dumps(m) or glass["userPrincipalName"].lower() in json.dumps(m).lower()]
    state = client.user_state(demo["userPrincipalName"])
    outbox = client.state(users=False).get("outbox", [])
    attacker = [m["id"] for m in demo.get("authMethods", []) if "attacker" in m.get("_note", "")]
    malicious = [r["displayName"] for r in demo.get("inboxRules", []) if "malicious" in r.get("_note", "")]
    rules = {r["displayName"]: r for r in state["rules"]}
    remaining_ids = {m["id"] for m in state["auth_methods"]}
    after = [
        ("password changed exactly once", state["password_changes"] == 1, state["password_changes"]),
        ("sessions revoked", state["revocations"] >= 1, state["revocations"]),
        ("MFA enforced (member of the Conditional Access group)", bool(state["groups"]), state["groups"]),
        ("attacker's authenticator removed", bool(attacker) and not (set(attacker) & remaining_ids), attacker),
        ("malicious inbox rules disabled", all(rules[n]["isEnabled"] is False for n in malicious) and bool(malicious), malicious),
        ("hidden system rules left alone", all(r["isEnabled"] for r in state["rules"] if r.get("system")), None),
        ("mailbox forwarding cleared", not state["mailbox"]["ForwardingSmtpAddress"], state["mailbox"]["ForwardingSmtpAddress"]),
        ("user unblocked", state["blocked"] is False, state["blocked"]),
        ("mailbox audit on, no bypass", state["mailbox"]["AuditEnabled"] is True and state["mailbox"]["AuditBypassEnabled"] is False,
         {k: state["mailbox"][k] for k in ("AuditEnabled", "AuditBypassEnabled")}),
        ("risky user confirmed compromised", state["risk"]["riskState"] == "confirmedCompromised", state["risk"]["riskState"]),
        ("SOC summary mailed", len(outbox) == 1, len(outbox)),
    ]
    checks = [{"check": "tenant: " + name, "ok": ok, "value": value} for name, ok, value in after]
    checks += [
        {"check": "demo incident succeeded", "ok": demo_view.get("state") == IncidentState.SUCCEEDED, "value": demo_view.get("state")},
        {"check": "demo reset-password step succeeded",
         "ok": any(s["name"] == "reset-password" and s["state"] == StepState.SUCCEEDED for s in demo_view.get("steps", [])),
         "value": next((s["state"] for s in demo_view.get("steps", []) if s["name"] == "reset-password"), None)},
        {"check": "exactly one password PATCH for the demo user", "ok": hits("PATCH", "/users/{id}", demo_id) == 1,
         "value": hits("PATCH", "/users/{id}", demo_id)},
        {"check": "exactly one session revoke for the demo user", "ok": hits("POST", "/users/{id}/revokeSignInSessions", demo_id) == 1,
         "value": hits("POST", "/users/{id}/revokeSignInSessions", demo_id)},
        {"check": "break-glass incident held", "ok": glass_view.get("state") == IncidentState.HELD, "value": glass_view.get("state")},
        {"check": "nothing changed for the break-glass account", "ok": not glass_changes, "value": len(glass_changes)},
    ]
    return checks


def run_demo(json_output: bool = False, timeout_s: float = 180.0, eventhub_file: str | None = None) -> int:
    """Run the demo; with ``eventhub_file`` the alerts arrive as an Event Hub batch instead."""
    seed = json.loads(SEED_FILE.read_text())
    demo, glass = demo_users(seed)
    payload = Path(eventhub_file).read_bytes() if eventhub_file else None

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr if json_output else sys.stdout, flush=True)

    started = time.monotonic()
    progress("starting Azurite, tenant simulator and the local Functions host ...")
    with LocalStack() as stack:
        progress(f"stack up in {time.monotonic() - started:.1f}s (functions {stack.host.url}/api)")
        if payload is None:
            requests = [
                IncidentRequest(user_id=None, user_principal_name=demo["userPrincipalName"], source="manual",
                                risk_level="high", alert_ids=("demo-alert-1",), reason="demo: compromised mailbox"),
                IncidentRequest(user_id=None, user_principal_name=glass["userPrincipalName"], source="manual",
                                risk_level="high", alert_ids=("demo-alert-2",), reason="demo: break-glass account flagged"),
            ]
        else:
            requests = parse_payload(payload, min_risk_level=stack.env.get("MIN_RISK_LEVEL", "medium")).requests
        # The demo user must finish; any other user (the break-glass account) may also stop at held.
        must_finish = {demo["id"], demo["userPrincipalName"]}
        expect = {r.user_key: TERMINAL_INCIDENT_STATES if r.user_key in must_finish else SETTLED_INCIDENT_STATES
                  for r in requests}
        views = asyncio.run(_follow(stack, requests, expect, timeout_s, progress, payload))
        checks = _checks(stack, demo, glass, views)
        score = stored_summary(stack.azurite.connection_string)
        checks.append({"check": "secure score snapshot stored", "ok": bool(score and score["days"] >= 1),
                       "value": score["days"] if score else 0})
    ok = all(c["ok"] for c in checks)
    elapsed = round(time.monotonic() - started, 1)
    if json_output:
        print(json.dumps({"ok": ok, "seconds": elapsed, "incidents": [compact(v) for v in views.values()], "checks": checks,
                          "secure_score": {k: score[k] for k in ("current", "max", "percentage", "days")} if score else None},
                         indent=2))
    else:
        print()
        for view in views.values():
            print(render_incident(view))
            print()
        for check in checks:
            print(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['check']} ({check['value']})")
        print(f"\ndemo {'succeeded' if ok else 'FAILED'} in {elapsed}s")
    return 0 if ok else 1
