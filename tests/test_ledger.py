"""The Table-storage ledger against real Azurite: ETag claims, leases, the storm counter."""
import asyncio
from datetime import datetime, timezone

import pytest

from shared.adapters.ledger import Ledger
from shared.errors import TransientError


@pytest.fixture
async def ledger(fresh_storage):
    tables, _ = fresh_storage
    ledger = Ledger(tables)
    await ledger.ensure()
    return ledger


async def test_only_one_of_two_concurrent_claims_wins(ledger):
    first, second = await asyncio.gather(
        ledger.claim_step("inc-race1", "reset-password", 60, "a"),
        ledger.claim_step("inc-race1", "reset-password", 60, "b"),
    )
    assert sorted([first.status, second.status]) == ["busy", "claimed"]


async def test_finished_step_is_done_and_an_expired_lease_is_taken_over(ledger):
    claim = await ledger.claim_step("inc-lease1", "snapshot", 60, "a")
    await ledger.finish("inc-lease1", "snapshot", claim, "succeeded", {"summary": "ok"})
    assert (await ledger.claim_step("inc-lease1", "snapshot", 60, "b")).status == "done"
    crashed = await ledger.claim_step("inc-lease2", "snapshot", 0, "a")  # lease already expired
    retaken = await ledger.claim_step("inc-lease2", "snapshot", 60, "b")
    assert crashed.status == retaken.status == "claimed" and retaken.attempts == 2
    with pytest.raises(TransientError, match="lost the lease"):
        await ledger.checkpoint("inc-lease2", "snapshot", crashed, {"x": 1})  # the old holder can no longer write


async def test_checkpoints_survive_a_new_claim(ledger):
    claim = await ledger.claim_step("inc-cp1", "close", 0, "a")
    await ledger.checkpoint("inc-cp1", "close", claim, {"effects": {"confirm": {"done_at": "t"}}})
    again = await ledger.claim_step("inc-cp1", "close", 60, "b")
    assert again.checkpoint == {"effects": {"confirm": {"done_at": "t"}}}


async def test_storm_counter_counts_every_concurrent_incident(ledger):
    now = datetime.now(timezone.utc)
    await asyncio.gather(*(ledger.record_new_incident_for_storm(f"inc-s{i}", now) for i in range(40)))
    assert await ledger.count_recent_incidents(now, 10, 1000) == 40
    assert await ledger.count_recent_incidents(now, 10, 25) == 25


async def test_oversized_detail_is_stored_bounded(ledger):
    claim = await ledger.claim_step("inc-big1", "snapshot", 60, "a")
    await ledger.finish("inc-big1", "snapshot", claim, "succeeded", {"blob": "x" * 100_000})
    row = await ledger.get_step("inc-big1", "snapshot")
    assert len(row["detail"]) < 32_000 and '"truncated": true' in row["detail"]


async def test_evidence_sections_are_stored_together_and_read_back(ledger):
    sections = {f"section{i}": {"i": i, "rules": [{"name": "r" * 50}] * 5} for i in range(30)}
    sections["huge"] = {"blob": "x" * 100_000}
    sizes = await ledger.put_evidence_many("inc-evidence", sections)
    assert set(sizes) == set(sections) and sizes["huge"] <= 30_000
    stored = await ledger.list_evidence("inc-evidence")
    assert stored["section7"] == sections["section7"]
    assert stored["huge"]["truncated"] is True and len(stored) == 31
    # A retry stores the same sections again without error (upsert, replace).
    await ledger.put_evidence_many("inc-evidence", {"section7": {"i": "again"}})
    assert (await ledger.list_evidence("inc-evidence"))["section7"] == {"i": "again"}
