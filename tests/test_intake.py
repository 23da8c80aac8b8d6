"""Intake policy: dedupe per user, approval mode, storm breaker (told once), risk threshold."""
from datetime import datetime, timedelta, timezone

from shared.deps import Deps
from shared.intake import submit
from shared.model import IncidentRequest
from shared.policy import risk_passes
from shared.settings import Settings
from shared.timestamps import iso
from tests.helpers.fakes import FakeLedger, FakeQueues


def make(**env):
    settings = Settings.from_env({"RESPONDER_MODE": "auto", **env})
    return Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=None)


def req(upn="a@contoso.com", **kw):
    return IncidentRequest(user_id=None, user_principal_name=upn, **kw)


async def test_second_alert_for_the_same_user_attaches_and_enqueues_nothing_new():
    deps = make()
    first = await submit(deps, req(alert_ids=("a1",)))
    second = await submit(deps, req(alert_ids=("a2",), source="http"))
    assert first.outcome == "created" and second.outcome == "attached"
    assert second.incident_id == first.incident_id
    assert deps.ledger.incidents[first.incident_id]["alert_ids"] == "a1,a2"
    assert len(deps.queues.on("step-snapshot")) == 1


async def test_replaying_the_same_alert_creates_nothing():
    deps = make()
    await submit(deps, req(alert_ids=("a1",)))
    deps.ledger.steps[(next(iter(deps.ledger.incidents)), "snapshot")] = {"state": "running"}
    again = await submit(deps, req(alert_ids=("a1",)))
    assert again.outcome == "attached" and len(deps.ledger.incidents) == 1
    assert len(deps.queues.on("step-snapshot")) == 1


async def test_a_lost_first_enqueue_is_repaired_by_the_redelivered_alert():
    deps = make()
    first = await submit(deps, req())
    deps.queues.sent.clear()  # as if the worker died after writing the incident, before enqueueing
    deps.ledger.incidents[first.incident_id]["state"] = "new"
    again = await submit(deps, req())
    assert again.incident_id == first.incident_id
    assert len(deps.queues.on("step-snapshot")) == 1


async def test_an_alert_attaches_to_a_running_incident_however_old_it_is():
    deps = make()
    first = await submit(deps, req())
    deps.ledger.incidents[first.incident_id]["state"] = "running"
    deps.ledger.incidents[first.incident_id]["created_at"] = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    second = await submit(deps, req(alert_ids=("late",)))
    assert second.outcome == "attached" and second.incident_id == first.incident_id


async def test_an_alert_never_attaches_to_an_incident_that_is_over():
    deps = make()
    for end in ("succeeded", "failed", "rejected", "expired"):
        first = await submit(deps, req(f"{end}@contoso.com"))
        deps.ledger.incidents[first.incident_id].update(state=end, finished_at=iso(datetime.now(timezone.utc) - timedelta(hours=1)))
        newer = await submit(deps, req(f"{end}@contoso.com", alert_ids=("new",)))
        assert newer.outcome == "created" and newer.incident_id != first.incident_id, end
        assert "new" not in deps.ledger.incidents[first.incident_id]["alert_ids"]


async def test_approval_mode_holds_every_new_incident():
    deps = make(RESPONDER_MODE="approval")
    result = await submit(deps, req())
    assert result.outcome == "held" and deps.queues.sent == []
    assert deps.ledger.incidents[result.incident_id]["state"] == "held"


async def test_storm_breaker_holds_incidents_past_the_threshold_and_tells_the_operator_once(caplog):
    deps = make(STORM_THRESHOLD="3", STORM_WINDOW_MINUTES="10")
    outcomes = [(await submit(deps, req(f"u{i}@contoso.com"))).outcome for i in range(6)]
    assert outcomes == ["created"] * 3 + ["held"] * 3
    assert sum("STORM BREAKER" in r.getMessage() for r in caplog.records) == 1
    assert len(deps.queues.on("step-snapshot")) == 3


async def test_low_risk_stream_alerts_are_ignored_but_manual_requests_are_not():
    deps = make(MIN_RISK_LEVEL="medium")
    assert (await submit(deps, req(risk_level="low", source="entra-diagnostics"))).outcome == "ignored"
    assert (await submit(deps, req("b@contoso.com", risk_level="low", source="manual"))).outcome == "created"


def test_risk_threshold_ordering_and_unknown():
    assert risk_passes("high", "medium") and not risk_passes("low", "medium")
    assert not risk_passes("unknown", "low") and risk_passes("unknown", "none")


async def test_a_worker_runs_at_most_intake_concurrency_intakes_at_once(monkeypatch):
    """A storm's alerts wait for a slot instead of all running at once beside the first resets."""
    import asyncio

    import shared.intake as intake_module

    running, most = 0, 0

    async def one_intake(*_args, **_kwargs):
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1
        return "done"

    monkeypatch.setattr(intake_module, "_submit", one_intake)
    deps = Deps(settings=Settings.from_env({"INTAKE_CONCURRENCY": "3"}), ledger=None, queues=None)  # type: ignore[arg-type]
    results = await asyncio.gather(*(intake_module.submit(deps, None) for _ in range(20)))  # type: ignore[arg-type]
    assert results == ["done"] * 20 and most == 3
