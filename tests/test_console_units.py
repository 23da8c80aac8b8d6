"""Console, undo and notices without a host: the CSRF decision, escaping of every rendered field, who
gets which button, the undo plan (forwarding only when confirmed), the operator task, the console link,
and one SOC mail per event (held, storm, failed, action required) with the hand-written fakes."""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone

import pytest

from shared.console import csrf
from shared.console.links import console_root, incident_link
from shared.console.pages import decision_forms, incident_page, incidents_page
from shared.deps import Deps
from shared.errors import PermanentError
from shared.model import MessageError, OperatorTask, StepTask
from shared.notify import notify_action, notify_failed, notify_held
from shared.settings import Settings
from shared.steps import StepRunner, registry
from shared.undo import plan_reversals, undo_offer
from tests.helpers.fakes import FakeGraph, FakeLedger, FakeQueues

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
ME = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"


# -- CSRF -------------------------------------------------------------------------------------------

def test_a_post_needs_the_cookie_token_in_the_form_and_a_same_origin_browser():
    token = csrf.new_token()
    own = {"https://responder.contoso.com"}
    assert csrf.refusal(token, token, {"Origin": "https://responder.contoso.com", "Sec-Fetch-Site": "same-origin"}, own) == ""
    assert csrf.refusal(token, token, {}, own) == ""  # a client that sends neither header: the token decides
    assert "missing" in csrf.refusal(None, token, {}, own)
    assert "missing" in csrf.refusal(token, None, {}, own)
    assert "does not match" in csrf.refusal(csrf.new_token(), token, {}, own)
    assert "another origin" in csrf.refusal(token, token, {"Origin": "https://evil.example"}, own)
    assert "opaque" in csrf.refusal(token, token, {"Origin": "null"}, own)
    assert "another site" in csrf.refusal(token, token, {"Sec-Fetch-Site": "cross-site"}, own)
    assert "another site" in csrf.refusal(token, token, {"sec-fetch-site": "same-site"}, own)


def test_the_csrf_cookie_is_host_only_http_only_strict_and_read_back():
    token = csrf.new_token()
    assert csrf.set_cookie(token, secure=True) == f"__Host-br-csrf={token}; Path=/; HttpOnly; SameSite=Strict; Secure"
    assert csrf.token_from_cookies(f"other=1; __Host-br-csrf={token}", secure=True) == token
    assert csrf.token_from_cookies(f"br-csrf={token}", secure=True) is None  # the plain name is not trusted over https
    assert csrf.token_from_cookies("br-csrf=short", secure=False) is None
    assert csrf.token_from_cookies('br-csrf="a;b', secure=False) is None


# -- rendering ---------------------------------------------------------------------------------------

def evil_view(state: str = "held") -> dict:
    return {
        "incident_id": "inc-0123456789abcdef", "user": EVIL, "state": state, "source": EVIL, "risk_level": EVIL,
        "created_at": "2026-05-01T11:00:00Z", "held_reason": EVIL, "reason": EVIL, "alert_ids": [EVIL, "a2"],
        "protection": EVIL, "display_name": EVIL, "approvals": [{"object_id": OTHER, "upn": EVIL, "at": EVIL}],
        "submitted_by": {"object_id": "", "upn": EVIL}, "approvals_required": 2, "action_required": EVIL,
        "footholds": {"removed": [EVIL], "kept": [], "review": [EVIL]},
        "steps": [{"name": "clean-mailbox", "state": "succeeded", "attempts": 1, "started_at": "x", "finished_at": "y",
                   "duration_ms": 12, "detail": {"summary": EVIL, "disabled_rules": [
                       {"via": "graph", "id": "AQAAAJ5dZp8=", "name": EVIL, "reasons": [EVIL],
                        "before": {"isEnabled": True, "actions": {"forwardTo": [{"emailAddress": {"address": EVIL}}]}}}],
                       "forwarding": {"cleared": True, "before": {"ForwardingSmtpAddress": EVIL}}}}],
    }


@pytest.mark.parametrize("state", ["held", "succeeded"])
def test_every_rendered_field_is_escaped(state):
    view = evil_view(state)
    pages = [incidents_page([view], state="", now=NOW, who=EVIL, roles=["Incident.Read"]),
             incident_page(view, evidence={EVIL: {EVIL: EVIL}}, who=EVIL, oid=ME, roles=[EVIL], can_approve=True,
                           csrf="t" * 43, message=EVIL, undo=undo_offer(view))]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_reader_gets_no_buttons_an_approver_gets_approve_and_reject_the_submitter_only_reject():
    view = evil_view("held")
    assert decision_forms(view, oid=ME, can_approve=False, csrf="t" * 43, undo=None) == ""
    approver = decision_forms(view, oid=ME, can_approve=True, csrf="t" * 43, undo=None)
    assert "/approve" in approver and "/reject" in approver and 'name="csrf" value="' + "t" * 43 in approver
    view["submitted_by"] = {"object_id": ME, "upn": "me"}
    submitter = decision_forms(view, oid=ME, can_approve=True, csrf="t" * 43, undo=None)
    assert "/approve" not in submitter and "You submitted this incident" in submitter
    view["submitted_by"] = {}
    view["approvals"] = [{"object_id": ME, "upn": "me", "at": "t"}]
    again = decision_forms(view, oid=ME, can_approve=True, csrf="t" * 43, undo=None)
    assert "/approve" not in again and "different approver" in again


