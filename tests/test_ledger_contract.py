"""One contract, two ledgers: every test here runs against the in-memory fake (tests/helpers)
and against the Table-storage ledger on the session Azurite (through the SDK alone, and with its
point operations over REST as deployed: shared/adapters/tablerest.py), all on the same injected
clock. They make the claim/lease decision with the same pure function
(shared/ledger_protocol.py); this suite proves they also apply it the same way."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from azure.data.tables.aio import TableServiceClient

from shared.adapters.ledger import TABLES, Ledger
from shared.adapters.tablerest import endpoint_of
from shared.errors import ConflictError, TransientError
from shared.ledger_protocol import ClaimStatus
from shared.states import StepState
from shared.timestamps import iso
from tests.helpers.fakes import FakeClock, FakeLedger


@pytest.fixture(params=["fake", "tables", "tables-rest"])
async def world(request):
    """The fake; the ledger on the SDK alone; the ledger as deployed (point operations over REST)."""
    clock = FakeClock()
    if request.param == "fake":
        yield FakeLedger(clock=clock), clock
        return
    azurite = request.getfixturevalue("azurite")  # started only when a "tables" case runs
    async with TableServiceClient.from_connection_string(azurite.connection_string) as tables:
        rest = endpoint_of(tables) if request.param == "tables-rest" else None
        ledger = Ledger(tables, clock=clock, rest=rest)
        await ledger.ensure()
        await empty_tables(tables)
        yield ledger, clock
        if rest is not None:
            await rest.close()


async def empty_tables(tables: TableServiceClient) -> None:
    for name in TABLES:
        client = tables.get_table_client(name)
        async for entity in client.list_entities(select=["PartitionKey", "RowKey"]):
            await client.delete_entity(entity["PartitionKey"], entity["RowKey"])


async def test_the_first_claim_creates_the_row_running_with_a_lease_on_the_injected_clock(world):
    ledger, clock = world
    claim = await ledger.claim_step("inc-c1", "snapshot", 60, "corr-1")
    assert claim.status is ClaimStatus.CLAIMED and claim.attempts == 1 and claim.checkpoint == {}
    row = await ledger.get_step("inc-c1", "snapshot")
    assert row["state"] == StepState.RUNNING and row["attempts"] == 1 and row["correlation_id"] == "corr-1"
    assert row["started_at"] == iso(clock()) and row["lease_until"] == iso(clock() + timedelta(seconds=60))


async def test_a_live_lease_is_busy_until_it_ends_then_taken_over_with_one_more_attempt(world):
    ledger, clock = world
    first = await ledger.claim_step("inc-c2", "reset-password", 60, "a")
    clock.advance(20)
    busy = await ledger.claim_step("inc-c2", "reset-password", 60, "b")
    assert busy.status is ClaimStatus.BUSY and busy.retry_in == pytest.approx(40, abs=0.01)
    clock.advance(41)
    taken = await ledger.claim_step("inc-c2", "reset-password", 60, "b")
    assert taken.status is ClaimStatus.CLAIMED and taken.attempts == 2
    assert (await ledger.get_step("inc-c2", "reset-password"))["correlation_id"] == "b"
    with pytest.raises(ConflictError, match="lost the lease"):
        await ledger.checkpoint("inc-c2", "reset-password", first, {"x": 1})  # the old holder can no longer write


async def test_busy_asks_to_look_again_in_at_least_a_second(world):
    ledger, clock = world
    await ledger.claim_step("inc-c3", "close", 60, "a")
    clock.advance(59.9)
    assert (await ledger.claim_step("inc-c3", "close", 60, "b")).retry_in == 1.0


async def test_only_one_of_two_concurrent_claims_wins(world):
    ledger, _ = world
    first, second = await asyncio.gather(
        ledger.claim_step("inc-c4", "reset-password", 60, "a"),
        ledger.claim_step("inc-c4", "reset-password", 60, "b"),
    )
    assert sorted([first.status, second.status]) == [ClaimStatus.BUSY, ClaimStatus.CLAIMED]


@pytest.mark.parametrize("state", [StepState.SUCCEEDED, StepState.SKIPPED, StepState.PLANNED, StepState.FAILED])
async def test_a_finished_step_is_done_for_every_later_claim(world, state):
    ledger, clock = world
    claim = await ledger.claim_step("inc-c5", "snapshot", 60, "a")
    await ledger.checkpoint("inc-c5", "snapshot", claim, {"effects": {"e": {"done_at": "t"}}})
    await ledger.finish("inc-c5", "snapshot", claim, state, {"summary": "ok"}, "", 12)
    row = await ledger.get_step("inc-c5", "snapshot")
    assert row["state"] == state and row["finished_at"] == iso(clock()) and row["lease_until"] == ""
    assert row["duration_ms"] == 12 and '"summary":"ok"' in row["detail"]
    clock.advance(3600)
    again = await ledger.claim_step("inc-c5", "snapshot", 60, "b")
    assert again.status is ClaimStatus.DONE and again.row["state"] == state
    assert again.checkpoint == {"effects": {"e": {"done_at": "t"}}}


async def test_a_released_step_is_claimable_at_once_and_keeps_its_checkpoint(world):
    ledger, _ = world
    claim = await ledger.claim_step("inc-c6", "enforce-mfa", 60, "a")
    await ledger.checkpoint("inc-c6", "enforce-mfa", claim, {"effects": {"add": {"issued_at": "t"}}})
    await ledger.release("inc-c6", "enforce-mfa", claim, "Graph POST: 503 " + "x" * 2000)
    row = await ledger.get_step("inc-c6", "enforce-mfa")
    assert row["state"] == StepState.RETRYING and len(row["error"]) == 1000
    again = await ledger.claim_step("inc-c6", "enforce-mfa", 60, "b")  # no waiting for the old lease
    assert again.status is ClaimStatus.CLAIMED and again.attempts == 2
    assert again.checkpoint == {"effects": {"add": {"issued_at": "t"}}}


async def test_a_held_step_is_not_finished_approval_claims_it_again(world):
    ledger, _ = world
    claim = await ledger.claim_step("inc-c7", "snapshot", 60, "a")
    await ledger.finish("inc-c7", "snapshot", claim, StepState.HELD, {"reason": "protected"}, "protected")
    again = await ledger.claim_step("inc-c7", "snapshot", 60, "b")
    assert again.status is ClaimStatus.CLAIMED and again.attempts == 2


async def test_oversized_detail_is_stored_bounded(world):
    ledger, _ = world
    claim = await ledger.claim_step("inc-c8", "snapshot", 60, "a")
    await ledger.finish("inc-c8", "snapshot", claim, StepState.SUCCEEDED, {"blob": "x" * 100_000})
    row = await ledger.get_step("inc-c8", "snapshot")
    assert len(row["detail"]) < 32_000 and '"truncated": true' in row["detail"]


async def test_an_incident_update_with_a_stale_etag_is_a_conflict(world):
    ledger, _ = world
    await ledger.create_incident({"incident_id": "inc-c9", "state": "held", "created_at": "2024-01-01T00:00:00Z"})
    read = await ledger.get_incident("inc-c9")
    await ledger.update_incident("inc-c9", {"note": "someone else"})
    with pytest.raises(ConflictError) as caught:
        await ledger.update_incident("inc-c9", {"state": "queued"}, etag=read["_etag"])
    assert isinstance(caught.value, TransientError)
    assert (await ledger.get_incident("inc-c9"))["state"] == "held"


async def test_the_open_incident_index_has_one_winner(world):
    ledger, _ = world
    assert await ledger.claim_open("u1", "inc-a", "t", None) is True
    assert await ledger.claim_open("u1", "inc-b", "t", None) is False
    row, etag = await ledger.get_open("u1")
    assert row["incident_id"] == "inc-a"
    assert await ledger.claim_open("u1", "inc-c", "t", etag) is True
    assert await ledger.claim_open("u1", "inc-d", "t", etag) is False  # that etag is spent
    assert (await ledger.get_open("u1"))[0]["incident_id"] == "inc-c"


async def test_errors_keep_their_fields_and_are_listed_per_source(world):
    ledger, clock = world
    await ledger.record_error("alerts", "bad json", message_id="orig", excerpt="{", poison_message_id="p1")
    await ledger.record_error("step-close", "other")
    [row] = await ledger.list_errors("alerts")
    assert (row["reason"], row["message_id"], row["excerpt"], row["poison_message_id"]) == ("bad json", "orig", "{", "p1")
    assert row["recorded_at"] == iso(clock())


async def test_defender_halves_watermarks_and_redrive_counters_round_trip(world):
    ledger, _ = world
    await ledger.add_pending_half("alert/1", "info-1", "info", '{"i":1}')
    await ledger.add_pending_half("alert/1", "evidence-1", "evidence", '{"e":1}')
    await ledger.add_pending_half("alert/1", "info-1", "info", '{"i":1}')  # a replayed batch adds nothing
    assert await ledger.pending_halves("alert/1") == (['{"i":1}'], ['{"e":1}'])
    assert await ledger.pending_halves("alert/2") == ([], [])
    assert await ledger.get_watermark("riskyUsers") is None
    await ledger.set_watermark("riskyUsers", "2024-05-01T10:00:00Z")
    assert await ledger.get_watermark("riskyUsers") == "2024-05-01T10:00:00Z"
    assert await ledger.get_redrive("alerts", "d1") == {}
    await ledger.put_redrive("alerts", "d1", 1)
    assert (await ledger.get_redrive("alerts", "d1"))["count"] == 1
    await ledger.put_redrive("alerts", "d1", 1, gave_up=True)
    assert (await ledger.get_redrive("alerts", "d1"))["gave_up"] is True


async def test_evidence_sections_stored_together_come_back_whole_even_when_they_fill_more_than_one_row(world):
    ledger, _ = world
    big = {"rows": ["x" * 99] * 280}  # ~29,000 characters: about 58 KB of an entity's 1 MiB
    sections = {f"section_{i:02d}": {**big, "n": i} for i in range(20)}  # ~1.2 MB: two rows in Table storage
    sections["small"] = {"user": {"id": "u1", "displayName": "Adele <&> Vance"}}
    sizes = await ledger.put_evidence_many("inc-ev1", sections)
    assert set(sizes) == set(sections) and all(size > 0 for size in sizes.values())
    assert await ledger.list_evidence("inc-ev1") == sections
    assert await ledger.list_evidence("inc-ev2") == {}


async def test_an_evidence_section_written_again_is_the_newest_whichever_way_it_was_written(world):
    ledger, clock = world
    await ledger.put_evidence_many("inc-ev3", {"rules": {"v": 1}, "user": {"v": 1}})
    clock.advance(1)
    await ledger.put_evidence("inc-ev3", "rules", {"v": 2})  # alone, after the bundle
    assert await ledger.list_evidence("inc-ev3") == {"rules": {"v": 2}, "user": {"v": 1}}
    clock.advance(1)
    await ledger.put_evidence_many("inc-ev3", {"rules": {"v": 3}, "forwarding": {"v": 3}})  # in another bundle
    assert await ledger.list_evidence("inc-ev3") == {"rules": {"v": 3}, "user": {"v": 1}, "forwarding": {"v": 3}}


def test_evidence_bundles_stay_inside_an_entitys_limits_and_keep_every_section_once_in_order():
    # Table storage: at most 255 properties and 1 MiB of property data per entity (learn.microsoft.com,
    # "Understanding the Table service data model"); Azurite does not enforce the size, so it is checked here.
    from shared.adapters.ledger import BUNDLE_BYTES, BUNDLE_SECTIONS, _bundles

    texts = [(f"s{i}", "y" * (29_000 if i % 3 else 10)) for i in range(450)]
    bundles = _bundles(texts)
    assert [pair for bundle in bundles for pair in bundle] == texts
    assert len(bundles) > 1
    for bundle in bundles:
        assert len(bundle) <= BUNDLE_SECTIONS
        assert sum(2 * (len(name) + len(text)) for name, text in bundle) < BUNDLE_BYTES < 1024 * 1024 - 4096
    many_small = _bundles([(f"s{i}", "z") for i in range(450)])
    assert [len(b) for b in many_small] == [BUNDLE_SECTIONS, BUNDLE_SECTIONS, 50]


async def test_a_section_written_on_its_own_is_read_alone_and_a_missing_one_is_none(world):
    ledger, _ = world
    await ledger.put_evidence_many("inc-ev4", {"user": {"v": 1}})
    await ledger.put_evidence("inc-ev4", "directory_audits", {"events": [{"id": "e1"}], "complete": True})
    assert await ledger.get_evidence("inc-ev4", "directory_audits") == {"events": [{"id": "e1"}], "complete": True}
    assert await ledger.get_evidence("inc-ev4", "exchange_audit") is None
    assert await ledger.get_evidence("inc-ev4", "user") is None  # stored in a bundle: list_evidence reads it
    assert await ledger.get_evidence("inc-ev5", "directory_audits") is None
