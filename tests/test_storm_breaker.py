"""The storm breaker on real Azurite: an atomic reservation before an incident is created (50
concurrent intakes against a threshold of 10 create exactly 10 running incidents), a latch that
holds every new incident until an operator resets it (recorded with who), a per-source quota."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from shared.bootstrap import open_storage
from shared.deps import Deps
from shared.intake import submit
from shared.model import IncidentRequest
from shared.settings import Settings
from shared.storm import StormState, decide_reservation
from tests.helpers.fakes import FakeClock, FakeGraph

USERS = [{"id": f"00000000-0000-4000-8000-{i:012d}", "userPrincipalName": f"user{i:02d}@contoso.onmicrosoft.com",
          "displayName": f"User {i}"} for i in range(60)]


@pytest.fixture
async def world(azurite, fresh_storage):
    storage = open_storage({"AzureWebJobsStorage": azurite.connection_string})
    await storage.ledger.ensure()
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "STORM_THRESHOLD": "10", "STORM_WINDOW_MINUTES": "10",
                                  "STORM_SOURCE_QUOTA": "0", "PLAYBOOK_STEPS": "reset-password"})
    deps = Deps(settings=settings, ledger=storage.ledger, queues=storage.queues, graph=FakeGraph(USERS))
    try:
        yield deps
    finally:
        await storage.close()


def request(i: int, source: str = "http") -> IncidentRequest:
    return IncidentRequest(user_id=None, user_principal_name=USERS[i]["userPrincipalName"], source=source)


async def test_fifty_concurrent_intakes_against_a_threshold_of_ten_create_exactly_ten_running_incidents(world):
    deps = world
    results = await asyncio.gather(*(submit(deps, request(i)) for i in range(50)))
    assert Counter(r.outcome for r in results) == {"created": 10, "held": 40}
    incidents = await deps.ledger.list_incidents()
    assert Counter(i["state"] for i in incidents) == {"queued": 10, "held": 40}
    assert len(await deps.queues.peek("step-reset-password", 32)) == 10
    state = await deps.ledger.storm_state()
    assert state.tripped and "threshold 10" in state.reason and len(state.reservations) == 10
    held = [i for i in incidents if i["state"] == "held"]
    assert all("storm breaker" in i["held_reason"] for i in held)


async def test_once_tripped_the_breaker_holds_until_an_operator_resets_it_and_says_who(world):
    deps = world
    for i in range(11):
        await submit(deps, request(i))
    assert (await deps.ledger.storm_state()).tripped
    # Much later the window is empty, and still: held, because the breaker latched.
    later = Deps(settings=deps.settings, ledger=deps.ledger, queues=deps.queues, graph=deps.graph,
                 clock=FakeClock(deps.clock() + timedelta(hours=3)))
    quiet = await submit(later, IncidentRequest(user_id=None, user_principal_name=USERS[20]["userPrincipalName"],
                                                detected_at=later.clock().isoformat()))
    assert quiet.outcome == "held" and "stays tripped until an operator resets it" in quiet.reason
    state = await deps.ledger.reset_storm({"object_id": "a1a1a1a1-0000-4000-8000-000000000001", "upn": "alice@contoso.com"},
                                          deps.clock())
    assert not state.tripped and state.reset_by["upn"] == "alice@contoso.com"
    stored = await deps.ledger.storm_state()
    assert stored.reset_by == {"object_id": "a1a1a1a1-0000-4000-8000-000000000001", "upn": "alice@contoso.com"}
    assert stored.reset_at and not stored.reservations
    assert (await submit(deps, request(30))).outcome == "created"


async def test_one_source_cannot_take_more_than_its_quota_of_a_window(world):
    deps = world
    quota = Deps(settings=Settings.from_env({**deps.settings.raw, "STORM_SOURCE_QUOTA": "3"}), ledger=deps.ledger,
                 queues=deps.queues, graph=deps.graph)
    outcomes = [(await submit(quota, request(i, "http"))).outcome for i in range(5)]
    assert outcomes == ["created"] * 3 + ["held"] * 2
    assert (await submit(quota, request(10, "manual"))).outcome == "created"  # another source still runs
    assert not (await deps.ledger.storm_state()).tripped  # a quota holds; it does not trip the breaker


def test_the_reservation_row_round_trips_and_forgets_what_left_the_window():
    clock = FakeClock()
    state = StormState()
    for source in ("http", "defender-stream", "http"):
        decision = decide_reservation(state, clock(), window_minutes=10, threshold=5, source=source, source_quota=0)
        assert decision.granted and decision.state is not None
        state = StormState.from_row(decision.state.to_row())
        clock.advance(240)
    assert [s for _, s in state.reservations] == ["http", "defender-stream", "http"]
    decision = decide_reservation(state, clock(), window_minutes=10, threshold=5, source="http", source_quota=0)
    assert decision.state is not None and len(decision.state.reservations) == 3  # the first one left the window