# -- undo --------------------------------------------------------------------------------------------

DETAILS = {
    "clean-mailbox": {"disabled_rules": [{"via": "graph", "id": "g1", "name": "Sync"},
                                         {"via": "exchange", "id": "adele\\42", "rule_identity": "42", "name": "hidden"}],
                      "forwarding": {"cleared": True, "before": {"ForwardingSmtpAddress": "smtp:out@evil.example",
                                                                 "DeliverToMailboxAndForward": True}}},
    "enforce-mfa": {"mfa": "added to group"},
    "reset-password": {"risk_confirmed": "done", "password_reset": "done"},
}


def test_forwarding_is_restored_only_to_an_address_the_operator_confirmed():
    incident = {"sign_in": "blocked"}
    unconfirmed = {r.kind for r in plan_reversals(incident, DETAILS, mfa_group_id="g")}
    assert unconfirmed == {"graph-rule", "exo-rule", "mfa-group", "risk", "sign-in"}
    confirmed = plan_reversals(incident, DETAILS, mfa_group_id="g", confirmed=["SMTP:OUT@evil.example"])
    [forward] = [r for r in confirmed if r.kind == "forwarding"]
    assert forward.params == {"ForwardingSmtpAddress": "smtp:out@evil.example", "DeliverToMailboxAndForward": True}
    already_member = {**DETAILS, "enforce-mfa": {"mfa": "already a member"}}
    assert "mfa-group" not in {r.kind for r in plan_reversals({}, already_member, mfa_group_id="g")}


def test_the_undo_offer_lists_what_is_not_undone_with_the_recorded_restore_call():
    steps = [{"name": k, "detail": v} for k, v in DETAILS.items()]
    steps.append({"name": "remove-delegates", "detail": {"removed": [
        {"kind": "full-access", "mailbox": "adele@contoso.com", "trustee": "mallory@contoso.com",
         "undo": {"cmdlet": "Add-MailboxPermission", "parameters": {"User": "mallory@contoso.com"}}}]}})
    offer = undo_offer({"state": "succeeded", "steps": steps})
    assert offer["possible"] and offer["forwarding"] == ["smtp:out@evil.example"]
    assert any("password" in line for line in offer["not_undone"])
    assert any("FullAccess of mallory@contoso.com" in line and "Add-MailboxPermission" in line for line in offer["not_undone"])
    assert not undo_offer({"state": "held", "steps": steps})["possible"]
    assert "undo done" in undo_offer({"state": "succeeded", "steps": steps, "undo_state": "done"})["reason"]


def test_the_undo_task_carries_at_most_ten_confirmed_addresses():
    task = OperatorTask(incident_id="inc-abc", action="undo", requested_by="lead", correlation_id="c",
                        confirmed=("a@x.example",))
    assert OperatorTask.from_json(task.to_json()).confirmed == ("a@x.example",)
    plain = OperatorTask(incident_id="inc-abc", action="enable-sign-in", requested_by="lead", correlation_id="c")
    assert "confirmed" not in json.loads(plain.to_json())
    with pytest.raises(MessageError):
        OperatorTask(incident_id="inc-abc", action="undo", requested_by="l", correlation_id="c", confirmed=("x",) * 11)
    with pytest.raises(MessageError):
        OperatorTask.from_json(json.dumps({**json.loads(task.to_json()), "confirmed": [1]}))


# -- links and notices --------------------------------------------------------------------------------

def test_the_console_link_comes_from_console_base_url_or_the_platform_host_name():
    settings = Settings.from_env({"CONSOLE_BASE_URL": "https://responder.contoso.com"})
    assert incident_link(settings, "inc-1", {}) == "https://responder.contoso.com/api/console/incidents/inc-1"
    default = Settings.from_env({})
    assert console_root(default, {"WEBSITE_HOSTNAME": "func-x.azurewebsites.net"}) == "https://func-x.azurewebsites.net/api/console"
    assert console_root(default, {"WEBSITE_HOSTNAME": "evil.example/x?"}) == "" and console_root(default, {}) == ""


