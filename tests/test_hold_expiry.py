"""Held incidents expire after HOLD_TTL_HOURS into ``expired`` (terminal, no change in the tenant)
with a SOC mail; approving or rejecting an overdue incident expires it instead. A fake clock
moves time: nothing sleeps. The ledger is real Table storage (Azurite)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.approval import approve, expire_held, reject
from shared.bootstrap import open_storage
from shared.deps import Deps
from shared.intake import submit
from shared.model import IncidentRequest
from shared.principal import Principal
from shared.settings import Settings
from shared.states import TERMINAL_INCIDENT_STATES, IncidentState
from shared.timestamps import iso
from tests.helpers.fakes import FakeClock, FakeGraph

ADELE = {"id": "0dc668f6-43fa-5f46-a937-25829277128d", "userPrincipalName": "adele.vance@contoso.onmicrosoft.com"}
MEGAN = {"id": "db5829ad-8269-5e33-bdbb-564d04662a23", "userPrincipalName": "megan.bowen@contoso.onmicrosoft.com"}
ALICE = Principal("a1a1a1a1-0000-4000-8000-000000000001", "alice@contoso.onmicrosoft.com", frozenset({"Incident.Approve"}))


@pytest.fixture
async def world(azurite, fresh_storage):
    clock = FakeClock()
    storage = open_storage({"AzureWebJobsStorage": azurite.connection_string}, clock=clock)
    await storage.ledger.ensure()
    settings = Settings.from_env({"RESPONDER_MODE": "approval", "HOLD_TTL_HOURS": "24", "SOC_MAILBOX": "soc@contoso.com",
                                  "NOTIFY_SENDER": "responder@contoso.com"})
    deps = Deps(settings=settings, ledger=storage.ledger, queues=storage.queues, graph=FakeGraph([ADELE, MEGAN]),
                clock=clock)
    try:
        yield deps, clock
    finally:
        await storage.close()


async def held(deps, clock, user) -> str:
    result = await submit(deps, IncidentRequest(user_id=None, user_principal_name=user["userPrincipalName"],
                                                detected_at=iso(clock())))
    assert result.outcome == "held"
    return result.incident_id


def test_expired_and_rejected_are_terminal_states():
    assert {IncidentState.EXPIRED, IncidentState.REJECTED} <= TERMINAL_INCIDENT_STATES


def expiry_mails(deps) -> list[dict]:
    """The expiry mails (the SOC was also mailed when each incident was held: shared/notify.py)."""
    return [m for m in deps.graph.outbox if "HELD INCIDENT EXPIRED" in m["subject"]]


async def test_a_held_incident_expires_after_the_ttl_and_the_soc_is_told(world):
    deps, clock = world
    incident_id = await held(deps, clock, ADELE)
    clock.advance(timedelta(hours=23, minutes=59).total_seconds())
    assert await expire_held(deps) == {"expired": 0, "mailed": 0}
    assert (await deps.ledger.get_incident(incident_id))["state"] == "held"
    clock.advance(120)
    assert await expire_held(deps) == {"expired": 1, "mailed": 0}
    incident = await deps.ledger.get_incident(incident_id)
    assert incident["state"] == "expired" and incident["expiry_mail"] == "sent" and incident["finished_at"]
    [mail] = expiry_mails(deps)
    assert mail["to"] == "soc@contoso.com" and mail["from"] == "responder@contoso.com"
    assert "HELD INCIDENT EXPIRED" in mail["subject"] and incident_id in mail["subject"]
    assert "nothing was changed" in mail["text"]
    assert deps.graph.count("reset_password") == 0 and deps.graph.count("revoke_sessions") == 0
    assert await expire_held(deps) == {"expired": 0, "mailed": 0}  # once
    assert (await approve(deps, incident_id, ALICE)).outcome == "not-held"


async def test_approving_or_rejecting_an_overdue_incident_expires_it_instead(world):
    deps, clock = world
    first, second = await held(deps, clock, ADELE), await held(deps, clock, MEGAN)
    clock.advance(timedelta(hours=25).total_seconds())
    assert (await approve(deps, first, ALICE)).outcome == "expired"
    assert (await reject(deps, second, ALICE, "no")).outcome == "expired"
    for incident_id in (first, second):
        incident = await deps.ledger.get_incident(incident_id)
        assert incident["state"] == "expired" and incident["expiry_mail"] == "sent"
    assert len(expiry_mails(deps)) == 2 and await deps.queues.peek("step-snapshot", 5) == []


async def test_an_expiry_whose_mail_was_not_sent_is_mailed_by_the_next_sweep(world):
    deps, clock = world
    incident_id = await held(deps, clock, ADELE)
    clock.advance(timedelta(hours=25).total_seconds())
    deps.graph.fail("send_mail", ConnectionResetError("lost"))  # not a ResponderError: the worker would die here
    with pytest.raises(ConnectionResetError):
        await expire_held(deps)
    incident = await deps.ledger.get_incident(incident_id)
    assert incident["state"] == "expired" and not incident.get("expiry_mail")
    assert await expire_held(deps) == {"expired": 0, "mailed": 1}
    assert (await deps.ledger.get_incident(incident_id))["expiry_mail"] == "sent" and len(expiry_mails(deps)) == 1
