"""The shared ingestion path with fakes: bad records recorded, good ones become incidents,
Defender halves joined across batches, replay creates nothing new."""
import json
from pathlib import Path

from shared.deps import Deps
from shared.ingest import ingest_payload
from shared.settings import Settings
from tests.helpers.fakes import FakeLedger, FakeQueues

INGEST = Path(__file__).parent / "fixtures" / "ingest"
SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def make():
    # The fixtures are captures from 2026-07: LOOKBACK_DAYS is widened so the ingestion path, not the
    # age bound (tests/test_operator_identity.py), is what these tests exercise.
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "MIN_RISK_LEVEL": "medium", "LOOKBACK_DAYS": "3650"})
    return Deps(settings=settings, ledger=FakeLedger(), queues=FakeQueues(), graph=None)


async def test_batch_with_bad_records_creates_incidents_for_the_good_ones_and_records_each_bad_one():
    deps = make()
    report = await ingest_payload(deps, (INGEST / "mixed-batch.json").read_bytes(), where="eventhub-entra")
    assert report.outcomes and all(o.outcome == "created" for o in report.outcomes)
    assert report.rejected >= 3
    assert len(deps.ledger.errors) == report.rejected
    assert all(e["where"] == "eventhub-entra" and e["reason"] for e in deps.ledger.errors)
    assert len(deps.queues.on("step-snapshot")) == len(report.outcomes)


async def test_replaying_the_same_batch_creates_nothing_new():
    deps = make()
    payload = (SAMPLES / "entra-diag-userriskevents-record-high.json").read_bytes()
    first = await ingest_payload(deps, payload)
    second = await ingest_payload(deps, payload)
    assert [o.outcome for o in first.outcomes] == ["created"]
    assert [o.outcome for o in second.outcomes] == ["attached"]
    assert len(deps.ledger.incidents) == 1


async def test_remediated_record_produces_no_incident():
    deps = make()
    report = await ingest_payload(deps, (SAMPLES / "entra-diag-riskyusers-record-remediated.json").read_bytes())
    assert report.outcomes == [] and report.ignored == 1 and deps.ledger.incidents == {}


async def test_defender_info_and_evidence_in_separate_batches_join_into_one_incident():
    deps = make()
    batch = json.loads((INGEST / "defender-batch-info-and-user-evidence.json").read_text())
    records = batch["records"]
    infos = [r for r in records if r["category"].endswith("AlertInfo")]
    evidence = [r for r in records if r["category"].endswith("AlertEvidence")]
    first = await ingest_payload(deps, json.dumps({"records": infos}), source="defender-stream")
    assert first.outcomes == [] and first.pending >= 1
    second = await ingest_payload(deps, json.dumps({"records": evidence}), source="defender-stream")
    assert [o.outcome for o in second.outcomes] and all(o.outcome == "created" for o in second.outcomes)
    incident = next(iter(deps.ledger.incidents.values()))
    assert incident["source"] == "defender-stream"
    assert infos[0]["properties"]["AlertId"] in incident["alert_ids"]


async def test_same_user_from_two_sources_is_one_incident():
    deps = make()
    entra = await ingest_payload(deps, (SAMPLES / "entra-diag-userriskevents-record-high.json").read_bytes())
    user_id = deps.ledger.incidents[entra.outcomes[0].incident_id]["user_key"]
    manual = json.dumps({"version": 1, "user_id": user_id, "alert_ids": ["manual-1"]})
    again = await ingest_payload(deps, manual, source="manual")
    assert again.outcomes[0].outcome == "attached"
    assert again.outcomes[0].incident_id == entra.outcomes[0].incident_id
