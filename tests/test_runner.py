"""StepRunner + reset-password with hand-written fakes: ordering, idempotency, errors, gates."""
import json

import pytest

from shared.approval import approve
from shared.deps import Deps
from shared.errors import PermanentError, TransientError
from shared.gate import protection_gate
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.principal import Principal
from shared.settings import Settings
from shared.steps import StepRunner
from shared.steps.base import Step, StepResult
from shared.steps.reset_password import ResetPassword
from tests.helpers.fakes import FakeGraph, FakeLedger, FakeQueues

ALICE = Principal("a1a1a1a1-0000-4000-8000-000000000001", "alice@contoso.onmicrosoft.com", frozenset({"Incident.Approve"}))
BOB = Principal("b2b2b2b2-0000-4000-8000-000000000002", "bob@contoso.onmicrosoft.com", frozenset({"Incident.Approve"}))

USER = {"id": "6e7b768e-07e2-4810-8459-485f84f8f204", "userPrincipalName": "adele.vance@contoso.onmicrosoft.com",
        "displayName": "Adele Vance", "onPremisesSyncEnabled": None}
GLASS = {"id": "11111111-2222-3333-4444-555555555555", "userPrincipalName": "breakglass@contoso.onmicrosoft.com",
         "displayName": "Break Glass", "onPremisesSyncEnabled": None}
SYNCED = {"id": "99999999-2222-3333-4444-555555555555", "userPrincipalName": "synced.user@contoso.onmicrosoft.com",
          "displayName": "Synced", "onPremisesSyncEnabled": True}
GROUP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def make(mode="auto", **env):
    settings = Settings.from_env({"RESPONDER_MODE": mode, "PLAYBOOK_STEPS": "reset-password",
                                  "PROTECTED_GROUP_ID": GROUP, **env})
    graph = FakeGraph([USER, GLASS, SYNCED])
    graph.groups[GROUP] = {GLASS["id"]}
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph)
    runner = StepRunner(deps, {"reset-password": ResetPassword()}, gate=protection_gate)
    return deps, runner


async def start(deps, user=USER):
    """Submit as `responder ingest` does (no Graph at intake): the runner resolves the user and asks the gate."""
    without_graph = Deps(settings=deps.settings, ledger=deps.ledger, queues=deps.queues, graph=None, clock=deps.clock)
    result = await submit(without_graph, IncidentRequest(user_id=None, user_principal_name=user["userPrincipalName"]))
    tasks = [StepTask(**{k: v for k, v in t.items() if k not in ("schema", "version")}) for t in deps.queues.on("step-reset-password")]
    return result, tasks


async def test_reset_password_resets_once_revokes_and_completes_the_incident():
    deps, runner = make()
    result, tasks = await start(deps)
    assert result.outcome == "created" and len(tasks) == 1
    assert await runner.run(tasks[0]) == "ran"
    assert deps.graph.count("reset_password") == 1 and deps.graph.count("revoke_sessions") == 1
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "succeeded"
    incident = deps.ledger.incidents[result.incident_id]
    assert incident["state"] == "succeeded" and incident["user_id"] == USER["id"]


async def test_redelivered_message_for_a_finished_step_does_not_reset_again():
    deps, runner = make()
    _, tasks = await start(deps)
    await runner.run(tasks[0])
    assert await runner.run(tasks[0]) == "stopped"  # the incident is already terminal
    deps.ledger.incidents[tasks[0].incident_id]["state"] = "running"  # a later step still to run
    assert await runner.run(tasks[0]) == "done"  # the finished step only advances
    assert deps.graph.count("reset_password") == 1


async def test_crash_after_the_patch_landed_does_not_reset_the_password_twice():
    deps, runner = make()
    result, tasks = await start(deps)
    deps.graph.lost_after_effect.add("reset_password")  # PATCH lands, then the worker "crashes"
    with pytest.raises(RuntimeError):
        await runner.run(tasks[0])
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "retrying"
    assert await runner.run(tasks[0]) == "ran"
    assert deps.graph.count("reset_password") == 1
    assert deps.ledger.step_detail(result.incident_id, "reset-password")["password_reset"] == "already done"


async def test_transient_write_failure_is_verified_in_process_and_not_repeated_when_it_landed():
    deps, runner = make()
    result, tasks = await start(deps)
    original = deps.graph.reset_password

    async def landed_but_answer_lost(user_id, password, force_change=True):
        await original(user_id, password, force_change)
        raise TransientError("Graph PATCH: 504 GatewayTimeout", status=504, retry_after=0.01)

    deps.graph.reset_password = landed_but_answer_lost
    assert await runner.run(tasks[0]) == "ran"
    assert deps.graph.count("reset_password") == 1  # verified through lastPasswordChangeDateTime
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "succeeded"


