"""recovery-pass (RECOVERY=tap): the one-time Temporary Access Pass reaches the help desk or the manager
only, never the user's mailbox, is never stored or logged, is never issued twice for a delivered one
(each crash window), and a disabled policy, an out-of-range lifetime or a protected user is reported."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from shared.deps import Deps
from shared.errors import PermanentError, TransientError
from shared.model import StepTask
from shared.settings import Settings
from shared.steps import StepRunner, registry
from shared.steps.recovery_pass import manager_problem, tap_policy_problem
from tests.helpers.fakes import FakeGraph, FakeLedger, FakeQueues
from tests.plugins.tenant_world import SEED

UID = "0dc668f6-43fa-5f46-a937-25829277128d"
UPN = "adele.vance@contoso.onmicrosoft.com"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
HELPDESK = "helpdesk@contoso.onmicrosoft.com"
INCIDENT = "inc-0123456789abcdef0456"
TAP_ENV = {"RECOVERY": "tap", "RECOVERY_HELPDESK_MAILBOX": HELPDESK}
PASS_IN_MAIL = re.compile(r"^    (\S+)$", re.M)


# -- pure decisions ---------------------------------------------------------------------------------

def test_the_policy_must_be_enabled_and_the_lifetime_in_its_range():
    enabled = {"state": "enabled", "minimumLifetimeInMinutes": 60, "maximumLifetimeInMinutes": 480}
    assert tap_policy_problem(enabled, 60) == ""
    assert "disabled" in tap_policy_problem({**enabled, "state": "disabled"}, 60)
    assert "out of the tenant's Temporary Access Pass policy range (60-480" in tap_policy_problem(enabled, 30)
    assert "out of" in tap_policy_problem(enabled, 481)


@pytest.mark.parametrize("manager, open_incident, why", [
    (None, False, "no manager"),
    ({"@odata.type": "#microsoft.graph.orgContact", "mail": "boss@partner.example"}, False, "not a user"),
    ({"id": "m1", "mail": "boss@contoso.com", "accountEnabled": False}, False, "disabled"),
    ({"id": "m1", "mail": "", "accountEnabled": True}, False, "no mailbox"),
    ({"id": UID, "mail": "other@contoso.com", "accountEnabled": True}, False, "is the user"),
    ({"id": "m1", "mail": UPN, "accountEnabled": True}, False, "is the user"),
    ({"id": "m1", "mail": "boss@contoso.com", "accountEnabled": True}, True, "open incident"),
])
def test_a_manager_who_cannot_be_trusted_with_the_pass_is_refused(manager, open_incident, why):
    user = {"user_id": UID, "user_principal_name": UPN}
    assert why in manager_problem(manager, user, open_incident)
    assert manager_problem({"id": "m1", "mail": "boss@contoso.com", "accountEnabled": True}, user, False) == ""


# -- with the fakes: the crash windows ---------------------------------------------------------------

def fake_world(**env: str) -> tuple[Deps, StepRunner, FakeGraph]:
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "NOTIFY_SENDER": "responder@contoso.com",
                                  "SOC_MAILBOX": "soc@contoso.com", **TAP_ENV, **env})
    graph = FakeGraph(users=[{"id": UID, "userPrincipalName": UPN}])
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph)
    deps.ledger.incidents[INCIDENT] = {"incident_id": INCIDENT, "user_key": UID, "user_id": UID, "state": "running",
                                       "user_resolved": True, "playbook": "recovery-pass", "current_step": "recovery-pass",
                                       "user_principal_name": UPN, "protected": "no", "_etag": "W/1"}
    return deps, StepRunner(deps, registry()), graph


def run(runner: StepRunner):
    return runner.run(StepTask(incident_id=INCIDENT, step="recovery-pass", user_key=UID, correlation_id="c"))


def pass_mails(graph: FakeGraph) -> list[dict]:
    return [m for m in graph.outbox if "Recovery pass" in m["subject"]]


def taps_of(graph: FakeGraph) -> list[dict]:
    return [m for m in graph.auth_methods.get(UID, []) if "temporaryAccessPass" in m["@odata.type"]]


async def test_the_pass_is_mailed_to_the_help_desk_only_and_recorded_without_the_secret():
    deps, runner, graph = fake_world()
    await run(runner)
    [mail] = pass_mails(graph)
    assert mail["to"] == HELPDESK and mail["from"] == "responder@contoso.com"
    (user, secret), = graph.taps
    assert user == UID and PASS_IN_MAIL.findall(mail["text"]) == [secret] and secret not in mail["subject"]
    detail = deps.ledger.step_detail(INCIDENT, "recovery-pass")
    assert detail["recovery"] == "issued" and detail["to"] == HELPDESK and detail["via"] == "helpdesk"
    assert detail["expires_at"] and detail["usable_once"] is True and graph.calls[-1][0] == "send_mail"
    assert ("create_tap", UID, 60, True) in graph.calls
    stored = json.dumps([deps.ledger.incidents, {str(k): v for k, v in deps.ledger.steps.items()}], default=str)
    assert secret not in stored


async def test_a_crash_after_graph_issued_the_pass_but_before_the_mail_replaces_it_with_one_new_pass():
    deps, runner, graph = fake_world()
    original = graph.create_tap

    async def issued_then_killed(*args, **kwargs):
        await original(*args, **kwargs)
        raise RuntimeError("worker killed after the POST")

    graph.create_tap = issued_then_killed  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await run(runner)
    assert pass_mails(graph) == [] and len(taps_of(graph)) == 1
    graph.create_tap = original  # type: ignore[method-assign]
    await run(runner)  # the redelivery
    [mail] = pass_mails(graph)
    assert len(graph.taps) == 2 and len(taps_of(graph)) == 1, "the unmailed pass was replaced, not kept beside"
    assert PASS_IN_MAIL.findall(mail["text"]) == [graph.taps[-1][1]]


async def test_a_crash_while_mailing_never_issues_a_second_pass_and_says_delivery_is_uncertain():
    deps, runner, graph = fake_world()
    graph.fail("send_mail", RuntimeError("worker killed while sending"))
    with pytest.raises(RuntimeError):
        await run(runner)
    await run(runner)  # the redelivery
    assert len(graph.taps) == 1 and pass_mails(graph) == []
    detail = deps.ledger.step_detail(INCIDENT, "recovery-pass")
    assert detail["recovery"] == "uncertain" and "DELIVERY UNCERTAIN" in detail["action_required"]
    assert detail["expires_at"]
    await run(runner)  # and again: the step is done
    assert len(graph.taps) == 1 and graph.count("create_tap") == 1


async def test_a_refused_mail_deletes_the_undelivered_pass():
    deps, runner, graph = fake_world()
    graph.fail("send_mail", PermanentError("Graph POST sendMail: 400 ErrorInvalidRecipients", status=400))
    await run(runner)
    detail = deps.ledger.step_detail(INCIDENT, "recovery-pass")
    assert detail["recovery"] == "not-delivered" and "the pass was deleted" in detail["action_required"]
    assert taps_of(graph) == [] and graph.count("delete_tap") == 1


async def test_a_5xx_on_the_mail_keeps_the_pass_and_asks_a_person_because_it_may_have_left():
    deps, runner, graph = fake_world()
    graph.fail("send_mail", TransientError("Graph POST sendMail: 503", status=503))
    await run(runner)
    detail = deps.ledger.step_detail(INCIDENT, "recovery-pass")
    assert detail["recovery"] == "uncertain" and len(taps_of(graph)) == 1 and graph.count("delete_tap") == 0


async def test_a_protected_or_privileged_user_never_gets_a_pass_automatically():
    deps, runner, graph = fake_world()
    deps.ledger.incidents[INCIDENT].update(protected="yes", protection="protected: yes, because Global Administrator")
    await run(runner)
    detail = deps.ledger.step_detail(INCIDENT, "recovery-pass")
    assert graph.count("create_tap") == 0 and graph.count("get_tap_policy") == 0
    assert "protected or privileged" in detail["action_required"]


async def test_recovery_none_skips_without_a_graph_call():
    deps, runner, graph = fake_world(RECOVERY="none")
    await run(runner)
    assert deps.ledger.steps[(INCIDENT, "recovery-pass")]["state"] == "skipped" and graph.calls == []


# -- against the tenant simulator --------------------------------------------------------------------

def seed_with(tap_policy: dict | None = None, manager: object = "keep") -> dict:
    seed = json.loads(json.dumps(SEED))
    if tap_policy is not None:
        seed["authenticationMethodsPolicy"]["temporaryAccessPass"].update(tap_policy)
    if manager != "keep":
        adele = next(u for u in seed["users"] if u["userPrincipalName"] == UPN)
        if manager is None:
            adele.pop("manager", None)
        else:
            adele["manager"] = manager
    return seed


async def contain(world) -> tuple[str, dict]:
    incident_id = await world.open(UPN)
    await world.drive()
    return incident_id, world.view(incident_id)


async def test_sim_the_pass_reaches_the_manager_and_only_its_hash_is_kept(make_world):
    world = await make_world(seed_with(), **TAP_ENV, RECOVERY_DELIVER_TO="manager")
    incident_id, view = await contain(world)
    assert view["state"] == "succeeded", view
    detail = world.detail(incident_id, "recovery-pass")
    assert detail["to"] == MEGAN and detail["via"] == "manager" and detail["recovery"] == "issued"
    mails = world.outbox()
    [mail] = [m for m in mails if "Recovery pass" in m["subject"]]
    assert mail["toRecipients"] == [MEGAN]
    [secret] = PASS_IN_MAIL.findall(mail["body"]["content"])
    user = world.sim.client.user_state(UPN)
    [tap] = [m for m in user["auth_methods"] if m["type"] == "temporaryAccessPass"]
    assert tap["isUsableOnce"] is True and tap["lifetimeInMinutes"] == 60
    # The simulator keeps a SHA-256 of the pass it issued: the mailed pass is that one.
    assert user["tap_sha256"] == [hashlib.sha256(secret.encode()).hexdigest()]
    state = world.sim.client.state(users=True)
    assert secret not in json.dumps({k: v for k, v in state.items() if k != "outbox"})
    assert all(secret not in m["body"]["content"] for m in mails if m is not mail)
    ledger_text = json.dumps([world.ledger.incidents, {str(k): v for k, v in world.ledger.steps.items()}], default=str)
    assert secret not in ledger_text


async def test_sim_a_manager_with_an_open_incident_is_passed_over_for_the_help_desk(make_world):
    world = await make_world(seed_with(), **TAP_ENV, RECOVERY_DELIVER_TO="manager", RESPONDER_MODE="approval")
    held = await world.open(MEGAN)  # Megan's own incident, held for approval: open
    assert world.ledger.incidents[held]["state"] == "held"
    world.deps = Deps(**{**world.deps.__dict__, "settings": Settings.from_env({**world.deps.settings.raw, "RESPONDER_MODE": "auto"})})
    world.runner.deps = world.deps
    incident_id, _ = await contain(world)
    detail = world.detail(incident_id, "recovery-pass")
    assert detail["to"] == HELPDESK and "open incident" in detail["fallback"]


async def test_sim_no_manager_is_a_404_and_the_help_desk_gets_the_pass(make_world):
    world = await make_world(seed_with(manager=None), **TAP_ENV, RECOVERY_DELIVER_TO="manager")
    incident_id, _ = await contain(world)
    detail = world.detail(incident_id, "recovery-pass")
    assert detail["to"] == HELPDESK and "no manager" in detail["fallback"]
    assert world.sim.client.requests(service="graph", method="GET", path_contains="/manager")[-1]["status"] == 404


async def test_sim_a_disabled_policy_is_reported_and_nothing_is_issued(make_world):
    world = await make_world(seed_with({"state": "disabled"}), **TAP_ENV)
    incident_id, view = await contain(world)
    detail = world.detail(incident_id, "recovery-pass")
    assert view["state"] == "succeeded" and detail["recovery"] == "refused"
    assert "policy is disabled" in detail["action_required"]
    assert world.sim.client.user_state(UPN)["taps_issued"] == 0
    subjects = [m["subject"] for m in world.outbox()]
    assert any(s.startswith("[Breach Responder] ACTION REQUIRED: RECOVERY PASS NOT DELIVERED") for s in subjects), subjects


async def test_sim_a_lifetime_out_of_the_policy_range_is_reported(make_world):
    world = await make_world(seed_with(), **TAP_ENV, RECOVERY_TAP_LIFETIME_MINUTES="30")
    incident_id, _ = await contain(world)
    detail = world.detail(incident_id, "recovery-pass")
    assert "out of the tenant's Temporary Access Pass policy range (60-480 minutes)" in detail["action_required"]
    assert world.sim.client.user_state(UPN)["taps_issued"] == 0


async def test_sim_graph_refuses_a_pass_when_the_policy_is_disabled(make_world):
    world = await make_world(seed_with({"state": "disabled"}))
    with pytest.raises(PermanentError) as caught:
        await world.deps.graph.create_tap(UID, 60)
    assert caught.value.status == 400 and "Converged UserCredentialPolicy does not allow" in str(caught.value)
    with pytest.raises(PermanentError) as caught:
        await (await make_world(seed_with())).deps.graph.create_tap(UID, 30)
    assert caught.value.status == 400 and "minimumLifetimeInMinutes" in str(caught.value)
