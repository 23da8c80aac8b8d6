"""Integration tests of the local Functions host (localdev.host) against the session Azurite.

The host runs as a subprocess (``localdev.host.launcher.start_host``) with the test-only app
in tests/hostapp, whose functions record every invocation in a table keyed by a per-test
marker. host.json there: batchSize 4, newBatchThreshold 2, maxPollingInterval 1 s,
visibilityTimeout 1 s, maxDequeueCount 3, base64 messages, functionTimeout 3 s.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from localdev.host.launcher import HostProcess, start_host

HOSTAPP = Path(__file__).resolve().parent / "hostapp"
TABLE = "hostappevents"


# -- helpers ---------------------------------------------------------------------------------
def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def marker() -> str:
    return "m" + uuid.uuid4().hex


def b64json(payload: dict) -> str:
    return base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")


def queue(conn: str, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(conn, name)
    try:
        client.create_queue()
    except Exception:
        pass
    return client


def rows(conn: str, mark: str) -> list:
    with TableClient.from_connection_string(conn, table_name=TABLE) as table:
        try:
            found = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": mark}))
        except ResourceNotFoundError:
            return []
    return sorted(found, key=lambda r: r["RowKey"])


def queue_contents(conn: str, name: str) -> list:
    try:
        return [m.content for m in queue(conn, name).peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def queue_count(conn: str, name: str) -> int:
    return queue(conn, name).get_queue_properties().approximate_message_count


def http(method: str, url: str, *, headers: dict | None = None, body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def max_overlap(intervals: list) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conn(azurite) -> str:
    return azurite.connection_string


@pytest.fixture(scope="module")
def host(conn):
    process = start_host(HOSTAPP, env={"AzureWebJobsStorage": conn, "LOCALDEV_QUEUE_LEASE_SECONDS": "30"},
                         ready_timeout=60)
    try:
        yield process
    finally:
        process.stop()


def status(host: HostProcess) -> dict:
    return host.status()


# -- queue triggers --------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_base64_message_delivered_once_and_deleted(host, conn):
    mark = marker()
    queue(conn, "hostapp-ok").send_message(b64json({"marker": mark, "note": "hello"}))
    wait_for(lambda: rows(conn, mark), 10, what="record_queue invocation")
    # Once the message is deleted (the count includes invisible messages) nothing is left
    # that could be delivered again: the rows written by then are every delivery there was.
    wait_for(lambda: queue_count(conn, "hostapp-ok") == 0, 10, what="message deleted")
    found = rows(conn, mark)
    assert len(found) == 1
    assert found[0]["function"] == "record_queue"
    assert found[0]["dequeue_count"] == 1
    assert json.loads(found[0]["body"]) == {"marker": mark, "note": "hello"}  # decoded bytes
    assert mark not in host.log_text()  # message bodies are never logged


@pytest.mark.timeout(30)
def test_failing_then_succeeding_message_is_retried(host, conn):
    mark = marker()
    queue(conn, "hostapp-flaky").send_message(b64json({"marker": mark, "fail_times": 2}))
    found = wait_for(lambda: len(rows(conn, mark)) >= 3 and rows(conn, mark), 15, what="3 attempts")
    assert [r["dequeue_count"] for r in found] == [1, 2, 3]
    wait_for(lambda: queue_count(conn, "hostapp-flaky") == 0, 5, what="message deleted")
    assert len(rows(conn, mark)) == 3  # deleted after the third attempt succeeded: no fourth can come
    assert not any(mark in base64.b64decode(c).decode() for c in queue_contents(conn, "hostapp-flaky-poison"))


@pytest.mark.timeout(30)
def test_always_failing_message_goes_to_poison_and_host_keeps_serving(host, conn):
    mark = marker()
    original = b64json({"marker": mark})
    queue(conn, "hostapp-fail").send_message(original)
    wait_for(lambda: original in queue_contents(conn, "hostapp-fail-poison"), 20, what="poison message")
    attempts = rows(conn, mark)
    assert [r["dequeue_count"] for r in attempts] == [1, 2, 3]  # maxDequeueCount 3
    gaps = [b["ts"] - a["ts"] for a, b in zip(attempts, attempts[1:])]
    assert all(gap >= 0.9 for gap in gaps), gaps  # visibilityTimeout 1 s between attempts
    assert queue_count(conn, "hostapp-fail") == 0
    # the host keeps serving
    mark2 = marker()
    queue(conn, "hostapp-ok").send_message(b64json({"marker": mark2}))
    wait_for(lambda: rows(conn, mark2), 10, what="later message processed")
    assert http("GET", host.url + "/")[0] == 200
    assert host.is_running()


@pytest.mark.timeout(30)
def test_non_base64_message_ends_in_poison(host, conn):
    text = f"not base64 at all! {uuid.uuid4()}"
    queue(conn, "hostapp-ok").send_message(text)
    wait_for(lambda: text in queue_contents(conn, "hostapp-ok-poison"), 20, what="poisoned non-base64 message")
    assert text not in host.log_text()


@pytest.mark.timeout(30)
def test_batch_size_and_new_batch_threshold_bound_concurrency(host, conn):
    mark = marker()
    q = queue(conn, "hostapp-slow")
    for _ in range(12):
        q.send_message(b64json({"marker": mark, "sleep": 0.6}))
    wait_for(lambda: len([r for r in rows(conn, mark) if r["phase"] == "end"]) == 12, 20, what="12 slow messages")
    ends = [r for r in rows(conn, mark) if r["phase"] == "end"]
    overlap = max_overlap([(r["started"], r["ended"]) for r in ends])
    assert 2 <= overlap <= 4 + 2, overlap  # batchSize + newBatchThreshold is the documented bound
    stats = status(host)["queues"]["slow_queue"]
    assert stats["max_batch"] <= 4
    assert stats["max_in_flight"] <= 6


# -- timer -----------------------------------------------------------------------------------
def test_timer_run_on_startup_with_setting_resolution(host, conn):
    runs = wait_for(lambda: rows(conn, f"timer-{host.pid}"), 10, what="runOnStartup record")
    assert runs[0]["function"] == "timer_startup"
    assert runs[0]["past_due"] is False
    timer = status(host)["timers"]["timer_startup"]
    assert timer["schedule"] == "0 0 3 * * *"  # %TEST_SCHEDULE% from local.settings.sample.json
    assert timer["next"].endswith("T03:00:00+00:00")
    assert timer["runs"] >= 1


# -- HTTP ------------------------------------------------------------------------------------
def test_http_function_keys(host):
    url = f"{host.url}/api/items/42"
    assert http("GET", url)[0] == 401
    assert http("GET", url + "?code=wrong")[0] == 401
    assert http("GET", url, headers={"x-functions-key": "wrong"})[0] == 401
    code, headers, body = http("GET", f"{url}?code={host.function_key}&name=bob")
    assert code == 200
    assert json.loads(body) == {"id": "42", "method": "GET", "name": "bob", "body_len": 0, "header": None}
    assert headers["x-hostapp"] == "1"
    assert headers["Content-Type"].startswith("application/json")
    code, _, body = http("POST", url, headers={"x-functions-key": host.function_key, "x-test-header": "v"},
                         body=b"12345")
    assert code == 200
    assert json.loads(body)["method"] == "POST" and json.loads(body)["body_len"] == 5
    assert json.loads(body)["header"] == "v"
    assert http("GET", url, headers={"x-functions-key": host.master_key})[0] == 200  # master works too
    # admin level: only the master key
    assert http("GET", f"{host.url}/api/admin-only?code={host.function_key}")[0] == 401
    assert http("GET", f"{host.url}/api/admin-only?code={host.master_key}")[0] == 200
    assert host.function_key not in host.log_text() and host.master_key not in host.log_text()


def test_http_routing_methods_and_errors(host):
    key = {"x-functions-key": host.function_key}
    assert http("DELETE", f"{host.url}/api/items/42", headers=key)[0] == 405
    assert http("GET", f"{host.url}/api/items/abc", headers=key)[0] == 404  # {id:int}
    assert http("GET", f"{host.url}/api/nothing-here")[0] == 404
    code, _, body = http("GET", f"{host.url}/api/public/hello?name=x")
    assert (code, body) == (200, b"hello x")
    assert http("GET", f"{host.url}/API/Public/Hello")[0] == 200  # literals are case-insensitive
    code, _, body = http("GET", f"{host.url}/api/boom")
    assert code == 500
    assert b"secret" not in body
    code, _, _ = http("POST", f"{host.url}/api/items/1", headers=key, body=b"x" * (1024 * 1024 + 1))
    assert code == 413
    assert http("GET", host.url + "/")[0] == 200


# -- admin API -------------------------------------------------------------------------------
def test_admin_status_requires_master_key(host):
    assert http("GET", f"{host.url}/admin/host/status")[0] == 401
    assert http("GET", f"{host.url}/admin/host/status", headers={"x-functions-key": host.function_key})[0] == 401
    body = status(host)
    assert body["state"] == "Running"
    assert {"record_queue", "timer_startup", "http_item", "eventhub_batch"} <= set(body["functions"])
    assert body["functions"] == host.functions


def test_admin_invoke_event_hub_cardinality_many(host, conn):
    mark = marker()
    events = [{"marker": mark, "n": 1}, {"marker": mark, "n": 2}, "plain text"]
    url = f"{host.url}/admin/functions/eventhub_batch"
    payload = json.dumps({"input": json.dumps(events)}).encode()
    assert http("POST", url, headers={"x-functions-key": host.function_key}, body=payload)[0] == 401
    code, headers, _ = http("POST", url, headers={"x-functions-key": host.master_key,
                                                  "Content-Type": "application/json"}, body=payload)
    assert code == 202
    found = wait_for(lambda: rows(conn, mark), 10, what="event hub invocation")
    assert found[0]["count"] == 3
    bodies = json.loads(found[0]["bodies"])
    assert [json.loads(b) for b in bodies[:2]] == events[:2] and bodies[2] == "plain text"
    # ?wait=true (local extension) reports the outcome
    mark2 = marker()
    code, _, body = http("POST", url + "?wait=true", headers={"x-functions-key": host.master_key},
                         body=json.dumps({"input": json.dumps({"marker": mark2})}).encode())
    assert code == 200 and json.loads(body)["status"] == "Succeeded"
    assert rows(conn, mark2)[0]["count"] == 1
    assert http("POST", f"{host.url}/admin/functions/nope", headers={"x-functions-key": host.master_key},
                body=b"{}")[0] == 404


def test_admin_invoke_queue_function_and_function_timeout(host, conn):
    mark = marker()
    url = f"{host.url}/admin/functions/slow_queue?wait=true"
    started = time.monotonic()
    code, _, body = http("POST", url, headers={"x-functions-key": host.master_key},
                         body=json.dumps({"input": json.dumps({"marker": mark, "sleep": 10})}).encode())
    elapsed = time.monotonic() - started
    assert code == 500 and json.loads(body)["status"] == "Failed"
    assert 2.5 <= elapsed < 8, elapsed  # functionTimeout 00:00:03 cancelled it
    assert [r["phase"] for r in rows(conn, mark)] == ["start"]
    assert "Timeout value of 3.0 seconds exceeded" in host.log_text()


def test_unsupported_binding_is_reported(host):
    log = host.log_text()
    assert "with_output" in log and "does not support" in log


# -- process lifecycle -----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_kill_restart_redelivers_and_sigterm_drains(conn):
    env = {
        "AzureWebJobsStorage": conn,
        "HOSTAPP_SLOW_QUEUE": "hostapp-slow-b",  # env wins over local.settings.sample.json
        "TEST_SCHEDULE": "*/1 * * * * *",
        "LOCALDEV_QUEUE_LEASE_SECONDS": "3",
    }
    b = start_host(HOSTAPP, env=env, shutdown_grace=10)
    try:
        # a per-second timer fires on schedule after its startup run
        wait_for(lambda: len(rows(conn, f"timer-{b.pid}")) >= 3, 6, what="scheduled timer runs")
        assert {r["schedule"] for r in rows(conn, f"timer-{b.pid}")} == {"*/1 * * * * *"}

        # SIGKILL mid-invocation: the message comes back after its lease (at-least-once)
        mark = marker()
        queue(conn, "hostapp-slow-b").send_message(b64json({"marker": mark, "sleep": 1.0}))
        wait_for(lambda: rows(conn, mark), 10, what="first attempt started")
        url = b.url
        assert b.kill() == -9
        b.restart()
        assert b.url == url
        done = wait_for(lambda: [r for r in rows(conn, mark) if r["phase"] == "end"], 15, what="redelivery")
        assert done[0]["dequeue_count"] == 2

        # SIGTERM: stop polling, finish the in-flight invocation, delete it, exit 0
        mark2 = marker()
        queue(conn, "hostapp-slow-b").send_message(b64json({"marker": mark2, "sleep": 1.5}))
        wait_for(lambda: rows(conn, mark2), 10, what="second message started")
        assert b.stop() == 0
        assert [r["phase"] for r in rows(conn, mark2)] == ["start", "end"]
        assert queue_count(conn, "hostapp-slow-b") == 0
        assert "Host stopped" in b.log_text()
    finally:
        b.stop()


@pytest.mark.timeout(30)
def test_cli_exits_nonzero_on_bad_app(tmp_path):
    (tmp_path / "function_app.py").write_text("raise RuntimeError('broken app')\n")
    process = HostProcess(tmp_path, {}, ready_timeout=20)
    with pytest.raises(RuntimeError) as info:
        process.start()
    assert "broken app" in str(info.value)
    assert process.returncode == 1


# -- in-process ------------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_local_host_in_process(conn):
    from localdev.host.runtime import LocalHost

    saved_env = dict(os.environ)
    saved_module = sys.modules.get("function_app")
    os.environ.update({
        "AzureWebJobsStorage": conn,
        "HOSTAPP_SLOW_QUEUE": "hostapp-slow-inproc",
        "LOCALDEV_FUNCTION_KEY": "fixed-function-key",
        # keep this host off the queues the subprocess host owns
        **{f"AzureWebJobs.{n}.Disabled": "true"
           for n in ("record_queue", "flaky_queue", "always_fail", "with_output", "timer_startup")},
    })
    try:
        host = LocalHost(HOSTAPP, port=0)
        await host.start()
        try:
            assert host.function_key == "fixed-function-key"
            assert set(host.listeners) == {"slow_queue"}
            assert host.status()["state"] == "Running"
            mark = marker()
            assert await host.invoke("eventhub_batch", json.dumps([{"marker": mark}])) is True
            assert await host.invoke("timer_startup") is True  # disabled, but admin-invocable
        finally:
            await host.stop()
        assert host.state == "Stopped"
        assert len(rows(conn, mark)) == 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    assert sys.modules.get("function_app") is saved_module
