"""Every playbook step against the tenant simulator, through the real msgraph-sdk and
Exchange adapters and azure-identity's managed-identity flow: success, already done,
transient then success, and permanent failure (a denied permission, named in the error).

The ledger and queues are the hand-written fakes (the Azurite-backed ledger is exercised
by test_e2e.py); the tenant side is real wire traffic.
"""
from __future__ import annotations

import json
import re

import pytest

from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.credentials import build_credential
from shared.adapters.exchange import ExchangeAdapter
from shared.adapters.graph import GraphAdapter
from shared.deps import Deps
from shared.errors import TransientError
from shared.gate import protection_gate
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.playbook import STEP_NAMES, queue_name
from shared.settings import Settings
from shared.steps import StepRunner, registry
from tests.helpers.fakes import FakeLedger, FakeQueues

ADELE = "adele.vance@contoso.onmicrosoft.com"
SEED = json.loads(SEED_FILE.read_text())

# The first side effect of each step: where a transient fault is injected.
FIRST_EFFECT = {
    "snapshot": {"service": "graph", "method": "GET", "path_contains": "/authentication/methods"},
    "reset-password": {"service": "graph", "method": "PATCH", "path_contains": "/users/"},
    "enforce-mfa": {"service": "graph", "method": "POST", "path_contains": "/members/$ref"},
    "clean-mailbox": {"service": "graph", "method": "PATCH", "path_contains": "/messageRules/"},
    "remove-delegates": {"service": "exo", "cmdlet": "Remove-MailboxPermission"},
    "revoke-app-consent": {"service": "graph", "method": "DELETE", "path_contains": "/oauth2PermissionGrants/"},
    "unblock-sender": {"service": "exo", "cmdlet": "Remove-BlockedSenderAddress"},
    "mailbox-audit": {"service": "exo", "cmdlet": "Set-Mailbox"},
    "recovery-pass": {"service": "graph", "method": "POST", "path_contains": "/temporaryAccessPassMethods"},
    "close": {"service": "graph", "method": "POST", "path_contains": "/sendMail"},
}
# The permission each step cannot do without, and text its failure must name.
DENY = {
    "reset-password": ("User-PasswordProfile.ReadWrite.All", "User-PasswordProfile.ReadWrite.All"),
    "enforce-mfa": ("GroupMember.ReadWrite.All", "GroupMember.ReadWrite.All"),
    "clean-mailbox": ("MailboxSettings.ReadWrite", "MailboxSettings.ReadWrite"),
    "unblock-sender": ("Exchange.ManageAsApp", "Exchange.ManageAsApp"),
    "mailbox-audit": ("Exchange.ManageAsApp", "Exchange.ManageAsApp"),
    "close": ("Mail.Send", "Mail.Send"),
}


@pytest.fixture
async def world(sim_identity_env):
    sim = sim_identity_env
    # RECOVERY=tap: the whole playbook, recovery-pass included (STEP_NAMES)
    env = {"RESPONDER_MODE": "auto", "GRAPH_BASE_URL": sim.url, "EXO_BASE_URL": sim.url, **tenant_settings(SEED),
           "RECOVERY": "tap", "RECOVERY_HELPDESK_MAILBOX": "helpdesk@contoso.onmicrosoft.com"}
    settings = Settings.from_env(env)
    credential = build_credential()
    graph = GraphAdapter(credential, sim.url, timeout_s=10)
    exchange = ExchangeAdapter(credential, sim.url, settings.tenant_id, settings.tenant_domain, timeout_s=10)
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
    runner = StepRunner(deps, registry(), gate=protection_gate)
    try:
        yield deps, runner, sim
    finally:
        await graph.close()
        await exchange.close()
        await credential.close()


def _task(body: dict) -> StepTask:
    return StepTask(**{k: v for k, v in body.items() if k not in ("schema", "version")})


async def drive(deps, runner, stop_before: str | None = None) -> list[tuple[str, str]]:
    """Run queued step tasks in order until none are left (or the next is ``stop_before``)."""
    done = []
    while True:
        pending = [(q, b) for q, b, _ in deps.queues.sent if q.startswith("step-")]
        deps.queues.sent = [m for m in deps.queues.sent if not m[0].startswith("step-")]
        if not pending:
            return done
        for queue, body in pending:
            task = _task(json.loads(body))
            if task.step == stop_before:
                deps.queues.sent.append((queue, body, None))
                return done
            done.append((task.step, await runner.run(task)))


