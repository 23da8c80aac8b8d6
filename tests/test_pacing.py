"""Pacing per Microsoft service (shared/adapters/pacing.py): requests classified into their service's
bucket by path, quotas from settings divided among instances, containment first, first come first
served, AIMD on 429s, Outlook slots per mailbox; against the simulator's published throttles, a
paced adapter stays under the quota where an unpaced one is answered 429."""
from __future__ import annotations

import asyncio

import pytest

from shared.adapters.credentials import build_credential
from shared.adapters.graph import GraphAdapter
from shared.adapters.pacing import (
    CUT,
    FLOOR,
    MARGIN,
    RECOVERY_S,
    TICK_S,
    Bucket,
    KeyedSlots,
    Pacer,
    PacingLimits,
    classify_graph,
    identity_cost,
    next_tick,
)
from shared.priority import Priority, priority
from shared.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- classification (pure)

@pytest.mark.parametrize("method, path, buckets", [
    ("GET", "/identityProtection/riskyUsers/x", ["idp"]),
    ("POST", "/identityProtection/riskyUsers/confirmCompromised", ["idp"]),
    ("GET", "/identity/conditionalAccess/policies", ["idp"]),
    ("GET", "/auditLogs/directoryAudits", ["reports"]),
    ("GET", "/security/alerts_v2", ["security"]),
    ("POST", "/users/soc@contoso.com/sendMail", ["outlook"]),
    ("PATCH", "/users/x/mailFolders/inbox/messageRules/r", ["outlook"]),
    ("PATCH", "/users/x", ["directory-write", "directory-ru"]),
    ("POST", "/users/x/revokeSignInSessions", ["directory-write", "directory-ru"]),
    ("DELETE", "/oauth2PermissionGrants/g", ["directory-write", "directory-ru"]),  # a call stream D adds: no wiring
    ("GET", "/users/x/appRoleAssignments", ["directory-ru"]),
    ("POST", "/users/x/checkMemberGroups", ["directory-ru"]),
    ("GET", "/v1.0/users/x/authentication/methods", ["directory-ru"]),
])
def test_a_request_is_paced_by_its_services_bucket_from_its_method_and_path(method, path, buckets):
    charges, _ = classify_graph(method, path, {})
    assert [c.bucket for c in charges] == buckets


def test_identity_reads_cost_the_resource_units_of_the_docs_table():
    assert identity_cost("GET", ["users", "x"], {"$select": "id"}) == (1, 0)
    assert identity_cost("GET", ["users"], {}) == (2, 0)
    assert identity_cost("POST", ["users", "x", "checkMemberGroups"], {}) == (4, 0)
    assert identity_cost("GET", ["users", "x", "transitiveMemberOf", "microsoft.graph.directoryRole"],
                         {"$select": "id"}) == (1, 0)
    assert identity_cost("PATCH", ["users", "x"], {}) == (1, 1)
    charges, mailbox = classify_graph("POST", "/users/SOC@x.com/sendMail", {})
    assert mailbox == "soc@x.com" and charges[0].key == "soc@x.com"


def test_rates_come_from_the_quotas_the_write_share_and_the_instance_count():
    rates = PacingLimits().rates()
    assert rates["directory-write"] == pytest.approx(3000 / 150 * (1 - MARGIN))  # app + tenant binds at share 1
    assert rates["idp"] == pytest.approx(1 - MARGIN)
    assert rates["reports"] == pytest.approx(0.5 * (1 - MARGIN))
    shared = PacingLimits(directory_write_share=0.1, instances=2).rates()
    assert shared["directory-write"] == pytest.approx(18000 / 300 * 0.1 / 2 * (1 - MARGIN))  # the tenant share binds
    assert shared["directory-ru"] == pytest.approx(350 / 2 * (1 - MARGIN))
    assert PacingLimits(instances=8).concurrency() == {"outlook": 1, "exo": 1}


