"""The protection gate's lookups are reused for GATE_FACTS_MAX_AGE_SECONDS by the worker that read them:
the verdict is still taken before every step that changes the tenant, only the three Graph reads are
not repeated for each write step of an incident. Older facts, a failed lookup or another tenant's
client are read again."""

from shared.errors import PermanentError
from shared.gate import ProtectionGate
from shared.settings import Settings
from tests.helpers.fakes import FakeClock, FakeGraph

USER = {"id": "6e7b768e-07e2-4810-8459-485f84f8f204", "userPrincipalName": "adele.vance@contoso.onmicrosoft.com",
        "displayName": "Adele Vance", "onPremisesSyncEnabled": None}
GROUP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def settings(max_age: str = "60") -> Settings:
    return Settings.from_env({"PROTECTED_GROUP_ID": GROUP, "GATE_FACTS_MAX_AGE_SECONDS": max_age})


def reads(graph: FakeGraph) -> int:
    return sum(graph.count(m) for m in ("list_directory_roles", "check_member_groups", "list_eligible_roles"))


async def test_facts_younger_than_the_max_age_are_reused_and_older_ones_are_read_again():
    clock, graph, gate = FakeClock(), FakeGraph([USER]), ProtectionGate()
    first = await gate.lookup(graph, settings(), clock(), USER["id"])
    assert first.roles == [] and reads(graph) == 3
    graph.users[USER["id"]]["roles"] = ["Global Administrator"]  # granted in between
    clock.advance(59)
    assert (await gate.lookup(graph, settings(), clock(), USER["id"])).roles == [] and reads(graph) == 3
    clock.advance(2)  # 61 s after the read
    again = await gate.lookup(graph, settings(), clock(), USER["id"])
    assert again.roles == ["Global Administrator"] and reads(graph) == 6


async def test_a_max_age_of_zero_reads_before_every_step():
    clock, graph, gate = FakeClock(), FakeGraph([USER]), ProtectionGate()
    for _ in range(3):
        await gate.lookup(graph, settings("0"), clock(), USER["id"])
    assert graph.count("list_directory_roles") == 3 and reads(graph) == 9


async def test_a_failed_role_lookup_is_never_reused():
    clock, graph, gate = FakeClock(), FakeGraph([USER]), ProtectionGate()
    graph.fail("list_directory_roles", PermanentError("Authorization_RequestDenied"))
    failed = await gate.lookup(graph, settings(), clock(), USER["id"])
    assert failed.lookup_failed  # fail closed: protected until read
    clock.advance(1)
    assert not (await gate.lookup(graph, settings(), clock(), USER["id"])).lookup_failed
    assert graph.count("list_directory_roles") == 2


async def test_another_tenant_s_client_does_not_see_the_facts():
    clock, gate = FakeClock(), ProtectionGate()
    plain, admin_tenant = FakeGraph([USER]), FakeGraph([{**USER, "roles": ["Exchange Administrator"]}])
    assert (await gate.lookup(plain, settings(), clock(), USER["id"])).roles == []
    assert (await gate.lookup(admin_tenant, settings(), clock(), USER["id"])).roles == ["Exchange Administrator"]


async def test_a_reused_fact_is_a_copy_the_check_may_complete_without_changing_the_remembered_one():
    clock, graph, gate = FakeClock(), FakeGraph([USER]), ProtectionGate()
    upn = USER["userPrincipalName"]
    first = await gate.lookup(graph, settings(), clock(), upn)  # by UPN: eligibility waits for the object id
    assert not first.eligible_read
    first.eligible_read, first.roles = True, ["changed by the caller"]
    clock.advance(5)
    reused = await gate.lookup(graph, settings(), clock(), upn.upper())  # keys are case-insensitive
    assert not reused.eligible_read and reused.roles == [] and graph.count("list_directory_roles") == 1
