"""The `responder` CLI as an operator runs it (a subprocess), against real Azurite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from localdev.restamp import restamp
from tests.helpers.storage import peek

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def responder(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60, check=check)


def test_ingest_dry_run_prints_the_incident_requests_as_json():
    out = responder("ingest", str(SAMPLES / "entra-diag-userriskevents-record-high.json"), "--dry-run", "--json", check=True)
    rows = json.loads(out.stdout)
    assert len(rows) == 1
    assert set(rows[0]) >= {"user_id", "user_principal_name", "source", "risk_level", "alert_ids", "detected_at"}
    assert rows[0]["source"] == "entra-diagnostics" and rows[0]["risk_level"] == "high"


def test_ingest_dry_run_of_a_remediated_record_prints_an_empty_list():
    out = responder("ingest", str(SAMPLES / "entra-diag-riskyusers-record-remediated.json"), "--dry-run", "--json", check=True)
    assert json.loads(out.stdout) == []


def test_unreadable_input_exits_non_zero_with_one_line_on_stderr(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01\x02 not json at all")
    out = responder("ingest", str(bad), "--dry-run", "--json")
    assert out.returncode != 0 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "responder:" in out.stderr
    missing = responder("ingest", str(tmp_path / "nope.json"), "--dry-run")
    assert missing.returncode != 0 and "cannot read" in missing.stderr


def test_inject_rejects_an_odata_injection_upn_before_touching_storage():
    out = responder("inject", "--user", "x' or 1 eq 1", env={"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=x;AccountKey=eA==;QueueEndpoint=http://127.0.0.1:9/x;TableEndpoint=http://127.0.0.1:9/x"})
    assert out.returncode == 2 and "not a valid user principal name" in out.stderr


def test_status_without_any_storage_configured_says_so(tmp_path):
    out = responder("status")
    assert out.returncode == 2 and "no storage configured" in out.stderr


async def test_ingest_then_status_against_azurite_and_approve_only_through_the_api(azurite, fresh_storage, tmp_path):
    env = {"AzureWebJobsStorage": azurite.connection_string, "RESPONDER_MODE": "approval"}
    # The capture is from 2026-07: its times moved to now (intake refuses signals older than LOOKBACK_DAYS).
    sample = tmp_path / "sample.json"
    sample.write_bytes(restamp((SAMPLES / "entra-diag-userriskevents-record-high.json").read_bytes()))
    out = responder("ingest", str(sample), "--json", env=env, check=True)
    report = json.loads(out.stdout)
    assert report["incidents"] == {"held": 1} and len(report["incident_ids"]) == 1
    incident_id = report["incident_ids"][0]
    status = json.loads(responder("status", incident_id, "--json", env=env, check=True).stdout)
    assert status["state"] == "held" and "approval" in status["held_reason"]
    assert [s["name"] for s in status["steps"]][:2] == ["snapshot", "reset-password"]
    # No Graph here: protection is decided by the gate before any change.
    assert status["protected"] == "unknown" and status["approvals"] == []
    # A decision is made as a signed-in principal through the app's API, never straight in storage.
    approved = responder("approve", incident_id, env=env)
    assert approved.returncode == 2 and "no app to talk to" in approved.stderr
    _, queues = fresh_storage
    assert await peek(queues, "step-snapshot") == []
    listing = responder("status", env=env, check=True).stdout
    assert incident_id in listing and "approvals 0/1" in listing


def test_enable_sign_in_refuses_a_malformed_incident_id_before_calling_anything():
    malformed = responder("enable-sign-in", "inc-../x", env={"RESPONDER_API_URL": "http://127.0.0.1:9", "RESPONDER_TOKEN": "x"})
    assert malformed.returncode == 2 and "malformed incident id" in malformed.stderr