def notice_deps() -> Deps:
    settings = Settings.from_env({"SOC_MAILBOX": "soc@contoso.com", "NOTIFY_SENDER": "responder@contoso.com",
                                  "CONSOLE_BASE_URL": "https://responder.contoso.com", "RESPONDER_MODE": "auto"})
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=FakeGraph())
    deps.ledger.incidents["inc-1"] = {"incident_id": "inc-1", "user_principal_name": "adele@contoso.com", "state": "held",
                                      "held_reason": "protected account\u202e", "held_at": "t1", "_etag": "W/1"}
    return deps


async def test_a_held_incident_is_mailed_once_even_when_two_workers_race():
    deps = notice_deps()
    graph = deps.graph
    assert isinstance(graph, FakeGraph)
    outcomes = await asyncio.gather(*(notify_held(deps, deps.ledger.incidents["inc-1"]) for _ in range(5)))
    assert sorted(outcomes).count("sent") == 1 and len(graph.outbox) == 1
    mail = graph.outbox[0]
    assert mail["subject"] == "[Breach Responder] HELD for approval: adele@contoso.com (inc-1)"
    assert "Console: https://responder.contoso.com/api/console/incidents/inc-1" in mail["text"] and "\u202e" not in mail["text"]
    # held again later (a new hold after a release): a new event, a new mail
    deps.ledger.incidents["inc-1"]["held_at"] = "t2"
    assert await notify_held(deps, deps.ledger.incidents["inc-1"]) == "sent" and len(graph.outbox) == 2
    assert json.loads(deps.ledger.incidents["inc-1"]["notices"])["held:t1"]["state"] == "sent"


async def test_a_failed_mail_is_recorded_and_never_raised():
    deps = notice_deps()
    assert isinstance(deps.graph, FakeGraph)
    deps.graph.fail("send_mail", PermanentError("Graph POST sendMail: 403", status=403))
    outcome = await notify_action(deps, "inc-1", "reset-password", "ON-PREMISES PASSWORD RESET REQUIRED: CONTOSO\\adele")
    assert outcome.startswith("failed") and json.loads(deps.ledger.incidents["inc-1"]["notices"])["action:reset-password"][
        "state"].startswith("failed")
    assert await notify_action(deps, "inc-1", "reset-password", "again") == "already"


def runner_world() -> tuple[Deps, FakeGraph, StepRunner]:
    deps = notice_deps()
    graph = deps.graph
    assert isinstance(graph, FakeGraph)
    graph.users[UID] = {"id": UID, "userPrincipalName": "adele@contoso.com"}
    deps.ledger.incidents["inc-2"] = {"incident_id": "inc-2", "user_key": UID, "user_id": UID, "state": "running",
                                      "user_resolved": True, "playbook": "reset-password", "current_step": "reset-password",
                                      "user_principal_name": "adele@contoso.com", "_etag": "W/1"}
    return deps, graph, StepRunner(deps, registry())


UID = "0dc668f6-43fa-5f46-a937-25829277128d"
TASK = StepTask(incident_id="inc-2", step="reset-password", user_key=UID, correlation_id="c")


async def test_a_manual_action_a_step_finds_is_mailed_at_once_and_once():
    deps, graph, runner = runner_world()
    graph.fail("reset_password", PermanentError("Graph PATCH /users: 400 Request_BadRequest - Unable to update the "
                                                "specified properties for on-premises mastered Directory Sync objects",
                                                status=400, code="Request_BadRequest"))
    await runner.run(TASK)
    assert deps.ledger.incidents["inc-2"]["state"] == "succeeded"
    assert [m["subject"] for m in graph.outbox] == [
        "[Breach Responder] ACTION REQUIRED: ON-PREMISES PASSWORD RESET REQUIRED: adele@contoso.com (inc-2)"]
    await runner.run(TASK)  # a redelivery: the step is done, no second mail
    assert len(graph.outbox) == 1


async def test_a_failed_incident_is_mailed_once():
    deps, graph, runner = runner_world()
    graph.fail("reset_password", PermanentError("Graph PATCH: 403 Authorization_RequestDenied", status=403))
    graph.fail("revoke_sessions", PermanentError("Graph POST revokeSignInSessions: 403 Authorization_RequestDenied", status=403))
    await runner.run(TASK)
    assert deps.ledger.incidents["inc-2"]["state"] == "failed"
    assert [m["subject"] for m in graph.outbox] == ["[Breach Responder] FAILED: adele@contoso.com (inc-2) at reset-password"]
    assert "Authorization_RequestDenied" in graph.outbox[0]["text"]
    assert await notify_failed(deps, "inc-2") == "already" and len(graph.outbox) == 1