async def test_transient_error_releases_the_step_and_the_retry_succeeds():
    deps, runner = make()
    result, tasks = await start(deps)
    # More failures than the in-process repeats: the step is released for the platform to retry.
    deps.graph.fail("revoke_sessions", *[TransientError("Graph POST revoke: 503", status=503, retry_after=0.01)] * 3)
    with pytest.raises(TransientError):
        await runner.run(tasks[0])
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "retrying"
    assert await runner.run(tasks[0]) == "ran"
    assert deps.graph.count("reset_password") == 1  # the reset was checkpointed: only revoke repeats
    assert deps.graph.count("revoke_sessions") == 4
    assert deps.ledger.steps[(result.incident_id, "reset-password")]["attempts"] == 2


async def test_permanent_error_fails_the_step_and_stops_the_incident_with_the_reason():
    deps, runner = make()
    result, tasks = await start(deps)
    deps.graph.fail("reset_password", PermanentError("Graph PATCH /users/x: 403 Authorization_RequestDenied - grant User-PasswordProfile.ReadWrite.All", status=403))
    assert await runner.run(tasks[0]) == "stopped"
    incident = deps.ledger.incidents[result.incident_id]
    assert incident["state"] == "failed" and incident["stopped_at"] == "reset-password"
    assert "User-PasswordProfile.ReadWrite.All" in incident["stop_reason"]
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "failed"


async def test_protected_group_member_is_held_without_any_change_then_runs_after_two_different_approvals():
    deps, runner = make()
    result, tasks = await start(deps, GLASS)
    assert await runner.run(tasks[0]) == "held"
    assert deps.graph.count("reset_password") == 0 and deps.graph.count("revoke_sessions") == 0
    incident = deps.ledger.incidents[result.incident_id]
    assert incident["state"] == "held" and incident["approvals_required"] == 2
    assert incident["protection"].startswith("protected: yes, because the account is a member of PROTECTED_GROUP_ID")
    assert (await approve(deps, result.incident_id, ALICE)).outcome == "approval-recorded"
    assert (await approve(deps, result.incident_id, ALICE)).outcome == "already-approved"
    assert deps.ledger.incidents[result.incident_id]["state"] == "held" and len(deps.queues.on("step-reset-password")) == 1
    assert (await approve(deps, result.incident_id, BOB)).outcome == "approved"
    task = StepTask(**{k: v for k, v in deps.queues.on("step-reset-password")[-1].items() if k not in ("schema", "version")})
    assert await runner.run(task) == "ran"
    assert deps.graph.count("reset_password") == 1


async def test_one_approval_of_a_protected_account_does_not_get_past_the_gate():
    """Even when something released the incident after one approval, the gate before the write
    step counts the approvers again and holds it."""
    deps, runner = make()
    result, tasks = await start(deps, GLASS)
    assert await runner.run(tasks[0]) == "held"
    deps.ledger.incidents[result.incident_id]["approvals_required"] = 1  # as if intake had not known
    assert (await approve(deps, result.incident_id, ALICE)).outcome == "approved"
    task = StepTask(**{k: v for k, v in deps.queues.on("step-reset-password")[-1].items() if k not in ("schema", "version")})
    assert await runner.run(task) == "held"
    incident = deps.ledger.incidents[result.incident_id]
    assert "1 of 2 so far" in incident["held_reason"] and incident["approvals_required"] == 2
    assert deps.graph.count("reset_password") == 0


async def test_explicit_protected_user_list_holds_too():
    deps, runner = make(PROTECTED_USERS=USER["userPrincipalName"].upper())
    result, tasks = await start(deps)
    assert await runner.run(tasks[0]) == "held"
    assert deps.graph.count("reset_password") == 0


async def test_synced_user_is_held_when_policy_says_hold_and_warned_when_continue():
    deps, runner = make(SYNCED_USER_POLICY="hold")
    _, tasks = await start(deps, SYNCED)
    assert await runner.run(tasks[0]) == "held"
    deps, runner = make(SYNCED_USER_POLICY="continue")
    result, tasks = await start(deps, SYNCED)
    assert await runner.run(tasks[0]) == "ran"
    assert "writeback" in deps.ledger.step_detail(result.incident_id, "reset-password")["warning"]


