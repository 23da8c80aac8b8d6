"""``responder demo``: one real alert through the real queues into the real steps.

Starts the local stack, puts incident requests on the alerts queue exactly as a person
would with Storage Explorer (the compromised demo user, the break-glass account that
policy must hold, an on-premises synced user whose cloud reset Entra refuses, and a Global
Administrator held by role) — or, with ``--eventhub FILE``, delivers an Entra/Defender Event
Hub batch to the stream function instead — follows the incidents from Table storage until they
are terminal (or held), prints the ledger, checks the simulator's request log and state (exactly
one password PATCH and one revoke for the demo user; her attacker's mailbox delegate, SendAs grant,
consented app and trusted sender removed and her legitimate delegate kept, with status and the SOC
mail saying so; nothing changed for the break-glass account; the synced user contained with
"on-premises password reset required"; the admin held with its sessions revoked), then acts as
operators through the app's API the way App Service Authentication fronts it in Azure: no token is
refused, a dev principal with Incident.Read sees the administrator's incident as "protected: yes"
needing two approvers, and one approval by a dev principal leaves it held. It stops everything
and exits 0 only if all of that holds.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
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

from .restamp import restamp
from .securescore import stored_summary
from .stack import SEED_FILE, LocalStack

ProgressFn = Callable[[str], None]


def demo_users(seed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    users = seed["users"]
    demo = next(u for u in users if u.get("demo") or u["userPrincipalName"].startswith("adele.vance@"))
    glass = next(u for u in users if "breakglass" in u["userPrincipalName"])
    return demo, glass


def hard_users(seed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The synced user (cloud reset refused) and the Global Administrator (held by role)."""
    users = seed["users"]
    synced = next(u for u in users if u["userPrincipalName"].startswith("synced.user@"))
    admin = next(u for u in users if u["userPrincipalName"].startswith("admin@"))
    return synced, admin


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