async def open_incident(deps, upn=ADELE, *, graph_at_intake: bool = True) -> str:
    """Submit as the worker does (Graph resolves the user at intake), or as `responder ingest` does (no Graph)."""
    intake = deps if graph_at_intake else Deps(settings=deps.settings, ledger=deps.ledger, queues=deps.queues)
    result = await submit(intake, IncidentRequest(user_id=None, user_principal_name=upn))
    assert result.outcome == "created"
    return result.incident_id


def graph_mutations(sim, since: int = 0) -> list[dict]:
    return sim.client.mutations(since=since)


async def test_whole_playbook_succeeds_against_the_simulator(world):
    deps, runner, sim = world
    incident_id = await open_incident(deps)
    ran = await drive(deps, runner)
    assert [s for s, _ in ran] == list(STEP_NAMES)
    assert all(outcome == "ran" for _, outcome in ran)
    assert deps.ledger.incidents[incident_id]["state"] == "succeeded"
    state = sim.client.user_state(ADELE)
    assert state["password_changes"] == 1 and state["revocations"] == 1
    # the reset remediated the risk; close confirmed the compromise, then dismissed it (dismiss after
    # remediation): the user is not left blocked by the responder's own confirmation
    assert (state["risk"]["riskState"], state["risk"]["riskDetail"]) == ("dismissed", "adminDismissedAllRiskForUser")
    evidence = await deps.ledger.list_evidence(incident_id)
    assert evidence["risky_user"]["riskState"] == "atRisk"  # the risk as it was before the reset
    assert evidence["risk_detections"]
    before_rules = [r["Name"] for r in evidence["exo_inbox_rules"]]
    assert "Sync" in before_rules and " " in before_rules  # the hidden rule is in the "before" picture
    assert evidence["mailbox"][0]["ForwardingSmtpAddress"]  # forwarding as it was, before clean-mailbox


@pytest.mark.parametrize("step", STEP_NAMES)
async def test_redelivered_finished_step_makes_no_new_tenant_change(world, step):
    deps, runner, sim = world
    await open_incident(deps)
    await drive(deps, runner, stop_before=step)
    task = _task(json.loads(next(b for q, b, _ in deps.queues.sent if q == queue_name(step))))
    assert await runner.run(task) == "ran"
    mark = len(sim.client.mutations())
    deps.ledger.incidents[task.incident_id]["state"] = "running"  # as if later steps were still to come
    assert await runner.run(task) == "done"
    assert sim.client.mutations()[mark:] == []


@pytest.mark.parametrize("step", STEP_NAMES)
async def test_transient_fault_is_raised_for_retry_and_the_retry_succeeds_once(world, step):
    deps, runner, sim = world
    incident_id = await open_incident(deps)
    await drive(deps, runner, stop_before=step)
    # Five 503s outlast the SDK's own retries, so the platform has to retry the message.
    sim.client.fault_once(**FIRST_EFFECT[step], status=503, count=5, retry_after="0.01")
    task = _task(json.loads(next(b for q, b, _ in deps.queues.sent if q == queue_name(step))))
    with pytest.raises(TransientError):
        await runner.run(task)
    assert deps.ledger.step_state(incident_id, step) == "retrying"
    sim.client.set_faults({})
    assert await runner.run(task) == "ran"
    assert deps.ledger.step_state(incident_id, step) == "succeeded"
    if step == "reset-password":
        assert sim.client.user_state(ADELE)["password_changes"] == 1


@pytest.mark.parametrize("step", sorted(DENY))
async def test_denied_permission_fails_the_step_and_names_what_to_grant(world, step):
    deps, runner, sim = world
    incident_id = await open_incident(deps)
    await drive(deps, runner, stop_before=step)
    permission, named = DENY[step]
    sim.client.set_permissions(denied=[permission])
    task = _task(json.loads(next(b for q, b, _ in deps.queues.sent if q == queue_name(step))))
    mark = len(deps.queues.sent)
    assert await runner.run(task) == "stopped"
    incident = deps.ledger.incidents[incident_id]
    assert incident["state"] == "failed" and incident["stopped_at"] == step
    assert "403" in incident["stop_reason"] and named in incident["stop_reason"]
    assert deps.queues.sent[mark:] == []  # nothing is enqueued after a permanent failure