async def test_dry_run_records_what_it_would_do_and_changes_nothing():
    deps, runner = make(mode="dry-run")
    result, tasks = await start(deps)
    assert await runner.run(tasks[0]) == "ran"
    assert deps.graph.count("reset_password") == 0 and deps.graph.count("revoke_sessions") == 0
    assert deps.ledger.step_state(result.incident_id, "reset-password") == "planned"
    assert any("reset the password" in w for w in deps.ledger.step_detail(result.incident_id, "reset-password")["would"])
    assert deps.ledger.incidents[result.incident_id]["state"] == "dry-run"


async def test_a_step_claimed_by_another_worker_is_requeued_not_run_twice():
    deps, runner = make()
    result, tasks = await start(deps)
    await deps.ledger.claim_step(result.incident_id, "reset-password", 60, "other-worker")
    assert await runner.run(tasks[0]) == "busy"
    assert deps.graph.count("reset_password") == 0
    queue, _, delay = deps.queues.sent[-1]
    assert queue == "step-reset-password" and delay and delay > 0


async def test_password_never_reaches_ledger_or_queues():
    deps, runner = make()
    _, tasks = await start(deps)
    await runner.run(tasks[0])
    password = deps.graph.passwords[USER["id"]][0]
    assert len(password) >= 16
    dumped = json.dumps([deps.ledger.incidents, {str(k): v for k, v in deps.ledger.steps.items()}, deps.queues.sent], default=str)
    assert password not in dumped


async def test_unknown_user_fails_permanently_with_not_found():
    deps, runner = make()
    # Intake with Graph refuses an unknown user outright; without Graph (responder ingest) the runner finds out.
    refused = await submit(deps, IncidentRequest(user_id=None, user_principal_name="ghost@contoso.onmicrosoft.com"))
    assert refused.outcome == "refused" and "no such user" in refused.reason and deps.ledger.incidents == {}
    result, tasks = await start(deps, {"userPrincipalName": "ghost@contoso.onmicrosoft.com"})
    assert await runner.run(tasks[0]) == "stopped"
    assert "404" in deps.ledger.incidents[result.incident_id]["stop_reason"]


async def test_an_id_and_a_upn_of_two_different_users_never_reach_a_step():
    deps, runner = make()
    mixed = IncidentRequest(user_id=GLASS["id"], user_principal_name=USER["userPrincipalName"])
    refused = await submit(deps, mixed)
    assert refused.outcome == "refused" and "different users" in refused.reason and deps.ledger.incidents == {}
    # Without Graph at intake, the runner's resolution stops it before any change.
    without_graph = Deps(settings=deps.settings, ledger=deps.ledger, queues=deps.queues, graph=None)
    result = await submit(without_graph, mixed)
    task = StepTask(**{k: v for k, v in deps.queues.on("step-reset-password")[0].items() if k not in ("schema", "version")})
    assert await runner.run(task) == "stopped"
    assert "different users" in deps.ledger.incidents[result.incident_id]["stop_reason"]
    assert deps.graph.count("reset_password") == 0 and deps.graph.count("revoke_sessions") == 0


class RecordingStep(Step):
    """A read-only step that records each run (for ordering tests)."""

    name = "snapshot"
    mutates = False

    def __init__(self) -> None:
        self.runs: list[str] = []

    async def act(self, ctx):
        self.runs.append(ctx.task.incident_id)
        return StepResult("succeeded", "recorded")


def make_two_steps():
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "PLAYBOOK_STEPS": "snapshot,reset-password"})
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=FakeGraph([USER]))
    first = RecordingStep()
    return deps, StepRunner(deps, {"snapshot": first, "reset-password": ResetPassword()}), first


async def test_redelivery_of_a_finished_step_does_not_enqueue_a_successor_that_already_has_a_row():
    deps, runner, _ = make_two_steps()
    await submit(deps, IncidentRequest(user_id=None, user_principal_name=USER["userPrincipalName"]))
    first = StepTask(**{k: v for k, v in deps.queues.on("step-snapshot")[0].items() if k not in ("schema", "version")})
    assert await runner.run(first) == "ran"
    assert len(deps.queues.on("step-reset-password")) == 1
    await deps.ledger.claim_step(first.incident_id, "reset-password", 60, "c")  # the successor started
    assert await runner.run(first) == "done"
    assert len(deps.queues.on("step-reset-password")) == 1  # not enqueued a second time