async def _refresh(stack: LocalStack, views: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The incidents as they are now (the operator checks added an approval)."""
    storage = open_storage({"AzureWebJobsStorage": stack.azurite.connection_string})
    try:
        fresh = {}
        for key, view in views.items():
            fresh[key] = await incident_view(storage.ledger, view["incident_id"]) or view
        return fresh
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


def _step(view: dict, name: str) -> dict:
    return next((s for s in view.get("steps", []) if s["name"] == name), {})


def _hard_checks(stack: LocalStack, synced: dict, admin: dict, views: dict[str, dict]) -> list[dict[str, Any]]:
    """The synced user ends contained with an on-premises reset asked for; the admin is held, contained."""
    client = stack.simulator.client
    synced_view, admin_view = _view_for(views, synced), _view_for(views, admin)
    synced_state, admin_state = client.user_state(synced["userPrincipalName"]), client.user_state(admin["userPrincipalName"])
    reset = _step(synced_view, "reset-password").get("detail", {})
    admin_changes = [m["action"] for m in client.mutations() if m.get("user") == admin["id"]]
    mails = [m for m in client.state(users=False).get("outbox", []) if synced["userPrincipalName"] in m.get("subject", "")]
    return [
        {"check": "synced user: incident succeeded (not failed)", "ok": synced_view.get("state") == "succeeded",
         "value": synced_view.get("state")},
        {"check": "synced user: sessions revoked", "ok": synced_state["revocations"] >= 1, "value": synced_state["revocations"]},
        {"check": "synced user: enforce-mfa and clean-mailbox succeeded",
         "ok": all(_step(synced_view, s).get("state") == "succeeded" for s in ("enforce-mfa", "clean-mailbox")),
         "value": [_step(synced_view, s).get("state") for s in ("enforce-mfa", "clean-mailbox")]},
        {"check": "synced user: on-premises password reset required in its record",
         "ok": reset.get("password_reset") == "on-premises password reset required"
         and "ON-PREMISES PASSWORD RESET REQUIRED" in (synced_view.get("action_required") or ""),
         "value": reset.get("password_reset")},
        {"check": "synced user: the SOC mail says so in its subject",
         "ok": any("ON-PREMISES PASSWORD RESET REQUIRED" in m["subject"] for m in mails), "value": len(mails)},
        {"check": "admin: held for approval (not failed)", "ok": admin_view.get("state") == "held",
         "value": admin_view.get("state")},
        {"check": "admin: sessions revoked while held", "ok": admin_state["revocations"] == 1
         and admin_view.get("held_containment") == "sessions revoked", "value": admin_state["revocations"]},
        {"check": "admin: nothing else changed", "ok": admin_changes == ["sessions_revoked"], "value": admin_changes},
    ]


def _api(stack: LocalStack, method: str, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """One call to the local host's API (the local Easy Auth validates the bearer token)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{stack.host.url}/api/{path}", data=b"" if method == "POST" else None,
                                     method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body[:1] == b"{" else {}


def _operator_checks(stack: LocalStack, admin: dict, views: dict[str, dict]) -> list[dict[str, Any]]:
    """Operators act as dev principals (tokens from the simulator); the admin's incident stays held."""
    incident_id = _view_for(views, admin).get("incident_id", "")
    client = stack.simulator.client
    reader = client.operator_token("soc.analyst@contoso.onmicrosoft.com", ["Incident.Read"])
    lead = client.operator_token("soc.lead@contoso.onmicrosoft.com", ["Incident.Read", "Incident.Approve"])
    anonymous, _ = _api(stack, "GET", f"incidents/{incident_id}")
    read_status, view = _api(stack, "GET", f"incidents/{incident_id}", reader)
    refused, _ = _api(stack, "POST", f"incidents/{incident_id}/approve", reader)
    approved, decision = _api(stack, "POST", f"incidents/{incident_id}/approve", lead)
    _, after = _api(stack, "GET", f"incidents/{incident_id}", lead)
    return [
        {"check": "operator API: no token is refused (401)", "ok": anonymous == 401, "value": anonymous},
        {"check": "operator API: a reader sees the admin as protected, needing two approvers",
         "ok": read_status == 200 and str(view.get("protection", "")).startswith("protected: yes")
         and view.get("approvals_required") == 2, "value": view.get("protection")},
        {"check": "operator API: a reader may not approve (403)", "ok": refused == 403, "value": refused},
        {"check": "operator API: one approval (soc.lead) is recorded and the admin stays held",
         "ok": approved == 202 and decision.get("outcome") == "approval-recorded" and after.get("state") == "held"
         and [a.get("upn") for a in after.get("approvals", [])] == ["soc.lead@contoso.onmicrosoft.com"],
         "value": decision.get("outcome")},
    ]


def _foothold_checks(demo: dict, state: dict, view: dict, mails: list[dict]) -> list[tuple[str, bool, Any]]:
    """Issue 17: the attacker's delegate, SendAs, consented app and trusted sender are gone, the legitimate
    delegate stayed, and `responder status` and the SOC mail say what was removed and what needs review."""
    def marked(items: list[dict], word: str) -> list[dict]:
        return [i for i in items if str(i.get("_note", "")).startswith(word)]

    attacker_delegates = {d["user"] for d in marked(demo.get("mailboxPermissions", []), "attacker")}
    legitimate = {d["user"] for d in marked(demo.get("mailboxPermissions", []), "legitimate")}
    delegates = {d["trustee_upn"] for d in state["mailbox_permissions"]}
    attacker_send_as = {d["trustee"] for d in marked(demo.get("sendAs", []), "attacker")}
    trusted = demo.get("junkEmail", {}).get("TrustedSendersAndDomains", [])
    attacker_senders = {t["value"] for t in marked(trusted, "attacker")}
    kept_senders = {t["value"] for t in marked(trusted, "legitimate")}
    now_trusted = set(state["junk_email"]["TrustedSendersAndDomains"])
    seed = json.loads(SEED_FILE.read_text())
    attacker_grants = {g["id"] for g in seed.get("oauth2PermissionGrants", []) if str(g.get("_note", "")).startswith("attacker")
                       and g.get("principal") == demo["userPrincipalName"]}
    grants = {g["id"] for g in state["oauth2_grants"]}
    consent = _step(view, "revoke-app-consent").get("detail", {})
    recorded = [g for g in consent.get("removed", []) if g.get("id") in attacker_grants]
    found = view.get("footholds") or {}
    text = mails[0]["body"]["content"] if mails else ""
    return [
        ("attacker's FullAccess delegate removed", bool(attacker_delegates) and not attacker_delegates & delegates,
         sorted(delegates)),
        ("pre-existing legitimate delegate kept", bool(legitimate) and legitimate <= delegates, sorted(legitimate)),
        ("attacker's SendAs grant removed", bool(attacker_send_as) and not attacker_send_as & set(state["send_as"]),
         state["send_as"]),
        ("attacker's consented app: grant removed, recorded with client app, scopes and consent time",
         bool(attacker_grants) and not attacker_grants & grants and len(recorded) == len(attacker_grants)
         and all(g.get("client_app", {}).get("displayName") and g.get("scopes") and g.get("consented_at") for g in recorded),
         [(g.get("client_app", {}).get("displayName"), g.get("consented_at")) for g in recorded]),
        ("trusted sender added after the first risk removed, the older one kept",
         bool(attacker_senders) and not attacker_senders & now_trusted and kept_senders <= now_trusted, sorted(now_trusted)),
        ("`responder status` lists what was removed and what needs review",
         len(found.get("removed", [])) >= 4 and bool(found.get("review")),
         {"removed": len(found.get("removed", [])), "review": len(found.get("review", []))}),
        ("the SOC mail lists what was removed and what needs review",
         "Removed (each recorded" in text and "For review" in text, len(text)),
    ]


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
    # (the SOC's mail about the hold names the account: a mail, not a change to it)
    glass_changes = [m for m in client.tenant_changes() if glass_id in json.dumps(m)
                     or glass["userPrincipalName"].lower() in json.dumps(m).lower()]
    state = client.user_state(demo["userPrincipalName"])
    outbox = client.state(users=False).get("outbox", [])
    attacker = [m["id"] for m in demo.get("authMethods", []) if "attacker" in m.get("_note", "")]
    malicious = [(r["displayName"], r.get("hidden", False)) for r in demo.get("inboxRules", [])
                 if "malicious" in r.get("_note", "")]
    rules = {(r["displayName"], r["hidden"]): r for r in state["rules"]}
    remaining_ids = {m["id"] for m in state["auth_methods"]}
    review = {m["id"] for m in _step(demo_view, "enforce-mfa").get("detail", {}).get("kept_for_review", [])}
    adele_mails = [m for m in outbox if demo["userPrincipalName"] in m.get("subject", "")]
    after = [
        ("password changed exactly once", state["password_changes"] == 1, state["password_changes"]),
        ("sessions revoked", state["revocations"] >= 1, state["revocations"]),
        ("MFA enforced (member of the Conditional Access group)", bool(state["groups"]), state["groups"]),
        ("attacker's methods removed, or listed for review with their id",
         bool(attacker) and all(a not in remaining_ids or a in review for a in attacker),
         {"removed": [a for a in attacker if a not in remaining_ids], "for review": sorted(set(attacker) & review)}),
        ("malicious inbox rules disabled (visible, read-only and hidden, matched by identity)",
         all(rules[n]["isEnabled"] is False for n in malicious) and bool(malicious), len(malicious)),
        ("Outlook client-side rules removal recorded",
         _step(demo_view, "clean-mailbox").get("detail", {}).get("client_side_rules", {}).get("removed") is True
         and not state["client_rules"], len(state["client_rules"])),
        ("hidden system rules left alone", all(r["isEnabled"] for r in state["rules"] if r.get("system")), None),
        ("mailbox forwarding cleared", not state["mailbox"]["ForwardingSmtpAddress"], state["mailbox"]["ForwardingSmtpAddress"]),
        ("user unblocked", state["blocked"] is False, state["blocked"]),
        ("mailbox audit on, no bypass", state["mailbox"]["AuditEnabled"] is True and state["mailbox"]["AuditBypassEnabled"] is False,
         {k: state["mailbox"][k] for k in ("AuditEnabled", "AuditBypassEnabled")}),
        *_foothold_checks(demo, state, demo_view, adele_mails),
        ("risk remediated by the reset, confirmed, then dismissed", state["risk"]["riskState"] == "dismissed"
         and [m["details"]["riskState"] for m in client.mutations() if m.get("action") == "risk_changed"
              and m.get("user") == demo_id] == ["confirmedCompromised", "dismissed"]
         and any(m.get("action") == "risk_remediated" and m.get("user") == demo_id for m in client.mutations()),
         state["risk"]["riskState"]),
        ("SOC summary mailed", len(adele_mails) == 1, len(adele_mails)),
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
    synced, admin = hard_users(seed)
    # A capture replayed as a live alert: its times moved to now (intake refuses signals older than LOOKBACK_DAYS).
    payload = restamp(Path(eventhub_file).read_bytes()) if eventhub_file else None

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
                IncidentRequest(user_id=None, user_principal_name=synced["userPrincipalName"], source="manual",
                                risk_level="high", alert_ids=("demo-alert-3",),
                                reason="demo: on-premises synced user compromised"),
                IncidentRequest(user_id=None, user_principal_name=admin["userPrincipalName"], source="manual",
                                risk_level="high", alert_ids=("demo-alert-4",), reason="demo: Global Administrator flagged"),
            ]
        else:
            requests = parse_payload(payload, min_risk_level=stack.env.get("MIN_RISK_LEVEL", "medium")).requests
        # The demo user must finish; any other user (the break-glass account) may also stop at held.
        must_finish = {demo["id"], demo["userPrincipalName"]}
        expect = {r.user_key: TERMINAL_INCIDENT_STATES if r.user_key in must_finish else SETTLED_INCIDENT_STATES
                  for r in requests}
        views = asyncio.run(_follow(stack, requests, expect, timeout_s, progress, payload))
        checks = _checks(stack, demo, glass, views)
        if payload is None:
            checks += _hard_checks(stack, synced, admin, views)
            checks += _operator_checks(stack, admin, views)
            views = asyncio.run(_refresh(stack, views))
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