async def test_snapshot_records_a_denied_section_as_unavailable_and_carries_on(world):
    deps, runner, sim = world
    sim.client.set_permissions(denied=["MailboxSettings.Read", "MailboxSettings.ReadWrite"])
    incident_id = await open_incident(deps)
    ran = await drive(deps, runner, stop_before="reset-password")
    assert ran == [("snapshot", "ran")]
    detail = deps.ledger.step_detail(incident_id, "snapshot")
    assert "inbox_rules" in detail["unavailable"] and "MailboxSettings" in detail["unavailable"]["inbox_rules"]


async def test_a_denied_identity_protection_section_is_recorded_after_containment_and_the_playbook_goes_on(world):
    deps, runner, sim = world
    sim.client.set_permissions(denied=["IdentityRiskEvent.Read.All"])
    incident_id = await open_incident(deps)
    await drive(deps, runner)
    assert deps.ledger.incidents[incident_id]["state"] == "succeeded"
    detail = deps.ledger.step_detail(incident_id, "reset-password")
    assert detail["password_reset"] == "done" and detail["sessions_revoked"] == "done"
    unavailable = detail["risk_evidence"]["unavailable"]
    assert "IdentityRiskEvent.Read.All" in unavailable["risk_detections"]
    assert "risky_user" in (await deps.ledger.list_evidence(incident_id))


async def test_crash_after_the_password_patch_landed_does_not_reset_twice(world):
    deps, runner, sim = world
    incident_id = await open_incident(deps)
    await drive(deps, runner, stop_before="reset-password")
    # The PATCH is applied, then the answer is lost: the step checks the tenant before repeating it.
    sim.client.fault_once(service="graph", method="PATCH", path_contains="/users/", status=503, count=1,
                          retry_after="0.01", after_effect=True)
    task = _task(json.loads(next(b for q, b, _ in deps.queues.sent if q == "step-reset-password")))
    assert await runner.run(task) == "ran"
    assert sim.client.user_state(ADELE)["password_changes"] == 1
    assert len(sim.client.requests(service="graph", method="PATCH", path_contains="/users/")) == 1
    assert deps.ledger.step_state(incident_id, "reset-password") == "succeeded"


async def test_second_incident_on_an_already_clean_tenant_changes_nothing_but_the_password(world):
    deps, runner, sim = world
    await open_incident(deps)
    await drive(deps, runner)
    deps.ledger = FakeLedger()  # a new incident for the same, now remediated, user
    runner.deps = deps
    incident_id = await open_incident(deps)
    mark = len(sim.client.mutations())
    await drive(deps, runner)
    assert deps.ledger.incidents[incident_id]["state"] == "succeeded"
    details = {s: deps.ledger.step_detail(incident_id, s) for s in STEP_NAMES}
    assert details["enforce-mfa"]["mfa"] == "already a member"
    # The first incident's recovery pass was registered after the compromise began: the new incident's
    # enforce-mfa removes it (it cannot tell it from an attacker's), and recovery-pass issues a new one.
    assert [m["type"] for m in details["enforce-mfa"]["removed_methods"]] == ["temporaryAccessPassAuthenticationMethod"]
    assert details["recovery-pass"]["recovery"] == "issued"
    assert details["clean-mailbox"]["disabled_rules"] == [] and details["clean-mailbox"]["forwarding"]["cleared"] is False
    assert details["unblock-sender"]["blocked"] is False
    assert details["mailbox-audit"]["fixed"] == []
    kinds = {m.get("kind") or m.get("op") or m.get("action") for m in sim.client.mutations()[mark:]}
    assert kinds, "the new incident resets the password again (a new compromise signal)"


async def test_break_glass_is_held_without_a_single_tenant_change(world):
    deps, runner, sim = world
    incident_id = await open_incident(deps, "breakglass@contoso.onmicrosoft.com")
    mark = len(sim.client.mutations())
    assert await drive(deps, runner) == [("snapshot", "held")]
    assert deps.ledger.incidents[incident_id]["state"] == "held"
    changes = sim.client.mutations()[mark:]
    # the only thing that happens is the SOC's mail about the hold (shared/notify.py), never a tenant change
    assert [(m["action"], m["details"]["to"]) for m in changes] == [("mail_sent", ["soc@contoso.onmicrosoft.com"])]


