"""``responder poison list|replay`` (shared/poison.py) against real Azurite.

Poison messages are produced the way the app produces them: ``functions.common.quarantine``
with the real Ledger and QueueSender (the body re-sent to ``<queue>-poison`` as a new message,
and an error row naming the ORIGINAL message id and the poison copy's id), and the way the
host does after maxDequeueCount failures (the stored base64 text copied unchanged, no error row).
"""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
from azure.functions.queue import QueueMessage

from functions.common import quarantine
from shared.bootstrap import open_storage
from shared.cli import main as responder
from shared.deps import Deps
from shared.model import IncidentRequest, StepTask
from shared.poison import UnknownQueueError, list_poison, max_dequeue_count
from shared.poison import replay as replay_queue
from shared.redrive import _give_up

ADELE = "adele.vance@contoso.onmicrosoft.com"


@pytest.fixture
async def store(azurite, fresh_storage, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.delenv("ALERTS_QUEUE", raising=False)
    st = open_storage({"AzureWebJobsStorage": azurite.connection_string})
    await st.ledger.ensure()
    await st.queues.ensure(["alerts", "alerts-poison", "step-reset-password", "step-reset-password-poison"])
    try:
        yield st
    finally:
        await st.close()


async def list_entries(store, queue: str) -> list:
    return await list_poison(store.ledger, store.queues, queue)


async def replay(store, queue: str, message_id: str | None = None) -> list:
    return await replay_queue(store.queues, queue, message_id)


async def quarantined(store, queue: str, body: str | bytes, reason: str, original_id: str, dequeue_count: int = 1) -> None:
    """Exactly what a handler does with a message that can never succeed."""
    deps = Deps(settings=None, ledger=store.ledger, queues=store.queues)
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    await quarantine(deps, queue, QueueMessage(id=original_id, body=raw, dequeue_count=dequeue_count), reason)


async def moved_by_host(store, queue: str, body: bytes) -> None:
    """What the host does after maxDequeueCount failures: the stored base64 text, copied, no error row."""
    client = store.clients.queues.get_queue_client(f"{queue}-poison")
    await client.send_message(base64.b64encode(body).decode("ascii"))


async def stored(store, queue: str) -> list:
    return list(await store.clients.queues.get_queue_client(queue).peek_messages(max_messages=32))


def texts(messages) -> list[str]:
    return sorted(base64.b64decode(m.content).decode("utf-8") for m in messages)


async def test_quarantined_alerts_are_listed_with_the_reason_recorded_for_each(store):
    injected = '{"version": 1, "user_principal_name": "x\' or 1 eq 1"}'
    await quarantined(store, "alerts", injected, "user_principal_name is not a valid user principal name", "orig-1", 1)
    await quarantined(store, "alerts", "this is not json", "message is not JSON: JSONDecodeError", "orig-2", 1)
    await moved_by_host(store, "alerts", b'{"version": 1, "user_principal_name": "a@contoso.com"}')

    entries = await list_entries(store, "alerts")

    assert len(entries) == 3
    by_body = {e["excerpt"]: e for e in entries}
    bad_upn = by_body[injected]
    assert bad_upn["moved_by"] == "app" and bad_upn["reason"] == "user_principal_name is not a valid user principal name"
    assert bad_upn["original_message_id"] == "orig-1" and bad_upn["recorded_at"]
    assert bad_upn["id"] != "orig-1"  # the poison copy is a new message
    assert by_body["this is not json"]["reason"] == "message is not JSON: JSONDecodeError"
    assert by_body["this is not json"]["original_message_id"] == "orig-2"
    host = by_body['{"version": 1, "user_principal_name": "a@contoso.com"}']
    assert host["moved_by"] == "host" and host["original_message_id"] == ""
    assert host["reason"].startswith(f"moved by the host after {max_dequeue_count()} failed attempts")
    assert all(e["inserted_at"].endswith("Z") and e["dequeue_count"] == 0 for e in entries)


async def test_the_same_body_quarantined_twice_gets_one_reason_per_poison_message(store):
    body = '{"version": 2, "user_principal_name": "a@contoso.com"}'
    await quarantined(store, "alerts", body, "first reason", "orig-a")
    await quarantined(store, "alerts", body, "second reason", "orig-b")

    entries = await list_entries(store, "alerts")

    assert sorted(e["reason"] for e in entries) == ["first reason", "second reason"]
    assert sorted(e["original_message_id"] for e in entries) == ["orig-a", "orig-b"]


async def test_a_reason_belongs_to_its_own_poison_message_not_to_another_with_the_same_body(store):
    body = '{"version": 1, "user_principal_name": "a@contoso.com"}'
    await quarantined(store, "alerts", body, "quarantined by the app", "orig-q")
    await moved_by_host(store, "alerts", body.encode("utf-8"))  # same body, later, moved by the host

    entries = await list_entries(store, "alerts")

    assert sorted(e["moved_by"] for e in entries) == ["app", "host"]
    app = next(e for e in entries if e["moved_by"] == "app")
    assert app["reason"] == "quarantined by the app" and app["original_message_id"] == "orig-q"
    rows = await store.ledger.list_errors("alerts")
    assert [r["poison_message_id"] for r in rows] == [app["id"]]  # the row names the poison copy


async def test_a_large_body_is_listed_as_a_200_character_excerpt_not_in_full(store):
    body = json.dumps({"version": 1, "user_principal_name": ADELE, "reason": "x" * 40_000})
    await quarantined(store, "alerts", body, "reason must be a string of at most 500 characters", "orig-big")

    [entry] = await list_entries(store, "alerts")

    assert entry["size"] == len(body)
    assert entry["excerpt"] == body[:200] + "..."
    assert entry["reason"] == "reason must be a string of at most 500 characters"


async def test_replay_moves_every_poison_message_back_to_the_source_queue_and_empties_poison(store):
    good_later = IncidentRequest(user_id=None, user_principal_name=ADELE).to_json()
    await quarantined(store, "alerts", good_later, "storage was misconfigured (cause since fixed)", "orig-1")
    await moved_by_host(store, "alerts", b'{"version": 1, "user_principal_name": "megan.bowen@contoso.onmicrosoft.com"}')
    listed = {e["id"] for e in await list_entries(store, "alerts")}

    replayed = await replay(store, "alerts")

    assert set(replayed) == listed and len(replayed) == 2
    assert await stored(store, "alerts-poison") == []
    assert texts(await stored(store, "alerts")) == sorted(
        [good_later, '{"version": 1, "user_principal_name": "megan.bowen@contoso.onmicrosoft.com"}'])
    # What is back on the queue decodes exactly as the alerts function would read it.
    back = await stored(store, "alerts")
    assert {IncidentRequest.from_json(base64.b64decode(m.content)).user_principal_name for m in back} == {
        ADELE, "megan.bowen@contoso.onmicrosoft.com"}


async def test_replay_with_an_id_moves_only_that_message_and_leaves_the_others_visible(store):
    for n in range(3):
        await quarantined(store, "alerts", f'{{"n": {n}}}', f"reason {n}", f"orig-{n}")
    entries = await list_entries(store, "alerts")
    target = next(e for e in entries if e["excerpt"] == '{"n": 1}')

    replayed = await replay(store, "alerts", target["id"])

    assert replayed == [target["id"]]
    assert texts(await stored(store, "alerts")) == ['{"n": 1}']
    assert texts(await stored(store, "alerts-poison")) == ['{"n": 0}', '{"n": 2}']  # peek sees them: visible now
    assert {e["reason"] for e in await list_entries(store, "alerts")} == {"reason 0", "reason 2"}


async def test_replay_of_an_id_that_is_not_on_the_poison_queue_fails_and_moves_nothing(store):
    await quarantined(store, "alerts", '{"n": 0}', "reason 0", "orig-0")

    with pytest.raises(LookupError, match="no message"):
        await replay(store, "alerts", "no-such-id")

    assert texts(await stored(store, "alerts-poison")) == ['{"n": 0}']
    assert await stored(store, "alerts") == []


async def test_a_step_task_is_replayed_byte_for_byte_onto_its_step_queue(store):
    task = StepTask(incident_id="inc-0123456789abcdef0123", step="reset-password", user_key=ADELE,
                    correlation_id="c0ffee00-0000-4000-8000-000000000001").to_json()
    await quarantined(store, "step-reset-password", task, "incident row missing (restored since)", "orig-s")
    binary = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    await moved_by_host(store, "step-reset-password", binary)

    listing = await list_entries(store, "step-reset-password")
    assert sorted(e["moved_by"] for e in listing) == ["app", "host"]
    assert await list_entries(store, "alerts") == []  # another queue's poison is not mixed in

    assert len(await replay(store, "step-reset-password")) == 2

    back = sorted(base64.b64decode(m.content) for m in await stored(store, "step-reset-password"))
    assert back == sorted([task.encode("utf-8"), binary])
    assert StepTask.from_json(next(b for b in back if b.startswith(b"{"))).incident_id == "inc-0123456789abcdef0123"


async def test_a_step_task_the_redrive_sweeper_gave_up_on_is_listed_with_the_sweepers_reason(store):
    task = StepTask(incident_id="inc-00000000000000000042", step="reset-password", user_key=ADELE,
                    correlation_id="c0ffee00-0000-4000-8000-000000000042")
    await moved_by_host(store, "step-reset-password", task.to_json().encode("utf-8"))
    [parked] = await store.queues.peek("step-reset-password-poison", 32)
    deps = Deps(settings=None, ledger=store.ledger, queues=store.queues)
    await _give_up(deps, "step-reset-password", task, 3, parked.id)  # exactly what the sweeper writes

    [entry] = await list_entries(store, "step-reset-password")

    assert entry["moved_by"] == "host"
    assert "given up by the redrive sweeper" in entry["reason"] and "outlasted 3 redrive(s)" in entry["reason"]


async def test_replay_when_the_poison_queue_is_empty_replays_nothing(store):
    assert await replay(store, "step-close") == []
    assert await list_entries(store, "step-close") == []


async def test_an_unknown_queue_name_is_refused_with_the_valid_names(store):
    with pytest.raises(UnknownQueueError, match="unknown queue 'nope': one of alerts, step-snapshot"):
        await list_entries(store, "nope")
    with pytest.raises(UnknownQueueError, match="source queue, not its poison queue: 'alerts'"):
        await replay(store, "alerts-poison")
    with pytest.raises(UnknownQueueError):
        await replay(store, "step-unknown")


def _cli(argv: list[str]) -> int:
    return responder(argv)


async def test_cli_lists_as_json_replays_by_id_and_refuses_an_unknown_queue(store, capsys):
    await quarantined(store, "alerts", '{"version": 3}', "unsupported breach-responder/incident-request version 3", "orig-1")
    await quarantined(store, "alerts", '{"version": 4}', "unsupported breach-responder/incident-request version 4", "orig-2")

    # The CLI runs its own event loop: call it from a worker thread, as an operator's shell would.
    assert await asyncio.to_thread(_cli, ["poison", "list", "alerts", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(e["reason"] for e in listed) == ["unsupported breach-responder/incident-request version 3",
                                                   "unsupported breach-responder/incident-request version 4"]
    assert await asyncio.to_thread(_cli, ["poison", "list", "alerts"]) == 0
    text = capsys.readouterr().out
    assert "2 message(s) on alerts-poison" in text and "reason: unsupported breach-responder/incident-request version 3" in text

    first = next(e["id"] for e in listed if e["excerpt"] == '{"version": 3}')
    assert await asyncio.to_thread(_cli, ["poison", "replay", "alerts", "--id", first]) == 0
    assert first in capsys.readouterr().out
    assert texts(await stored(store, "alerts")) == ['{"version": 3}']

    assert await asyncio.to_thread(_cli, ["poison", "list", "incidents"]) == 2
    assert "unknown queue" in capsys.readouterr().err
    assert await asyncio.to_thread(_cli, ["poison", "replay", "alerts", "--id", "gone"]) == 2
    assert "no message" in capsys.readouterr().err
