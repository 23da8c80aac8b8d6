"""Poison redrive against real Azurite: bounded second chances, then an honest failure."""
import base64

import pytest

from shared.adapters.ledger import Ledger
from shared.adapters.queues import QueueSender
from shared.deps import Deps
from shared.model import IncidentRequest, StepTask
from shared.redrive import sweep
from shared.settings import Settings


@pytest.fixture
async def world(fresh_storage):
    tables, queues = fresh_storage
    ledger = Ledger(tables)
    await ledger.ensure()
    sender = QueueSender(queues)
    deps = Deps(settings=Settings.from_env({"RESPONDER_MODE": "auto"}), ledger=ledger, queues=sender, graph=None)
    return deps, queues, ledger


async def poison_count(queues, queue: str) -> int:
    return len(await queues.get_queue_client(queue + "-poison").peek_messages(max_messages=32))


async def queued(queues, queue: str) -> int:
    # Redriven messages are enqueued with a delay: count them through the queue's properties.
    props = await queues.get_queue_client(queue).get_queue_properties()
    return props.approximate_message_count


async def test_poisoned_step_is_redriven_boundedly_then_its_incident_fails_with_the_reason(world):
    deps, queues, ledger = world
    await ledger.create_incident({"incident_id": "inc-redrive1", "state": "running", "playbook": "snapshot,close",
                                  "user_key": "u", "created_at": "2024-01-01T00:00:00Z"})
    claim = await ledger.claim_step("inc-redrive1", "close", 60, "c")
    await ledger.release("inc-redrive1", "close", claim, "Graph POST confirmCompromised: 503 ServiceUnavailable")
    task = StepTask("inc-redrive1", "close", "u", "c").to_json()
    for round_ in range(1, 3):
        await deps.queues.send("step-close-poison", task)
        stats = await sweep(deps, max_redrives=2)
        assert stats["redriven"] == 1 and await poison_count(queues, "step-close") == 0
        assert await queued(queues, "step-close") == round_
    await deps.queues.send("step-close-poison", task)
    stats = await sweep(deps, max_redrives=2)
    assert stats["gave_up"] == 1
    incident = await ledger.get_incident("inc-redrive1")
    assert incident["state"] == "failed" and incident["stopped_at"] == "close"
    assert "outlasted 2 redrive" in incident["stop_reason"] and "503" in incident["stop_reason"]
    assert (await ledger.get_step("inc-redrive1", "close"))["state"] == "failed"
    assert await poison_count(queues, "step-close") == 1  # kept, visible, for the operator


async def test_a_poisoned_task_whose_step_finished_meanwhile_is_dropped(world):
    deps, queues, ledger = world
    claim = await ledger.claim_step("inc-redrive2", "snapshot", 60, "c")
    await ledger.finish("inc-redrive2", "snapshot", claim, "succeeded", {})
    await deps.queues.send("step-snapshot-poison", StepTask("inc-redrive2", "snapshot", "u", "c").to_json())
    stats = await sweep(deps, max_redrives=3)
    assert stats["dropped"] == 1 and await poison_count(queues, "step-snapshot") == 0


async def test_bad_input_in_poison_is_left_for_the_operator_and_valid_alerts_are_redriven(world):
    deps, queues, ledger = world
    await deps.queues.send("alerts-poison", "this is not json")
    await deps.queues.send("alerts-poison", IncidentRequest(user_id=None, user_principal_name="a@contoso.com").to_json())
    stats = await sweep(deps, max_redrives=3)
    assert stats["left"] == 1 and stats["redriven"] == 1
    remaining = await queues.get_queue_client("alerts-poison").peek_messages(max_messages=32)
    assert [base64.b64decode(m.content).decode() for m in remaining] == ["this is not json"]


async def snapshot_finished_then_poisoned(deps, ledger, incident_id: str, current_step: str) -> None:
    """A two-step incident whose snapshot finished and whose snapshot task sits in poison."""
    await ledger.create_incident({"incident_id": incident_id, "state": "running", "playbook": "snapshot,close",
                                  "current_step": current_step, "user_key": "u", "created_at": "2024-01-01T00:00:00Z"})
    claim = await ledger.claim_step(incident_id, "snapshot", 60, "c")
    await ledger.finish(incident_id, "snapshot", claim, "succeeded", {})
    await deps.queues.send("step-snapshot-poison", StepTask(incident_id, "snapshot", "u", "c").to_json())


async def test_a_finished_step_whose_successor_was_never_enqueued_is_redriven_not_dropped(world):
    # A worker killed between the ledger write and the enqueue of the next step: the task
    # lands in poison with its step finished, and nothing else would ever move the incident.
    deps, queues, ledger = world
    await snapshot_finished_then_poisoned(deps, ledger, "inc-redrive4", current_step="snapshot")
    stats = await sweep(deps, max_redrives=3)
    assert stats["redriven"] == 1 and stats["dropped"] == 0
    assert await queued(queues, "step-snapshot") == 1


async def test_a_finished_step_whose_successor_already_started_is_dropped(world):
    deps, queues, ledger = world
    await snapshot_finished_then_poisoned(deps, ledger, "inc-redrive5", current_step="close")
    await ledger.claim_step("inc-redrive5", "close", 60, "c")
    stats = await sweep(deps, max_redrives=3)
    assert stats["dropped"] == 1 and stats["redriven"] == 0
    assert await poison_count(queues, "step-snapshot") == 0