async def test_throttled_write_is_retried_in_process_honouring_a_fractional_retry_after(world):
    deps, runner, sim = world
    incident_id = await open_incident(deps)
    await drive(deps, runner, stop_before="reset-password")
    sim.client.clear_requests()
    sim.client.fault_once(service="graph", method="PATCH", path_contains="/users/", status=429, count=2, retry_after="0.05")
    sim.client.fault_once(service="exo", cmdlet="Remove-BlockedSenderAddress", status=429, count=2, retry_after="0.05")
    await drive(deps, runner)
    assert deps.ledger.incidents[incident_id]["state"] == "succeeded"
    patches = [r["status"] for r in sim.client.requests(service="graph", method="PATCH", path_contains="/users/0")
               if r["path"].rstrip("/").endswith(deps.ledger.incidents[incident_id]["user_id"])]
    assert patches == [429, 429, 204]
    assert sim.client.user_state(ADELE)["password_changes"] == 1


async def test_a_5xx_on_a_write_is_repeated_only_after_the_tenant_shows_it_did_not_land(world):
    deps, runner, sim = world
    await open_incident(deps)
    await drive(deps, runner, stop_before="reset-password")
    sim.client.clear_requests()
    sim.client.fault_once(service="graph", method="PATCH", path_contains="/users/", status=503, count=1)
    task = _task(json.loads(next(b for q, b, _ in deps.queues.sent if q == "step-reset-password")))
    assert await runner.run(task) == "ran"
    patches = [r["status"] for r in sim.client.requests(service="graph", method="PATCH")]
    checks = sim.client.requests(service="graph", method="GET", path_contains="/users/")
    assert patches == [503, 204]  # the client did not repeat it blindly...
    assert any("lastPasswordChangeDateTime" in json.dumps(r.get("query")) for r in checks)  # ...the step checked first
    assert sim.client.user_state(ADELE)["password_changes"] == 1


async def test_the_user_is_read_once_when_the_snapshot_resolves_the_incident(world):
    deps, runner, sim = world
    sim.client.clear_requests()
    await open_incident(deps, graph_at_intake=False)
    await drive(deps, runner, stop_before="reset-password")
    user_reads = [r for r in sim.client.requests(service="graph", method="GET")
                  if re.fullmatch(r"/v1\.0/users/[^/]+", r["path"].split("?")[0])]
    assert len(user_reads) == 1, [r["path"] for r in user_reads]
    assert (await deps.ledger.list_evidence(next(iter(deps.ledger.incidents))))["user"]["userPrincipalName"].lower() == ADELE


async def test_the_organisation_config_is_read_once_per_worker_not_per_incident(world):
    deps, runner, sim = world
    sim.client.clear_requests()
    await open_incident(deps)
    await drive(deps, runner)
    await open_incident(deps, upn="megan.bowen@contoso.onmicrosoft.com")
    await drive(deps, runner)
    assert all(i["state"] == "succeeded" for i in deps.ledger.incidents.values())
    assert len(sim.client.requests(service="exo", cmdlet="Get-OrganizationConfig")) == 1


async def test_a_5xx_on_the_read_only_group_check_is_retried_in_process(world):
    deps, runner, sim = world
    # submitted without Graph (as `responder ingest` does): the first step's gate reads the group itself
    # (after a lookup at intake, its facts would be reused for GATE_FACTS_MAX_AGE_SECONDS)
    incident_id = await open_incident(deps, graph_at_intake=False)
    sim.client.clear_requests()
    sim.client.fault_once(service="graph", method="POST", path_contains="checkMemberGroups", status=503, count=1)
    ran = await drive(deps, runner, stop_before="reset-password")
    assert ran == [("snapshot", "ran")]  # no TransientError: the gate's read was simply repeated
    assert deps.ledger.step_state(incident_id, "snapshot") == "succeeded"
    checks = sim.client.requests(service="graph", method="POST", path_contains="checkMemberGroups")
    assert [r["status"] for r in checks] == [503, 200]
