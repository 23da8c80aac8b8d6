"""The bad-input corpus (tests/fixtures/bad/, described by its cases.json) fed to every entry point.

* the alerts queue and a step queue, through the local Functions host (real Azurite, the
  tenant simulator): each bad message ends on ``<queue>-poison`` with an ``errors`` row naming
  the reason, no Graph or Exchange request is made, and a good alert afterwards still runs;
* Event Hub (``entra_stream`` / ``defender_stream`` through the host's admin API): a batch
  mixing bad and good events succeeds, the good events become incidents, each bad one leaves
  an ``errors`` row (PartitionKey ``eventhub-entra`` / ``eventhub-defender``);
* HTTP ``POST /api/incidents``: 400 with a reason (413 when oversized, 401 without a key);
* the CLI: ``responder ingest FILE --dry-run --json`` (exit 2 and one line for an unreadable
  payload, exit 0 with ``rejected record N: reason`` lines for bad records) and
  ``responder inject --user BAD`` (exit 2, one line, nothing queued).

Every bad case that names a real user names the canary (megan.bowen): no incident and no
Graph/EXO request may ever concern her. Good events name adele.vance.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from localdev.host.launcher import start_host
from localdev.stack import REPO, tenant_settings
from shared.cli import main as responder_main
from tests.helpers.bad_inputs import (
    CANARY_ID,
    CANARY_UPN,
    CORPUS,
    GOOD_ID,
    GOOD_UPN,
    SEED,
    SPEC,
    case_body,
    case_ids,
    cases_for,
    control,
)
from tests.helpers.storage import peek, rows, wait_for

logger = logging.getLogger(__name__)

MAX_ATTEMPTS_WAIT = 60.0  # a message the app fails to quarantine is retried maxDequeueCount x visibilityTimeout


# -- the local host ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(azurite, simulator, tmp_path_factory):
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "GRAPH_BASE_URL": simulator.url,
        "EXO_BASE_URL": simulator.url,
        **simulator.identity_env(),
        **simulator.easyauth_env(),  # the host plays App Service Authentication (POST /api/incidents needs a token)
        **tenant_settings(SEED),
        "RESPONDER_MODE": "auto",  # a bad input that slipped through would act at once: visible in the simulator
        "PLAYBOOK_STEPS": "reset-password",  # the shortest valid playbook: good controls finish in seconds
        "LOCALDEV_QUEUE_LEASE_SECONDS": "30",
        "LOCALDEV_HTTP_MAX_BODY_BYTES": str(8 * 1024 * 1024),  # let 1 MB bodies reach the app's own limits
        "AzureWebJobs.poll_reconciler.Disabled": "true",  # timers would call Graph on their own schedule
        "AzureWebJobs.securescore_snapshot.Disabled": "true",
        "AzureWebJobs.redrive_poison.Disabled": "true",  # the sweeper would take poison messages while we count them
    }
    log = tmp_path_factory.mktemp("host-bad") / "host.log"
    proc = start_host(str(REPO), env=env, port=0, log_path=str(log))
    yield proc
    proc.stop()


@pytest.fixture
def storage(fresh_storage, host, sim):
    return fresh_storage


def _post(url: str, data: bytes, headers: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_incident(host, body: bytes, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    status, payload = _post(f"{host.url}/api/incidents", body, headers)
    try:
        return status, json.loads(payload) if payload[:1] == b"{" else {}
    except ValueError:
        return status, {}


def invoke_event_hub(host, function: str, events: list[bytes]) -> tuple[int, dict]:
    """Run an Event Hub function now with one event per body, and wait for the outcome."""
    payload = json.dumps({"input": json.dumps([e.decode("utf-8") for e in events])}).encode("utf-8")
    status, body = _post(f"{host.url}/admin/functions/{function}?wait=true", payload,
                         {"Content-Type": "application/json", "x-functions-key": host.master_key})
    return status, json.loads(body) if body[:1] == b"{" else {}


async def queue_client(queues, queue: str):
    """The queue, created if this is the first test to use it (the app creates its queues on first use)."""
    client = queues.get_queue_client(queue)
    try:
        await client.create_queue()
    except ResourceExistsError:
        pass
    return client


async def poison_count(queues, queue: str) -> int:
    try:
        props = await queues.get_queue_client(f"{queue}-poison").get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return props.approximate_message_count or 0


def tenant_requests(sim) -> list[dict]:
    return [r for r in sim.client.requests() if r["service"] in ("graph", "exo")]


def touching_canary(requests: list[dict]) -> list[dict]:
    def hit(r: dict) -> bool:
        text = json.dumps([r.get("path"), r.get("query"), r.get("body")]).lower()
        return r.get("user") == CANARY_ID or CANARY_ID in text or CANARY_UPN in text
    return [r for r in requests if hit(r)]


async def incidents(tables) -> list[dict]:
    return await rows(tables, "incidents")


async def finished_incident_for_good_user(tables) -> dict | None:
    for row in await incidents(tables):
        if GOOD_ID in (row.get("user_id"), row.get("user_key")) or row.get("user_principal_name") == GOOD_UPN:
            if row.get("state") in ("succeeded", "failed", "held"):
                return row
    return None


def check_rows_per_message(cases_by_id: dict[str, dict], error_rows: list[dict], key: str) -> list[str]:
    """Each sent message has an errors row (matched by the original message id) naming its reason."""
    by_message = {r.get("message_id"): r for r in error_rows}
    failures = []
    for message_id, case in cases_by_id.items():
        expected = case[key] if isinstance(case[key], str) else case[key]["reason"]
        row = by_message.get(message_id)
        if row is None:
            failures.append(f"{case['name']}: no errors row (the host poisoned it after repeated failures?)")
        elif expected not in row["reason"]:
            failures.append(f"{case['name']}: reason {row['reason']!r} does not contain {expected!r}")
    return failures


# -- queues through the host ---------------------------------------------------------------------


async def test_every_bad_alert_is_parked_on_poison_with_its_reason_and_nothing_reaches_the_tenant(host, storage, sim):
    tables, queues = storage
    cases = cases_for("queue")
    alerts = await queue_client(queues, "alerts")
    sent: dict[str, dict] = {}
    for case in cases:
        message = await alerts.send_message(base64.b64encode(case_body(case)).decode("ascii"))
        sent[message.id] = case

    async def all_parked():  # each on poison, and its errors row written (after the poison send)
        parked = await poison_count(queues, "alerts") >= len(cases)
        return parked and len([r for r in await rows(tables, "errors") if r["PartitionKey"] == "alerts"]) >= len(cases)

    await wait_for(all_parked, timeout=MAX_ATTEMPTS_WAIT)
    errors = [r for r in await rows(tables, "errors") if r["PartitionKey"] == "alerts"]
    failures = check_rows_per_message(sent, errors, "queue")
    assert not failures, "\n".join(failures)
    assert len(errors) == len(cases)
    assert all(r["excerpt"] and len(r["excerpt"]) <= 200 for r in errors)

    parked = [m async for m in queues.get_queue_client("alerts-poison").receive_messages(max_messages=len(cases) + 5,
                                                                                          visibility_timeout=30)]
    parked_bodies = [base64.b64decode(m.content) for m in parked]
    assert len(parked_bodies) == len(cases)
    # Parked unchanged, so it can be fixed and replayed (binary aside: the app parks it as text).
    missing = [c["name"] for c in cases if c["name"] != "binary" and case_body(c) not in parked_bodies]
    assert missing == [], f"bodies not parked unchanged: {missing}"

    assert tenant_requests(sim) == []
    assert await incidents(tables) == []
    assert await peek(queues, "alerts") == []

    # Nothing valid is lost: a good alert after all that still becomes an incident and runs.
    await alerts.send_message(base64.b64encode(control("alert")).decode("ascii"))
    incident = await wait_for(lambda: finished_incident_for_good_user(tables), timeout=45)
    assert incident["state"] == "succeeded"
    assert len(await incidents(tables)) == 1
    requests = tenant_requests(sim)
    assert any(r["method"] == "PATCH" and r.get("user") == GOOD_ID for r in requests)
    assert touching_canary(requests) == []


async def test_malformed_step_tasks_are_quarantined_and_no_step_runs(host, storage, sim):
    tables, queues = storage
    cases = SPEC["step_tasks"]
    step_queue = await queue_client(queues, "step-reset-password")
    sent: dict[str, dict] = {}
    for case in cases:
        message = await step_queue.send_message(base64.b64encode(case_body(case)).decode("ascii"))
        sent[message.id] = case

    async def all_parked():  # each on poison, and its errors row written (after the poison send)
        parked = await poison_count(queues, "step-reset-password") >= len(cases)
        return parked and len([r for r in await rows(tables, "errors") if r["PartitionKey"] == "step-reset-password"]) >= len(cases)

    await wait_for(all_parked, timeout=MAX_ATTEMPTS_WAIT)
    errors = [r for r in await rows(tables, "errors") if r["PartitionKey"] == "step-reset-password"]
    failures = check_rows_per_message(sent, errors, "reason")
    assert not failures, "\n".join(failures)
    assert len(errors) == len(cases)
    assert await rows(tables, "steps") == []
    assert await incidents(tables) == []
    assert tenant_requests(sim) == []
    assert await peek(queues, "step-reset-password") == []


# -- Event Hub through the host's admin API --------------------------------------------------------


async def _event_hub_batch(host, storage, sim, function: str, where: str, key: str, good: bytes) -> None:
    tables, _ = storage
    cases = cases_for(key)
    events = [case_body(c) for c in cases] + [good]
    status, outcome = await asyncio.to_thread(invoke_event_hub, host, function, events)
    assert (status, outcome.get("status")) == (200, "Succeeded"), host.log_text()[-3000:]

    incident = await wait_for(lambda: finished_incident_for_good_user(tables), timeout=45)
    assert incident["state"] == "succeeded"
    assert len(await incidents(tables)) == 1

    errors = [r for r in await rows(tables, "errors") if r["PartitionKey"] == where]
    by_event: dict[str, list[str]] = {}
    payload_level: list[str] = []
    for row in errors:
        if row.get("message_id"):
            by_event.setdefault(row["message_id"], []).append(row["reason"])
        else:  # a payload unreadable as a whole (the stream handler records no correlation id for it)
            payload_level.append(row["reason"])
    failures = []
    for index, case in enumerate(cases):
        expected = case[key]
        reasons = by_event.get(f"{where}-{index}")
        if reasons is not None:
            if not all(expected in r for r in reasons):
                failures.append(f"{case['name']}: reasons {reasons} do not all contain {expected!r}")
            continue
        match = next((r for r in payload_level if expected in r), None)
        if match is None:
            failures.append(f"{case['name']}: no errors row with {expected!r} (record rows {sorted(by_event)}, "
                            f"payload rows {payload_level})")
        else:
            payload_level.remove(match)
    assert not failures, "\n".join(failures)
    assert payload_level == [], "rows no bad event accounts for"
    assert f"{where}-{len(cases)}" not in by_event, "the good event was rejected"
    assert touching_canary(tenant_requests(sim)) == []


async def test_entra_batch_mixing_bad_and_good_events_keeps_the_good_and_records_each_bad(host, storage, sim):
    await _event_hub_batch(host, storage, sim, "entra_stream", "eventhub-entra", "eventhub-entra", control("entra"))


async def test_defender_batch_mixing_bad_and_good_events_keeps_the_good_and_records_each_bad(host, storage, sim):
    await _event_hub_batch(host, storage, sim, "defender_stream", "eventhub-defender", "eventhub-defender",
                           control("defender"))


@pytest.mark.parametrize("case", SPEC["robustness"], ids=case_ids(SPEC["robustness"]))
async def test_defender_half_that_table_storage_cannot_hold_does_not_sink_the_rest_of_the_batch(host, storage, sim, case):
    tables, _ = storage
    status, outcome = await asyncio.to_thread(invoke_event_hub, host, "defender_stream",
                                              [case_body(case), control("defender")])
    assert (status, outcome.get("status")) == (200, "Succeeded"), (
        f"{case['name']}: the batch failed: {host.log_text()[-2500:]}")
    incident = await wait_for(lambda: finished_incident_for_good_user(tables), timeout=45)
    assert incident["state"] == "succeeded"


# -- HTTP --------------------------------------------------------------------------------------


async def test_http_refuses_every_bad_body_with_a_reason_and_creates_nothing(host, storage, sim):
    tables, _ = storage
    submitter = sim.client.operator_token(app="sentinel", roles=["Incident.Submit"])
    failures = []
    for case in cases_for("http"):
        expect = case["http"] if isinstance(case["http"], dict) else {"status": 400, "reason": case["http"]}
        status, body = await asyncio.to_thread(post_incident, host, case_body(case), submitter)
        error = body.get("error", "")
        if status != expect["status"] or not error or expect["reason"] not in error:
            failures.append(f"{case['name']}: {status} {error[:120]!r}, expected {expect['status']} with {expect['reason']!r}")
    assert not failures, "\n".join(failures)
    assert await incidents(tables) == []
    assert tenant_requests(sim) == []


async def test_http_without_a_token_is_401_before_the_body_is_read(host, storage, sim):
    reader = sim.client.operator_token("reader@contoso.onmicrosoft.com", ["Incident.Read"])
    for name in ("upn-odata-injection", "binary", "oversized-1mb"):
        case = next(c for c in SPEC["cases"] if c["name"] == name)
        status, _ = await asyncio.to_thread(post_incident, host, case_body(case), None)
        assert status == 401, name
        status, body = await asyncio.to_thread(post_incident, host, case_body(case), reader)
        assert status == 403 and "Incident.Submit" in body["error"], name  # a role check, not a body check


# -- CLI -----------------------------------------------------------------------------------------


def _corpus_file(case: dict, tmp_path: Path) -> Path:
    if "file" in case:
        return CORPUS / case["file"]
    path = tmp_path / f"{case['name']}.bin"
    path.write_bytes(case_body(case))
    return path


@pytest.mark.parametrize("case", cases_for("cli"), ids=case_ids(cases_for("cli")))
def test_cli_ingest_dry_run_refuses_each_bad_file_the_way_cases_json_says(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MIN_RISK_LEVEL", raising=False)
    code = responder_main(["ingest", str(_corpus_file(case, tmp_path)), "--dry-run", "--json"])
    out, err = capsys.readouterr()
    expect = case["cli"]
    lines = err.strip().splitlines()
    if expect["exit"] == 2:
        assert code == 2 and out == ""
        assert len(lines) == 1 and lines[0].startswith("responder: ") and expect["reason"] in lines[0], err
    else:
        assert code == 0 and json.loads(out) == []
        assert lines and all(line.startswith("rejected record ") for line in lines), err
        assert any(expect["rejected"] in line for line in lines), err


@pytest.mark.parametrize("case", SPEC["robustness"], ids=case_ids(SPEC["robustness"]))
def test_cli_ingest_dry_run_of_an_awkward_defender_half_exits_cleanly(case, tmp_path, capsys):
    code = responder_main(["ingest", str(_corpus_file(case, tmp_path)), "--dry-run", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out) == []  # a lone AlertInfo half waits for its evidence


def _mixed_file(tmp_path: Path) -> tuple[Path, list[str]]:
    """A JSON array: bad records of several shapes around one good manual request."""
    names = ["upn-odata-injection", "wrong-version", "unknown-field", "user-id-short-guid"]
    records = [json.loads(case_body(next(c for c in SPEC["cases"] if c["name"] == n))) for n in names]
    entra_bad = json.loads((CORPUS / "entra-user-id-not-guid.json").read_text())["records"][0]
    items = records[:2] + [json.loads(control("alert"))] + records[2:] + [entra_bad]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    reasons = ["not a valid user principal name", "unsupported incident-request version 2", "unknown field",
               "not a GUID", "userId is not a GUID"]
    return path, reasons


def test_cli_ingest_dry_run_of_a_mixed_file_prints_the_good_request_and_each_rejected_record(tmp_path, capsys):
    path, reasons = _mixed_file(tmp_path)
    code = responder_main(["ingest", str(path), "--dry-run", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert [r["user_principal_name"] for r in json.loads(out)] == [GOOD_UPN]
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"rejected record {i}" for i in (0, 1, 3, 4, 5)]
    failures = [f"record line {line!r} lacks {reason!r}" for line, reason in zip(lines, reasons) if reason not in line]
    assert not failures, "\n".join(failures)


async def test_cli_ingest_of_a_mixed_file_records_every_bad_record_and_keeps_the_good_one(azurite, fresh_storage, tmp_path,
                                                                                         capsys, monkeypatch):
    tables, _ = fresh_storage
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("RESPONDER_MODE", "approval")
    monkeypatch.setenv("ALERTS_QUEUE", "bad-inputs-cli")  # a queue no host listens on
    path, reasons = _mixed_file(tmp_path)
    code = await asyncio.to_thread(responder_main, ["ingest", str(path), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["incidents"] == {"held": 1} and report["rejected"] == 5
    [incident] = await incidents(tables)
    assert incident["user_principal_name"] == GOOD_UPN and incident["state"] == "held"
    errors = sorted((r for r in await rows(tables, "errors") if r["PartitionKey"] == "cli-ingest"),
                    key=lambda r: int(r["record_index"]))
    assert [int(r["record_index"]) for r in errors] == [0, 1, 3, 4, 5]
    failures = [f"row {r['reason']!r} lacks {reason!r}" for r, reason in zip(errors, reasons) if reason not in r["reason"]]
    assert not failures, "\n".join(failures)


async def test_cli_inject_refuses_every_bad_user_with_one_line_and_queues_nothing(azurite, fresh_storage, capsys, monkeypatch):
    _, queues = fresh_storage
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("ALERTS_QUEUE", "bad-inputs-inject")  # a queue no host listens on
    failures = []
    for case in SPEC["inject_users"]:
        try:
            code = await asyncio.to_thread(responder_main, ["inject", "--user", case["user"]])
        except Exception as exc:  # noqa: BLE001 - an escaping exception is exactly what this test is about
            code = f"raised {exc.__class__.__name__}: {exc}"
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if code != 2 or out or len(lines) != 1 or not lines[0].startswith("responder: ") or not any(
                reason in lines[0] for reason in case["reason"]):
            failures.append(f"{case['user']!r}: exit {code}, stdout {out!r}, stderr {err[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert await peek(queues, "bad-inputs-inject") == []
