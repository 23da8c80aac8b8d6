"""Intake against the responder's own echo (issue 12 item 9), with fakes: one open-or-recent incident
per user whatever key the source used, the responder's own confirmCompromised ignored, and after a
close only a signal newer than the close opens a new incident (an older one is ignored: alerts
attach only to incidents that are not over)."""
from datetime import datetime, timedelta, timezone

from shared.deps import Deps
from shared.intake import submit
from shared.model import IncidentRequest
from shared.settings import Settings
from shared.timestamps import iso
from shared.userindex import index_user_keys
from tests.helpers.fakes import FakeLedger, FakeQueues

USER_ID = "0dc668f6-43fa-5f46-a937-25829277128d"
UPN = "adele.vance@contoso.onmicrosoft.com"


def make() -> Deps:
    return Deps(settings=Settings.from_env({"RESPONDER_MODE": "auto"}), ledger=FakeLedger(), queues=FakeQueues(),
                graph=None)


async def resolved(deps: Deps, incident_id: str) -> None:
    """What the runner does when it resolves the user of an incident opened from a UPN."""
    incident = deps.ledger.incidents[incident_id]
    incident["user_id"] = USER_ID
    await index_user_keys(deps.ledger, [USER_ID, UPN], incident_id, incident["created_at"])


async def close(deps: Deps, incident_id: str, at: datetime, confirmed: bool = True) -> None:
    fields = {"state": "succeeded", "finished_at": iso(at)}
    if confirmed:
        fields["risk_confirmed_at"] = iso(at - timedelta(minutes=2))
    await deps.ledger.update_incident(incident_id, fields)


async def test_a_signal_by_object_id_attaches_to_the_incident_opened_by_upn():
    deps = make()
    first = await submit(deps, IncidentRequest(user_id=None, user_principal_name=UPN))
    await resolved(deps, first.incident_id)
    by_id = await submit(deps, IncidentRequest(user_id=USER_ID, user_principal_name=None, source="graph-riskyusers"))
    both = await submit(deps, IncidentRequest(user_id=USER_ID, user_principal_name=UPN, source="entra-diagnostics"))
    assert (by_id.outcome, by_id.incident_id) == ("attached", first.incident_id)
    assert (both.outcome, both.incident_id) == ("attached", first.incident_id)
    assert len(deps.ledger.incidents) == 1


async def test_a_signal_by_upn_attaches_to_the_incident_opened_by_object_id():
    deps = make()
    first = await submit(deps, IncidentRequest(user_id=USER_ID, user_principal_name=UPN, source="graph-riskyusers"))
    again = await submit(deps, IncidentRequest(user_id=None, user_principal_name=UPN))
    assert (again.outcome, again.incident_id) == ("attached", first.incident_id)


async def test_the_responders_own_confirmation_is_ignored_even_after_the_close():
    deps = make()
    first = await submit(deps, IncidentRequest(user_id=USER_ID, user_principal_name=UPN))
    closed_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    await close(deps, first.incident_id, closed_at)
    # Identity Protection lags: the echo can carry a time after the close
    echo = IncidentRequest(user_id=USER_ID, user_principal_name=UPN, source="entra-diagnostics",
                           risk_detail="adminConfirmedUserCompromised", detected_at=iso(datetime.now(timezone.utc)))
    assert (await submit(deps, echo)).outcome == "ignored"
    assert len(deps.ledger.incidents) == 1


async def test_after_the_close_only_a_newer_signal_opens_a_new_incident():
    deps = make()
    first = await submit(deps, IncidentRequest(user_id=USER_ID, user_principal_name=UPN))
    closed_at = datetime.now(timezone.utc) - timedelta(minutes=10)
    await close(deps, first.incident_id, closed_at)
    old = IncidentRequest(user_id=USER_ID, user_principal_name=UPN, source="graph-riskyusers",
                          detected_at=iso(closed_at - timedelta(minutes=30)), alert_ids=("late-replay",))
    replayed = await submit(deps, old)
    # never attached to a finished incident: the old signal is ignored, the record stays as it ended
    assert replayed.outcome == "ignored" and "before the end" in replayed.reason
    assert "late-replay" not in deps.ledger.incidents[first.incident_id]["alert_ids"]
    new = IncidentRequest(user_id=USER_ID, user_principal_name=UPN, source="graph-riskyusers",
                          detected_at=iso(closed_at + timedelta(minutes=5)))
    result = await submit(deps, new)
    assert result.outcome == "created" and result.incident_id != first.incident_id
    # the new incident now owns the user's index rows
    assert (await submit(deps, IncidentRequest(user_id=None, user_principal_name=UPN))).incident_id == result.incident_id


async def test_indexing_a_new_key_is_one_write_and_an_existing_key_moves_only_to_a_newer_incident():
    ledger = FakeLedger()
    calls: list[str] = []
    for name in ("get_open", "claim_open"):
        original = getattr(ledger, name)

        async def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return await _original(*args, **kwargs)

        setattr(ledger, name, counted)
    await index_user_keys(ledger, [USER_ID], "inc-b", "2026-12-02T10:00:00.000Z")
    assert calls == ["claim_open"]  # a key seen for the first time: created, not read first
    await index_user_keys(ledger, [USER_ID], "inc-a", "2026-12-01T10:00:00.000Z")  # an older incident
    assert (await ledger.get_open(USER_ID))[0]["incident_id"] == "inc-b"
    await index_user_keys(ledger, [USER_ID], "inc-c", "2026-12-03T10:00:00.000Z")  # a newer one takes the key
    assert (await ledger.get_open(USER_ID))[0]["incident_id"] == "inc-c"
    await index_user_keys(ledger, ["", USER_ID], "inc-c", "2026-12-03T10:00:00.000Z")  # already there: no write
    assert calls[-2:] == ["claim_open", "get_open"]
