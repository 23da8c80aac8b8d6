"""The foothold steps with the hand-written fakes: Exchange's "the ACE doesn't exist" as a warning or
as an error, the saved plan a retry executes, a 403 on an optional read, the operator task message."""
from __future__ import annotations

import json

import pytest

from shared.deps import Deps
from shared.errors import PermanentError
from shared.model import MessageError, OperatorTask, StepTask
from shared.settings import Settings
from shared.steps import StepRunner, registry
from tests.helpers.fakes import FakeExchange, FakeGraph, FakeLedger, FakeQueues

UID = "0dc668f6-43fa-5f46-a937-25829277128d"
UPN = "adele@contoso.com"
INCIDENT = "inc-0123456789abcdef0123"
CUT = "2024-05-01T12:00:00Z"
ACE_GONE = ("Can't remove the access control entry on the object \"adele\" for the user account because the ACE "
            "doesn't exist on the object.")


def audit_row(op: str, when: str, target: str, **params: str) -> dict:
    data = {"CreationTime": when, "Operation": op, "ObjectId": target, "UserId": "admin@contoso.com",
            "Parameters": [{"Name": k, "Value": v} for k, v in params.items()]}
    return {"AuditData": json.dumps(data)}


def world(step: str) -> tuple[Deps, StepRunner, FakeExchange, FakeGraph]:
    settings = Settings.from_env({"RESPONDER_MODE": "auto"})
    graph = FakeGraph(users=[{"id": UID, "userPrincipalName": UPN}])
    exchange = FakeExchange()
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
    deps.ledger.incidents[INCIDENT] = {"incident_id": INCIDENT, "user_key": UPN, "user_id": UID, "state": "running",
                                       "user_resolved": True, "playbook": ",".join(settings.playbook_steps),
                                       "current_step": step, "user_principal_name": UPN, "first_risk_at": CUT,
                                       "_etag": "W/1"}
    return deps, StepRunner(deps, registry()), exchange, graph


def task(step: str) -> StepTask:
    return StepTask(incident_id=INCIDENT, step=step, user_key=UPN, correlation_id="c")