async def test_redelivery_of_a_finished_step_whose_successor_never_started_enqueues_it():
    deps, runner, _ = make_two_steps()
    await submit(deps, IncidentRequest(user_id=None, user_principal_name=USER["userPrincipalName"]))
    first = StepTask(**{k: v for k, v in deps.queues.on("step-snapshot")[0].items() if k not in ("schema", "version")})
    await runner.run(first)
    deps.queues.sent.clear()  # the enqueue was lost with the worker
    assert await runner.run(first) == "done"
    assert len(deps.queues.on("step-reset-password")) == 1


async def test_a_later_step_task_arriving_before_its_predecessor_finished_is_ignored():
    deps, runner, recorder = make_two_steps()
    result = await submit(deps, IncidentRequest(user_id=None, user_principal_name=USER["userPrincipalName"]))
    forged = StepTask(result.incident_id, "reset-password", "u", "c")
    assert await runner.run(forged) == "ignored"
    assert deps.graph.count("reset_password") == 0 and recorder.runs == []


async def test_a_failed_group_lookup_beside_the_user_resolution_stops_before_any_change():
    deps, runner = make()
    result, tasks = await start(deps, GLASS)
    deps.graph.fail("check_member_groups", TransientError("Graph POST checkMemberGroups: 503", status=503))
    with pytest.raises(TransientError):
        await runner.run(tasks[0])
    assert deps.graph.count("reset_password") == 0
    assert await runner.run(tasks[0]) == "held"  # the retry looks again and holds the protected account
    assert deps.graph.count("reset_password") == 0


async def test_the_group_lookup_runs_with_the_alert_s_key_beside_the_resolution():
    deps, runner = make()
    _, tasks = await start(deps, GLASS)  # the alert names the user by UPN only
    assert await runner.run(tasks[0]) == "held"
    lookups = [c for c in deps.graph.calls if c[0] in ("get_user", "check_member_groups")]
    assert sorted(lookups) == sorted([("get_user", GLASS["userPrincipalName"]), ("check_member_groups", GLASS["userPrincipalName"])])


async def test_a_role_holder_is_held_with_sessions_revoked_and_the_prefetched_roles_reach_the_gate():
    deps, runner = make()
    admin = {"id": "77777777-2222-3333-4444-555555555555", "userPrincipalName": "admin@contoso.onmicrosoft.com",
             "displayName": "Admin", "onPremisesSyncEnabled": None, "roles": ["Global Administrator"]}
    deps.graph.users[admin["id"]] = dict(admin)
    result, tasks = await start(deps, admin)  # named by UPN: eligibility is read once the object id is known
    assert await runner.run(tasks[0]) == "held"
    incident = deps.ledger.incidents[result.incident_id]
    assert "Global Administrator" in incident["held_reason"] and incident["held_containment"] == "sessions revoked"
    assert deps.graph.count("revoke_sessions") == 1 and deps.graph.count("reset_password") == 0
    # the role lookups ran once, beside the resolution; the gate used what they found
    assert deps.graph.count("list_directory_roles") == 1 and deps.graph.count("check_member_groups") == 1
    assert [c for c in deps.graph.calls if c[0] == "list_eligible_roles"] == [("list_eligible_roles", admin["id"])]


class MailStep(Step):
    """One unverifiable effect (a mail cannot be read back), like close's summary to the SOC."""

    name = "reset-password"

    def __init__(self) -> None:
        self.sent = 0
        self.fail_next = False

    async def act(self, ctx):
        async def send() -> None:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("worker died while sending")
            self.sent += 1

        await ctx.effect("mail", send, description="mail the SOC")
        return StepResult("succeeded", "mailed")


async def test_an_unverifiable_effect_writes_its_end_once_and_no_start_mark_before_it():
    deps, _ = make()
    step = MailStep()
    runner = StepRunner(deps, {"reset-password": step})
    _, tasks = await start(deps)
    written = []
    original = deps.ledger.checkpoint

    async def checkpoint(incident_id, name, claim, updates):
        written.append(json.loads(json.dumps(updates)))
        await original(incident_id, name, claim, updates)

    deps.ledger.checkpoint = checkpoint
    step.fail_next = True
    with pytest.raises(RuntimeError):
        await runner.run(tasks[0])
    assert written == []  # nothing stored before the call: a retry runs it again either way
    assert await runner.run(tasks[0]) == "ran"
    assert step.sent == 1 and len(written) == 1
    record = written[0]["effects"]["mail"]
    assert record["issued_at"] and record["done_at"] and record["attempt"] == 2
    deps.ledger.incidents[tasks[0].incident_id]["state"] = "running"
    assert await runner.run(tasks[0]) == "done"  # finished: never sent again
    assert step.sent == 1