def test_settings_give_the_published_numbers_by_default_and_refuse_nonsense():
    settings = Settings.from_env({})
    assert PacingLimits.from_settings(settings.pacing) == PacingLimits()
    assert Settings.from_env({"PACING_DIRECTORY_WRITE_SHARE": "0.1"}).pacing["directory_write_share"] == 0.1
    from shared.errors import ConfigError
    for bad in ({"PACING_DIRECTORY_WRITE_SHARE": "2"}, {"PACING_IDP_PER_S": "0"}, {"PACING_INSTANCES": "x"},
                {"PACING_EXO_PER_10S": "nan"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


# ---------------------------------------------------------------------- the bucket

async def _served(arrivals: list[tuple[str, Priority]]) -> tuple[list[str], Bucket]:
    """Queue ``arrivals`` one after another at an empty bucket; the order they are served in."""
    bucket = Bucket("directory-write", rate=50.0)
    bucket.tokens = 0.0
    order: list[str] = []

    async def one(name: str, level: Priority) -> None:
        await bucket.take(1, level)
        order.append(name)

    tasks = []
    for name, level in arrivals:
        tasks.append(asyncio.create_task(one(name, level)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return order, bucket


async def test_containment_is_served_before_waiting_clean_up_and_each_class_first_come_first_served():
    order, bucket = await _served([(f"clean-{i}", Priority.NORMAL) for i in range(3)]
                                  + [(f"contain-{i}", Priority.CONTAINMENT) for i in range(2)])
    assert order == ["contain-0", "contain-1", "clean-0", "clean-1", "clean-2"]
    assert bucket.waited == 5


async def test_the_incident_nearest_to_containment_goes_first_then_the_intakes_then_the_later_steps():
    order, _ = await _served([("clean-up", Priority.NORMAL), ("intake", Priority.INTAKE), ("snapshot", Priority.APPROACH),
                              ("reset", Priority.CONTAINMENT), ("intake-2", Priority.INTAKE)])
    assert order == ["reset", "snapshot", "intake", "intake-2", "clean-up"]


async def test_within_a_priority_the_oldest_incidents_calls_go_first_so_its_step_finishes_first():
    """Three snapshots of five calls each at one bucket: served incident by incident (the first is done
    after 5 grants), not round-robin (where every one would wait for nearly all 15)."""
    bucket = Bucket("exo", rate=100.0)
    bucket.tokens = 0.0
    done: list[str] = []

    async def snapshot(name: str, created: float) -> None:
        for _ in range(5):
            await bucket.take(1, Priority.APPROACH, created)
        done.append(name)

    tasks = [asyncio.create_task(snapshot(name, created)) for name, created in (("third", 3.0), ("first", 1.0),
                                                                                 ("second", 2.0))]
    await asyncio.gather(*tasks)
    assert done == ["first", "second", "third"]
    assert bucket.granted == 15


def test_each_step_runs_at_its_distance_from_containment():
    from shared.playbook import STEP_NAMES
    from shared.steps.base import place_in_line, step_priority

    assert place_in_line({"created_at": "2026-12-02T10:00:00Z"}) < place_in_line({"created_at": "2026-12-02T10:00:01Z"})
    levels = {step: step_priority(STEP_NAMES, step) for step in STEP_NAMES}
    assert levels["snapshot"] is Priority.APPROACH and levels["reset-password"] is Priority.CONTAINMENT
    assert levels["enforce-mfa"] is Priority.CONTAINMENT  # its group add must not wait for the whole storm
    assert {levels[s] for s in STEP_NAMES[STEP_NAMES.index("enforce-mfa") + 1:]} == {Priority.NORMAL}


def test_the_release_grid_is_the_first_tick_at_or_after_the_time_the_units_are_there():
    assert next_tick(12.3) == pytest.approx(12.3)
    assert next_tick(12.3 + 1e-6) == pytest.approx(12.4)
    assert next_tick(0.0001) == pytest.approx(TICK_S)


async def test_waiting_requests_are_released_together_once_a_tick_not_one_timer_per_token():
    """At 50 units/s a tick brings 5: ten waiting requests go in two or three releases (one timer per
    token would wake the worker ten times), and never faster than the pace."""
    bucket = Bucket("exo", rate=50.0)
    assert bucket.tick == TICK_S  # its bank (12.5) holds a request and a tick's refill (5)
    bucket.tokens = 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    released: list[float] = []

    async def one() -> None:
        await bucket.take(1)
        released.append(loop.time())

    await asyncio.gather(*(one() for _ in range(10)))
    releases = 1 + sum(1 for a, b in zip(released, released[1:]) if b - a > 0.01)
    assert bucket.granted == 10 and bucket.waited == 10
    assert releases <= 3
    assert released[-1] - start >= 10 / 50.0 - 0.005  # the tenth unit is there after 0.2 s, not before


async def test_a_slow_bucket_keeps_its_whole_pace():
    """3 units/s banks one unit: released once a tick (0.3 units), what was left after a release plus the
    next ticks' refill would pass the bank and be thrown away (a release every 0.4 s: 2.5/s). It is
    released when its units are there: six waiting requests take two seconds, not 2.4."""
    bucket = Bucket("reports", rate=3.0)
    assert bucket.depth == 1.0 and bucket.tick == 0.0
    bucket.tokens = 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    released: list[float] = []

    async def one() -> None:
        await bucket.take(1)
        released.append(loop.time())

    await asyncio.gather(*(one() for _ in range(6)))
    assert released[-1] - start >= 6 / 3.0 - 0.005
    assert released[-1] - start <= 6 / 3.0 + 0.2  # (0.2: a loaded machine's late timers)


async def test_a_one_request_deep_quota_never_sees_two_requests_closer_than_its_pace():
    """Identity Protection allows 1 request/s and banks one (the simulator's bucket, like Microsoft's
    unpublished one, is that strict): paced at 0.98/s from a full bank, no two requests go out less
    than 1/0.98 s apart (a bank of 1.1 units let the second go 0.92 s after the first: a 429)."""
    bucket = Bucket("idp", rate=0.98)
    assert bucket.depth == 1.0 and bucket.tick == 0.0
    loop = asyncio.get_running_loop()
    released: list[float] = []

    async def one() -> None:
        await bucket.take(1)
        released.append(loop.time())

    await asyncio.gather(*(one() for _ in range(3)))
    gaps = [b - a for a, b in zip(released, released[1:])]
    assert all(gap >= 1 / 0.98 - 0.002 for gap in gaps), gaps


async def test_a_429_slows_the_pace_once_per_overshoot_and_stops_for_retry_after_then_recovers():
    clock = Clock()
    bucket = Bucket("directory-write", rate=6.0, clock=clock)
    bucket.penalize(2.5)
    bucket.penalize(2.5)  # the same overshoot answered twice: one cut
    assert bucket.rate == pytest.approx(6.0 * CUT) and bucket.paused_until == pytest.approx(clock.now + 2.5)
    assert bucket.throttled == 2
    clock.now += 2.0
    bucket.penalize(0.1)  # a second overshoot 2 s later: cut again; the longer pause stands
    assert bucket.rate == pytest.approx(6.0 * CUT * CUT) and bucket.paused_until == pytest.approx(1002.5)
    clock.now += 2.0
    for _ in range(8):  # overshoot after overshoot, each pausing it (no recovery meanwhile)
        clock.now += 2.0
        bucket.penalize(5.0)
    assert bucket.rate == pytest.approx(6.0 * FLOOR)  # never below a quarter of the ceiling
    clock.now = bucket.paused_until + RECOVERY_S
    bucket._refill(clock.now)
    assert bucket.rate == pytest.approx(6.0)  # grown back, never above the configured ceiling
    clock.now += 100
    bucket._refill(clock.now)
    assert bucket.rate == pytest.approx(6.0)


def test_a_429_without_retry_after_waits_one_to_one_and_a_half_seconds():
    clock = Clock()
    bucket = Bucket("idp", rate=1.0, clock=clock)
    bucket.penalize(None)  # Identity Protection sends no Retry-After
    assert clock.now + 1.0 <= bucket.paused_until <= clock.now + 1.5


async def test_a_cancelled_waiter_gives_its_place_to_the_next():
    bucket = Bucket("idp", rate=100.0)
    bucket.tokens = 0.0
    first = asyncio.create_task(bucket.take(1))
    second = asyncio.create_task(bucket.take(1))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert first.cancelled()


async def test_outlook_allows_the_configured_slots_per_mailbox_and_hands_a_freed_one_over():
    slots = KeyedSlots(2)
    inside = asyncio.Event()
    release = asyncio.Event()
    entered: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with slots.slot(key):
            entered.append(name)
            if len(entered) == 3:
                inside.set()
            await release.wait()

    tasks = [asyncio.create_task(hold("a", f"a{i}")) for i in range(3)] + [asyncio.create_task(hold("b", "b0"))]
    await inside.wait()
    assert sorted(entered) == ["a0", "a1", "b0"]  # the third request to mailbox a waits; mailbox b does not
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(entered) == ["a0", "a1", "a2", "b0"]
    assert slots._busy == {} and slots._waiters == {}


async def test_the_priority_travels_with_the_task_into_the_pacer():
    pacer = Pacer(PacingLimits(directory_writes_per_150s=150 * 50, tenant_writes_per_300s=300 * 50))
    bucket = pacer.buckets["directory-write"]
    bucket.tokens = 0.0
    order = []

    async def write(name: str, level: Priority) -> None:
        with priority(level):
            async with pacer.graph("PATCH", "/users/x"):
                order.append(name)

    normal = asyncio.create_task(write("mfa", Priority.NORMAL))
    await asyncio.sleep(0)
    urgent = asyncio.create_task(write("reset", Priority.CONTAINMENT))
    await asyncio.gather(normal, urgent)
    assert order == ["reset", "mfa"]


# ---------------------------------------------------------------------- against the simulator's throttles

async def _burst(sim, pacer: Pacer, n: int) -> None:
    credential = build_credential()
    graph = GraphAdapter(credential, sim.url, timeout_s=10, pacer=pacer)
    try:
        await asyncio.gather(*(graph.get_risky_user("0dc668f6-43fa-5f46-a937-25829277128d") for _ in range(n)))
    finally:
        await graph.close()
        await credential.close()


async def test_paced_requests_stay_under_the_quota_where_unpaced_ones_are_throttled(sim_identity_env):
    sim = sim_identity_env
    # Identity Protection at 20 requests/s (the real 1/s, scaled so the test is quick)
    sim.client.set_limits({"profile": "published", "overrides": {"idp": {"limit": 20}}})
    await _burst(sim, Pacer(PacingLimits(idp_per_s=20)), 30)
    assert sim.client.requests(service="graph", status=429) == []
    assert sim.client.limits()["counters"]["idp"]["requests"] == 30
    sim.client.clear_requests()
    unpaced = Pacer(PacingLimits.unlimited())
    await _burst(sim, unpaced, 30)  # the adapter still gets there, through 429s and its retries
    assert len(sim.client.requests(service="graph", status=429)) > 0


async def test_a_quota_configured_too_high_is_corrected_by_the_429s(sim_identity_env):
    sim = sim_identity_env
    sim.client.set_limits({"profile": "published", "overrides": {"idp": {"limit": 10}}})
    pacer = Pacer(PacingLimits(idp_per_s=40))  # the operator over-estimated (or another instance shares it)
    await _burst(sim, pacer, 40)
    bucket = pacer.buckets["idp"]
    assert bucket.throttled >= 1 and bucket.rate < bucket.ceiling
    throttled = len(sim.client.requests(service="graph", status=429))
    assert 0 < throttled < 40


# ---------------------------------------------------------------------- one service's 429 is that service's

class _Token:
    token, expires_on = "t", 4_102_444_800.0


class _Credential:
    async def get_token(self, *_scopes: str) -> _Token:
        return _Token()


async def test_a_429_from_one_service_never_holds_back_another_services_requests():
    """Microsoft throttles each service on its own: directory audits answering 429 with a long
    Retry-After must not pause or narrow the password reset and session revoke behind them (they
    would then go out together when the pause ends, and overrun the write quota)."""
    from aiohttp import web

    throttled = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        if "/auditLogs/" in request.path:
            throttled.set()
            return web.json_response({"error": {"code": "TooManyRequests"}}, status=429, headers={"Retry-After": "30"})
        if request.method == "PATCH":
            return web.Response(status=204)
        return web.json_response({"value": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    graph = GraphAdapter(_Credential(), f"http://127.0.0.1:{port}", pacer=Pacer(PacingLimits()))
    audits = [asyncio.create_task(graph.list_user_audits("u2", "2026-11-01T00:00:00Z"))]
    try:
        await throttled.wait()  # the audit read has been answered 429 ...
        for _ in range(500):  # ... and the adapter has told the pacer
            if graph.pacer.buckets["reports"].throttled:
                break
            await asyncio.sleep(0.01)
        assert graph.pacer.buckets["reports"].throttled == 1
        with priority(Priority.CONTAINMENT):
            await asyncio.wait_for(asyncio.gather(
                graph.request("PATCH", "/users/u1", body={"accountEnabled": True}, permission="User.ReadWrite.All"),
                graph.revoke_sessions("u1")), timeout=10)
        assert not any(task.done() for task in audits)  # still waiting out their own Retry-After
        assert graph.pacer.buckets["reports"].paused_until > graph.pacer.buckets["directory-write"].paused_until
    finally:
        for task in audits:
            task.cancel()
        await asyncio.gather(*audits, return_exceptions=True)
        await graph.close()
        await runner.cleanup()
