"""Identity Protection and directory-audit calls shared across incidents (shared/coalesce.py,
shared/tenant_calls.py): batched confirm/dismiss, windowed reads, the risk "before" the change
from a shared read or from Identity Protection's history, and a storm of incidents through the
steps making a handful of calls instead of several per incident."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from shared.coalesce import SharedRead, WriteBatcher
from shared.deps import Deps
from shared.errors import PermanentError
from shared.intake import submit
from shared.model import IncidentRequest, StepTask
from shared.settings import Settings
from shared.steps import StepRunner, registry
from shared.tenant_calls import MAX_IDS, TenantCalls, state_before
from shared.timestamps import iso, parse_timestamp, utcnow
from tests.helpers.fakes import FakeExchange, FakeGraph, FakeLedger, FakeQueues


def user(i: int) -> dict:
    return {"id": f"00000000-0000-4000-8000-{i:012d}", "userPrincipalName": f"user{i}@contoso.onmicrosoft.com",
            "displayName": f"User {i}", "onPremisesSyncEnabled": None}


# ---------------------------------------------------------------------- the two shapes

async def test_writes_waiting_together_go_in_one_call_of_at_most_sixty_ids():
    sent: list[list[str]] = []

    async def call(ids: list[str]) -> None:
        sent.append(list(ids))

    batcher = WriteBatcher(call, max_ids=MAX_IDS, interval_s=0.05)
    await asyncio.gather(*(batcher.submit(f"u{i}") for i in range(130)))
    assert [len(ids) for ids in sent] == [60, 60, 10]
    assert sorted(i for ids in sent for i in ids) == sorted(f"u{i}" for i in range(130))


async def test_every_caller_of_a_failed_batch_gets_the_error_and_the_next_batch_is_new():
    failures = [PermanentError("403 grant IdentityRiskyUser.ReadWrite.All", status=403)]
    sent: list[list[str]] = []

    async def call(ids: list[str]) -> None:
        sent.append(list(ids))
        if failures:
            raise failures.pop()

    batcher = WriteBatcher(call, interval_s=0.01)
    results = await asyncio.gather(*(batcher.submit(f"u{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, PermanentError) for r in results) and len(sent) == 1
    await batcher.submit("u9")
    assert sent[-1] == ["u9"]


async def test_while_more_callers_are_expected_a_batch_waits_past_the_quiet_period_and_goes_when_none_are():
    sent: list[list[str]] = []
    expected = {"more": True}

    async def call(ids: list[str]) -> None:
        sent.append(list(ids))

    batcher = WriteBatcher(call, interval_s=5.0, quiet_s=0.01, expect_more=lambda: expected["more"])
    first = asyncio.ensure_future(batcher.submit("u1"))
    await asyncio.sleep(0.1)  # ten quiet periods: without expect_more, u1 would have gone alone
    assert sent == []
    expected["more"] = False  # the last incident the worker was waiting for arrives
    await asyncio.gather(first, batcher.submit("u2"))
    assert sent == [["u1", "u2"]]


async def test_a_batch_holding_enough_callers_goes_even_while_more_are_expected():
    sent: list[list[str]] = []

    async def call(ids: list[str]) -> None:
        sent.append(list(ids))

    batcher = WriteBatcher(call, interval_s=30.0, quiet_s=0.01, expect_more=lambda: True, enough=3)
    await asyncio.wait_for(asyncio.gather(*(batcher.submit(f"u{i}") for i in range(3))), timeout=5)
    assert sent == [["u0", "u1", "u2"]]


async def test_a_lone_reader_gets_its_own_read_and_readers_waiting_together_share_one_bulk_read():
    calls = {"single": 0, "bulk": 0}

    async def single(key: str) -> str:
        calls["single"] += 1
        return f"one:{key}"

    async def bulk() -> dict[str, str]:
        calls["bulk"] += 1
        return {f"k{i}": f"all:{i}" for i in range(10)}

    async def missing(key: str) -> str:
        return f"missing:{key}"

    reads: SharedRead[str, str] = SharedRead(single, bulk, missing=missing, interval_s=0.01, wall=utcnow)
    start = utcnow()
    assert await reads.get("k1", start) == "one:k1"
    values = await asyncio.gather(*(reads.get(f"k{i}", start) for i in (2, 3, 4, 99)))
    assert values == ["all:2", "all:3", "all:4", "missing:k99"]
    assert calls == {"single": 1, "bulk": 1}
    # a later reader satisfied by the kept window: no call at all; one that needs fresher data: a new read
    assert await reads.get("k5", start) == "all:5" and calls == {"single": 1, "bulk": 1}
    assert await reads.get("k6", utcnow() + timedelta(seconds=1)) == "one:k6"
    assert calls == {"single": 2, "bulk": 1}


async def test_a_key_the_window_lacks_is_read_once_for_every_reader_that_needs_it_meanwhile():
    missing_calls: list[str] = []
    asked, release = asyncio.Event(), asyncio.Event()

    async def single(key: str) -> str:
        return f"one:{key}"

    async def bulk() -> dict[str, str]:
        return {"k1": "all:1"}

    async def missing(key: str) -> str:
        missing_calls.append(key)
        asked.set()
        await release.wait()
        return f"history:{key}"

    reads: SharedRead[str, str] = SharedRead(single, bulk, missing=missing, interval_s=0.01, wall=utcnow)
    start = utcnow()
    first = asyncio.gather(reads.get("k1", start), reads.get("k9", start))  # one bulk read; k9 is not in it
    await asked.wait()
    later = asyncio.ensure_future(reads.get("k9", start))  # answered from the same window, k9's read in flight
    await asyncio.sleep(0)
    release.set()
    assert await first == ["all:1", "history:k9"] and await later == "history:k9"
    assert missing_calls == ["k9"]


async def test_incidents_on_their_way_to_enforce_mfa_are_added_to_the_group_together_and_each_learns_its_outcome():
    graph = FakeGraph([user(i) for i in range(1, 26)])
    graph.groups["mfa"] = {user(3)["id"]}  # already a member
    calls = TenantCalls(graph, batch_s=30.0)
    ids = [user(i)["id"] for i in range(1, 26)]
    for uid in ids:  # their snapshots ran here
        calls.prefetch_risk(uid, utcnow())
    for uid in ids[20:]:
        calls.closing(uid)  # these five were held on the way: nobody waits for them
    outcomes = await asyncio.gather(*(calls.add_to_group("mfa", uid) for uid in ids[:20]))
    assert [c for c in graph.calls if c[0] == "add_group_members"] == [("add_group_members", "mfa", ids[:20])]
    assert outcomes == [uid != user(3)["id"] for uid in ids[:20]]  # the refused request, then one by one
    assert graph.groups["mfa"] == set(ids[:20])
    # a lone incident, nobody else on the way: its add goes at once, in a request of its own
    assert await calls.add_to_group("mfa", ids[20]) is True
    assert graph.calls[-1] == ("add_group_members", "mfa", [ids[20]])


async def test_the_read_after_a_dismiss_asks_only_for_changes_since_that_dismiss_began():
    """A 1,000-user storm has hundreds of users whose risk changed in the last 15 minutes: the read
    that gives a dismiss batch its final states asks for the last two minutes (one page), not those."""
    graph = FakeGraph([user(1), user(2)])
    now = parse_timestamp("2026-12-02T10:00:00Z")
    calls = TenantCalls(graph, clock=lambda: now)
    await asyncio.gather(calls.dismiss.submit(user(1)["id"]), calls.dismiss.submit(user(2)["id"]))
    reads = [c for c in graph.calls if c[0] == "list_risky_users_changed_since"]
    assert reads == [("list_risky_users_changed_since", now - timedelta(minutes=2))]


def test_the_state_before_a_change_is_the_last_one_recorded_before_it():
    t0 = parse_timestamp("2024-05-01T10:00:00Z")
    states = [{"riskState": "atRisk", "riskLevel": "medium", "riskLastUpdatedDateTime": "2024-05-01T09:00:00Z"},
              {"riskState": "atRisk", "riskLevel": "high", "riskLastUpdatedDateTime": "2024-05-01T09:30:00Z"},
              {"riskState": "remediated", "riskLevel": "none", "riskLastUpdatedDateTime": "2024-05-01T10:00:01Z"}]
    assert state_before(states, t0)["riskLevel"] == "high"
    assert state_before(states, None)["riskState"] == "remediated"
    assert state_before(states[2:], t0) is None


async def test_the_risk_before_comes_from_a_shared_read_when_unchanged_and_from_history_when_changed():
    graph = FakeGraph([user(1), user(2)])
    past = iso(utcnow() - timedelta(hours=1))
    for i in (1, 2):
        graph.set_risk(user(i)["id"], riskState="atRisk", riskLevel="high", riskDetail="none",
                       riskLastUpdatedDateTime=past)
    changed = utcnow()
    graph.set_risk(user(2)["id"], riskState="remediated", riskLevel="none", riskDetail="adminGeneratedTemporaryPassword",
                   riskLastUpdatedDateTime=iso(changed + timedelta(seconds=1)))
    calls = TenantCalls(graph)
    fresh = utcnow() - timedelta(minutes=1)
    (one, how1), (two, how2) = await asyncio.gather(calls.risk_before(user(1)["id"], fresh, changed),
                                                    calls.risk_before(user(2)["id"], fresh, changed))
    assert one["riskState"] == "atRisk" and "unchanged since" in how1
    assert (two["riskState"], two["riskLevel"]) == ("atRisk", "high") and "history" in how2
    assert graph.count("list_at_risk_users") == 1 and graph.count("list_risky_user_history") == 1
    assert graph.count("get_risky_user") == 0


# ---------------------------------------------------------------------- a storm through the steps

@pytest.fixture
def storm():
    users = [user(i) for i in range(1, 41)]
    graph = FakeGraph(users)
    for u in users:
        graph.set_risk(u["id"], riskState="atRisk", riskLevel="high", riskDetail="none",
                       riskLastUpdatedDateTime=iso(utcnow() - timedelta(minutes=30)))
        graph.detections[u["id"]] = [{"id": f"d-{u['id']}", "riskEventType": "unfamiliarFeatures",
                                      "detectedDateTime": iso(utcnow() - timedelta(minutes=40)), "activity": "signin"}]
        graph.auth_methods[u["id"]] = [{"@odata.type": "#microsoft.graph.phoneAuthenticationMethod", "id": "p",
                                        "phoneNumber": "+1 555", "phoneType": "mobile"}]
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "STORM_THRESHOLD": "500", "STORM_SOURCE_QUOTA": "0", "MFA_GROUP_ID": "g",
                                  "SOC_MAILBOX": "soc@contoso.onmicrosoft.com",
                                  "NOTIFY_SENDER": "responder@contoso.onmicrosoft.com", "IDP_BATCH_SECONDS": "1"})
    exchange = FakeExchange()
    exchange.results["Get-Mailbox"] = [{"AuditEnabled": True, "ForwardingSmtpAddress": None, "ForwardingAddress": None}]
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
    return deps, StepRunner(deps, registry()), users


async def drive_concurrently(deps: Deps, runner: StepRunner) -> None:
    """Run every queued step task, all incidents at once, until the queues are empty."""
    while True:
        pending = [b for q, b, _ in deps.queues.sent if q.startswith("step-")]
        deps.queues.sent = [m for m in deps.queues.sent if not m[0].startswith("step-")]
        if not pending:
            return
        tasks = [StepTask(**{k: v for k, v in json.loads(b).items() if k not in ("schema", "version")}) for b in pending]
        await asyncio.gather(*(runner.run(t) for t in tasks))


async def test_a_storm_confirms_dismisses_and_reads_risk_in_a_few_shared_calls(storm):
    deps, runner, users = storm
    for u in users:
        await submit(deps, IncidentRequest(user_id=u["id"], user_principal_name=u["userPrincipalName"]))
    await drive_concurrently(deps, runner)
    graph: FakeGraph = deps.graph  # type: ignore[assignment]
    incidents = list(deps.ledger.incidents.values())
    assert len(incidents) == 40 and all(i["state"] == "succeeded" for i in incidents)
    identity_protection = ("confirm_compromised", "dismiss_risk", "get_risky_user", "list_risk_detections",
                           "list_at_risk_users", "list_risky_users_changed_since", "list_risky_user_history",
                           "list_risk_detections_since")
    total = sum(graph.count(name) for name in identity_protection)
    assert total <= 12, {name: graph.count(name) for name in identity_protection}  # was 5 per incident: 200
    confirmed = {i for c in graph.calls if c[0] == "confirm_compromised" for i in c[1]}
    assert confirmed == {u["id"] for u in users}
    assert all(graph.risky[u["id"]]["riskState"] == "dismissed" for u in users)
    for incident in incidents:
        close = deps.ledger.step_detail(incident["incident_id"], "close")
        assert close["final_risk_state"] == "dismissed" and close["risk_confirmed"] == "done"
        evidence = await deps.ledger.list_evidence(incident["incident_id"])
        assert evidence["risky_user"]["riskState"] == "atRisk" and evidence["risk_detections"]
        assert parse_timestamp(incident["first_risk_at"]) == parse_timestamp(evidence["risk_detections"][0]["detectedDateTime"])
    audits = graph.count("list_user_audits") + graph.count("list_dating_audits_since")
    assert 1 <= audits <= 4  # one shared read of the directory audit log, not one per incident


class BlockedIdentityProtection(FakeGraph):
    """A tenant whose Identity Protection answers nothing until ``release`` is set."""

    def __init__(self, users: list[dict]) -> None:
        super().__init__(users)
        self.release = asyncio.Event()
        self.contained = asyncio.Event()

    async def _blocked(self) -> None:
        await self.release.wait()

    async def revoke_sessions(self, user_id: str) -> bool:
        result = await super().revoke_sessions(user_id)
        self.contained.set()
        return result

    async def list_risky_user_history(self, user_id: str) -> list[dict]:
        await self._blocked()
        return await super().list_risky_user_history(user_id)

    async def list_at_risk_users(self, max_items: int = 10_000) -> list[dict]:
        await self._blocked()
        return await super().list_at_risk_users(max_items)

    async def list_risk_detections(self, user_id: str, top: int = 50) -> list[dict]:
        await self._blocked()
        return await super().list_risk_detections(user_id, top)

    async def list_risk_detections_since(self, since, max_items: int = 50_000) -> list[dict]:
        await self._blocked()
        return await super().list_risk_detections_since(since, max_items)


async def test_containment_never_waits_on_identity_protection():
    graph = BlockedIdentityProtection([user(1)])
    graph.set_risk(user(1)["id"], riskState="atRisk", riskLevel="high", riskDetail="none",
                   riskLastUpdatedDateTime=iso(utcnow() - timedelta(minutes=5)))
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "PLAYBOOK_STEPS": "snapshot,reset-password"})
    exchange = FakeExchange()
    deps = Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=graph, exchange=exchange)
    runner = StepRunner(deps, registry())
    await submit(deps, IncidentRequest(user_id=user(1)["id"], user_principal_name=user(1)["userPrincipalName"]))
    run = asyncio.create_task(drive_concurrently(deps, runner))
    await graph.contained.wait()  # the password was reset and the sessions revoked ...
    assert graph.count("reset_password") == 1 and graph.count("revoke_sessions") == 1
    assert not graph.release.is_set() and not run.done()  # ... while Identity Protection had answered nothing
    graph.release.set()
    await run
    incident = next(iter(deps.ledger.incidents.values()))
    assert incident["state"] == "succeeded"
    evidence = await deps.ledger.list_evidence(incident["incident_id"])
    assert evidence["risky_user"]["riskState"] == "atRisk"  # the state before the reset, all the same


async def test_a_dismiss_batch_is_followed_by_one_read_that_answers_every_member_s_final_state():
    users = [user(i) for i in range(5)]
    graph = FakeGraph(users)
    for u in users:
        graph.risky[u["id"]] = {"id": u["id"], "riskState": "confirmedCompromised", "riskLevel": "high",
                                "riskLastUpdatedDateTime": iso(utcnow() - timedelta(minutes=1))}
    calls = TenantCalls(graph, batch_s=5.0)
    for u in users:
        calls.prefetch_risk(u["id"], utcnow() - timedelta(hours=1))
    await asyncio.sleep(0)

    async def close(i: int, u: dict) -> dict | None:
        calls.closing(u["id"])
        await calls.dismiss.submit(u["id"])
        await asyncio.sleep(0.06 * i)  # the members go on at their own pace (ledger writes) before they read
        return await calls.risk_settled(u["id"], utcnow())

    finals = await asyncio.gather(*(close(i, u) for i, u in enumerate(users)))
    assert [c for c in graph.calls if c[0] == "dismiss_risk"] == [("dismiss_risk", tuple(u["id"] for u in users))]
    assert graph.count("list_risky_users_changed_since") == 1 and graph.count("get_risky_user") == 0
    assert all(f is not None and f["riskState"] == "dismissed" for f in finals)


async def test_an_incident_that_failed_after_its_snapshot_is_not_waited_for_by_the_confirm_batches(storm):
    deps, runner, users = storm
    graph: FakeGraph = deps.graph  # type: ignore[assignment]
    graph.fail("reset_password", PermanentError("Request_BadRequest", status=400))  # the first incident's reset fails
    for u in users[:3]:
        await submit(deps, IncidentRequest(user_id=u["id"], user_principal_name=u["userPrincipalName"]))
    await drive_concurrently(deps, runner)
    assert sorted((i["state"], i.get("stopped_at")) for i in deps.ledger.incidents.values()) == [
        ("failed", "reset-password"), ("succeeded", None), ("succeeded", None)]
    # every incident whose snapshot ran here has closed, failed or been held: nothing left to wait for
    assert deps.tenant_calls().expects_more() is False


def test_a_waiting_confirm_batch_never_holds_more_closes_than_the_host_keeps_fetching_beside():
    """Closes held in a confirm batch are running invocations: more than host.json's newBatchThreshold
    of them would stop the close queue's fetches until the batch went (issue 15's storm)."""
    from pathlib import Path

    from shared.tenant_calls import CONFIRM_ENOUGH

    queues = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())["extensions"]["queues"]
    assert 16 <= CONFIRM_ENOUGH <= queues["newBatchThreshold"]
    assert CONFIRM_ENOUGH <= MAX_IDS


def test_the_incidents_a_batch_waits_for_expire_after_open_ttl_and_stay_bounded(monkeypatch):
    import shared.tenant_calls as tc

    now = [parse_timestamp("2026-12-02T10:00:00Z")]
    waiting = tc._OnTheirWay(lambda: now[0])
    waiting.add("A")
    assert waiting.any()
    waiting.discard("a")  # keys are case-insensitive
    assert not waiting.any()
    waiting.add("b")
    now[0] += tc.OPEN_TTL + timedelta(seconds=1)
    assert not waiting.any()  # set out longer ago than OPEN_TTL: not waited for
    monkeypatch.setattr(tc, "MAX_REMEMBERED", 3)
    for user_id in "cdef":
        waiting.add(user_id)
    assert waiting.any() and len(waiting._since) <= 3