def mailbox(exchange: FakeExchange) -> None:
    exchange.results["Get-Mailbox"] = [{"UserPrincipalName": UPN, "Alias": "adele", "GrantSendOnBehalfTo": [],
                                        "DistinguishedName": "CN=adele,OU=contoso"}]
    exchange.results["Get-MailboxPermission"] = [
        {"User": "NT AUTHORITY\\SELF", "AccessRights": ["FullAccess"], "IsInherited": False, "Deny": False},
        {"User": "mallory@contoso.com", "AccessRights": ["FullAccess"], "IsInherited": False, "Deny": False}]
    exchange.results["Search-UnifiedAuditLog"] = [
        audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", UPN, User="mallory@contoso.com", AccessRights="FullAccess")]


@pytest.mark.parametrize("how", ["warning", "error"])
async def test_the_ace_doesnt_exist_text_counts_as_already_removed(how):
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox(exchange)
    if how == "warning":
        exchange.warnings["Remove-MailboxPermission"] = [ACE_GONE]
    else:
        exchange.failures["Remove-MailboxPermission"] = [PermanentError(f"Exchange Remove-MailboxPermission: 400 {ACE_GONE}",
                                                                        status=400)]
    assert await runner.run(task("remove-delegates")) == "ran"
    detail = deps.ledger.step_detail(INCIDENT, "remove-delegates")
    assert [e["trustee"] for e in detail["already_gone"]] == ["mallory@contoso.com"]
    assert detail["removed"] == [] and detail["not_removed"] == [] and detail["open_paths"] == 0


async def test_a_removal_exchange_refuses_for_another_reason_is_not_removed_and_open():
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox(exchange)
    exchange.failures["Remove-MailboxPermission"] = [PermanentError("Exchange Remove-MailboxPermission: 400 The user "
                                                                    "is being migrated", status=400)]
    assert await runner.run(task("remove-delegates")) == "ran"
    detail = deps.ledger.step_detail(INCIDENT, "remove-delegates")
    assert [e["trustee"] for e in detail["not_removed"]] == ["mallory@contoso.com"] and detail["open_paths"] == 1
    assert "migrated" in detail["not_removed"][0]["error"]


async def test_a_retry_executes_the_plan_the_first_attempt_saved():
    """The decisions are taken once: a retry does not re-read the tenant and re-decide (the entry it
    removed before the crash is no longer there to be found, yet its record survives)."""
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox(exchange)
    exchange.failures["Remove-MailboxPermission"] = [RuntimeError("worker died")]
    with pytest.raises(RuntimeError):
        await runner.run(task("remove-delegates"))
    checkpoint = json.loads(deps.ledger.steps[(INCIDENT, "remove-delegates")]["checkpoint"])
    assert [e["trustee"] for e in checkpoint["plan"]["entries"]] == ["mallory@contoso.com"]
    exchange.results["Get-MailboxPermission"] = exchange.results["Get-MailboxPermission"][:1]  # it did land
    reads = sum(1 for c, _ in exchange.calls if c == "Search-UnifiedAuditLog")
    assert await runner.run(task("remove-delegates")) == "ran"
    detail = deps.ledger.step_detail(INCIDENT, "remove-delegates")
    assert [e["trustee"] for e in detail["removed"]] == ["mallory@contoso.com"]  # verified, not repeated
    assert sum(1 for c, _ in exchange.calls if c == "Remove-MailboxPermission") == 1
    assert sum(1 for c, _ in exchange.calls if c == "Search-UnifiedAuditLog") == reads  # not re-read either


async def test_a_403_on_an_optional_read_makes_the_section_unavailable_without_failing():
    deps, runner, _, graph = world("revoke-app-consent")
    graph.fail("list_app_role_assignments", PermanentError("Graph GET appRoleAssignments: 403 - grant Directory.Read.All",
                                                           status=403))
    graph.grants["G1"] = {"id": "G1", "clientId": "app", "consentType": "Principal", "principalId": UID,
                          "resourceId": "res", "scope": "Mail.Read"}
    assert await runner.run(task("revoke-app-consent")) == "ran"
    assert deps.ledger.step_state(INCIDENT, "revoke-app-consent") == "succeeded"
    detail = deps.ledger.step_detail(INCIDENT, "revoke-app-consent")
    assert "app_role_assignments" in detail["unavailable"] and "app_role_assignments" in detail["unverified"]
    assert [e["id"] for e in detail["review"]] == ["G1"]  # no consent event in the (empty) audit log
    assert "G1" in graph.grants  # an undated grant is never removed


def test_the_operator_task_is_a_versioned_message_that_refuses_what_it_does_not_know():
    task = OperatorTask(incident_id=INCIDENT, action="enable-sign-in", requested_by="alice", correlation_id="c")
    assert OperatorTask.from_json(task.to_json()) == task
    body = json.loads(task.to_json())
    assert body["schema"] == "breach-responder/operator-task" and body["version"] == 1
    for bad in ({**body, "action": "delete-user"}, {**body, "incident_id": "inc-../x"}, {**body, "version": 2},
                {**body, "extra": 1}, {k: v for k, v in body.items() if k != "requested_by"}):
        with pytest.raises(MessageError):
            OperatorTask.from_json(json.dumps(bad))


async def test_a_user_without_a_mailbox_has_no_mailbox_rights_of_its_own_and_nothing_is_unverified():
    deps, runner, exchange, _ = world("remove-delegates")
    exchange.failures["Get-Mailbox"] = [PermanentError("Exchange Get-Mailbox: 404 The operation couldn't be performed "
                                                       "because object 'adele@contoso.com' couldn't be found", status=404)]
    assert await runner.run(task("remove-delegates")) == "ran"
    detail = deps.ledger.step_detail(INCIDENT, "remove-delegates")
    assert detail["unverified"] == [] and any("no Exchange mailbox" in n for n in detail["notes"])
    assert [c for c, _ in exchange.calls if c == "Get-MailboxPermission"] == []  # no own mailbox to read
    assert ("Get-RecipientPermission", {"Trustee": UPN, "AccessRights": "SendAs"}) in exchange.calls


def count_checkpoints(deps: Deps) -> list[dict]:
    """Wrap the ledger's checkpoint writes: what each one stored."""
    written: list[dict] = []
    original = deps.ledger.checkpoint

    async def checkpoint(incident_id, step, claim, updates):
        await original(incident_id, step, claim, updates)
        written.append(json.loads(deps.ledger.steps[(incident_id, step)]["checkpoint"]))

    deps.ledger.checkpoint = checkpoint
    return written


async def test_the_plan_is_stored_with_the_first_removal_and_a_state_verified_removal_writes_nothing_else():
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox(exchange)
    written = count_checkpoints(deps)
    assert await runner.run(task("remove-delegates")) == "ran"
    assert sum(1 for c, _ in exchange.calls if c == "Remove-MailboxPermission") == 1
    # one write, before the removal: the plan and the removal's start mark together
    assert len(written) == 1
    assert [e["trustee"] for e in written[0]["plan"]["entries"]] == ["mallory@contoso.com"]
    assert list(written[0]["effects"]) == [written[0]["plan"]["entries"][0]["effect"]]


async def test_a_plan_with_nothing_to_remove_is_never_written():
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox(exchange)
    exchange.results["Get-MailboxPermission"] = exchange.results["Get-MailboxPermission"][:1]  # only SELF
    written = count_checkpoints(deps)
    assert await runner.run(task("remove-delegates")) == "ran"
    assert written == [] and deps.ledger.step_state(INCIDENT, "remove-delegates") == "succeeded"


def mailbox_with_two_delegates(exchange: FakeExchange) -> None:
    """mallory and eve, both granted FullAccess after the cut-off: two removals."""
    mailbox(exchange)
    eve = {"User": "eve@contoso.com", "AccessRights": ["FullAccess"], "IsInherited": False, "Deny": False}
    exchange.results["Get-MailboxPermission"].append(eve)
    exchange.results["Search-UnifiedAuditLog"].append(
        audit_row("Add-MailboxPermission", "2024-05-01T13:05:00", UPN, User="eve@contoso.com", AccessRights="FullAccess"))


async def test_a_retry_verifies_a_state_verified_removal_that_left_no_mark_instead_of_repeating_it():
    # Only the first removal writes (the plan with its start mark); the second writes nothing before it
    # runs. The worker dies after the second landed: the retry asks the tenant and repeats neither.
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox_with_two_delegates(exchange)
    written = count_checkpoints(deps)
    invoke = exchange.invoke

    async def lands_then_the_worker_dies(cmdlet, parameters=None, anchor=None, warnings=None):
        result = await invoke(cmdlet, parameters, anchor, warnings)
        if cmdlet == "Remove-MailboxPermission":
            gone = str((parameters or {}).get("User"))
            exchange.results["Get-MailboxPermission"] = [
                r for r in exchange.results["Get-MailboxPermission"] if r["User"] != gone]
            if gone == "eve@contoso.com":
                raise RuntimeError("worker died")
        return result

    exchange.invoke = lands_then_the_worker_dies
    with pytest.raises(RuntimeError):
        await runner.run(task("remove-delegates"))
    assert len(written) == 1 and len(written[0]["effects"]) == 1  # the plan and the first start mark only
    assert await runner.run(task("remove-delegates")) == "ran"
    removals = [p["User"] for c, p in exchange.calls if c == "Remove-MailboxPermission"]
    assert sorted(removals) == ["eve@contoso.com", "mallory@contoso.com"]  # each once
    detail = deps.ledger.step_detail(INCIDENT, "remove-delegates")
    assert sorted(e["trustee"] for e in detail["removed"]) == ["eve@contoso.com", "mallory@contoso.com"]


async def test_a_retry_runs_a_state_verified_removal_again_when_it_did_not_land():
    deps, runner, exchange, _ = world("remove-delegates")
    mailbox_with_two_delegates(exchange)
    invoke = exchange.invoke
    died: list[bool] = []

    async def dies_before_eve(cmdlet, parameters=None, anchor=None, warnings=None):
        if cmdlet == "Remove-MailboxPermission" and (parameters or {}).get("User") == "eve@contoso.com" and not died:
            died.append(True)
            exchange.calls.append((cmdlet, {"User": "(never sent)"}))
            raise RuntimeError("worker died before the call went out")
        result = await invoke(cmdlet, parameters, anchor, warnings)
        if cmdlet == "Get-MailboxPermission" and (parameters or {}).get("User"):  # the service filters by -User
            result = [r for r in result if r["User"] == parameters["User"]]
        if cmdlet == "Remove-MailboxPermission":
            exchange.results["Get-MailboxPermission"] = [
                r for r in exchange.results["Get-MailboxPermission"] if r["User"] != (parameters or {}).get("User")]
        return result

    exchange.invoke = dies_before_eve
    with pytest.raises(RuntimeError):
        await runner.run(task("remove-delegates"))
    assert await runner.run(task("remove-delegates")) == "ran"
    removals = [p["User"] for c, p in exchange.calls if c == "Remove-MailboxPermission"]
    assert removals == ["mallory@contoso.com", "(never sent)", "eve@contoso.com"]  # eve still there: run again
    assert [r["User"] for r in exchange.results["Get-MailboxPermission"]] == ["NT AUTHORITY\\SELF"]
