"""What only the Table-storage ledger does, against real Azurite: the sharded storm counter
under concurrency and evidence stored in table transactions. The claim/lease contract it
shares with the fake is tests/test_ledger_contract.py."""
import asyncio
from datetime import datetime, timezone

import pytest

from shared.adapters.ledger import Ledger


@pytest.fixture
async def ledger(fresh_storage):
    tables, _ = fresh_storage
    ledger = Ledger(tables)
    await ledger.ensure()
    return ledger


async def test_storm_reservations_are_atomic_under_concurrency(ledger):
    now = datetime.now(timezone.utc)
    decisions = await asyncio.gather(*(ledger.reserve_incident(now, window_minutes=10, threshold=25, source="http",
                                                               source_quota=0) for _ in range(40)))
    assert sum(d.granted for d in decisions) == 25
    assert sum(d.tripped_now for d in decisions) == 1  # exactly one reservation trips the breaker
    state = await ledger.storm_state()
    assert state.tripped and len(state.reservations) == 25


async def test_reservations_of_two_workers_are_atomic_and_each_workers_go_in_few_writes(fresh_storage):
    tables, _ = fresh_storage
    workers = [Ledger(tables), Ledger(tables)]  # two instances, one table: only the ETag keeps them apart
    await workers[0].ensure()
    writes = [0, 0]
    for i, worker in enumerate(workers):
        original = worker._write_storm

        async def counted(state, etag, _i=i, _original=original):
            writes[_i] += 1
            return await _original(state, etag)

        worker._write_storm = counted  # type: ignore[method-assign]
    now = datetime.now(timezone.utc)
    asks = [workers[i % 2].reserve_incident(now, window_minutes=10, threshold=25, source="http", source_quota=0)
            for i in range(60)]
    decisions = await asyncio.gather(*asks)
    assert sum(d.granted for d in decisions) == 25 and sum(d.tripped_now for d in decisions) == 1
    # in the order asked: each worker's first asks are the ones granted, never a later one before an earlier
    for i in (0, 1):
        granted = [d.granted for d in decisions[i::2]]
        assert granted == sorted(granted, reverse=True)
    state = await workers[1].storm_state()
    assert state.tripped and len(state.reservations) == 25
    assert sum(writes) < 15, writes  # one conditional write per group (and per lost race), not one per intake (26+)


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
