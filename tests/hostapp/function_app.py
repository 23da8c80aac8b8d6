"""Tiny v2-programming-model function app used only by tests of the local Functions host.

Every function records what it saw into the table named by app setting HOSTAPP_TABLE (in the
storage account of AzureWebJobsStorage): PartitionKey = the ``marker`` of the message/request
(a per-test unique string), one row per invocation, with the function name, dequeue count,
process id and start/end times, so tests can assert delivery counts, retries and concurrency.
Queue bodies are JSON ``{"marker": str, "fail_times": int, "sleep": float}``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableServiceClient as AsyncTableServiceClient

logger = logging.getLogger(__name__)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

_sync_lock = threading.Lock()
_sync_table = None
_async_table = None


def _table_name() -> str:
    return os.environ["HOSTAPP_TABLE"]


def _row(function: str, marker: str, **fields) -> dict:
    return {
        "PartitionKey": marker or "none",
        "RowKey": f"{time.time():.6f}-{uuid.uuid4().hex[:8]}",
        "function": function,
        "pid": os.getpid(),
        **fields,
    }


def record_sync(function: str, marker: str, **fields) -> None:
    global _sync_table
    with _sync_lock:
        if _sync_table is None:
            service = TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
            try:
                service.create_table(_table_name())
            except ResourceExistsError:
                pass
            _sync_table = service.get_table_client(_table_name())
    _sync_table.create_entity(_row(function, marker, **fields))


async def record(function: str, marker: str, **fields) -> None:
    global _async_table
    if _async_table is None:
        service = AsyncTableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
        try:
            await service.create_table(_table_name())
        except ResourceExistsError:
            pass
        _async_table = service.get_table_client(_table_name())
    await _async_table.create_entity(_row(function, marker, **fields))


def _payload(msg: func.QueueMessage) -> dict:
    return json.loads(msg.get_body().decode("utf-8"))


@app.queue_trigger(arg_name="msg", queue_name="hostapp-ok", connection="AzureWebJobsStorage")
async def record_queue(msg: func.QueueMessage) -> None:
    data = _payload(msg)
    await record("record_queue", data.get("marker", ""), dequeue_count=msg.dequeue_count, msg_id=msg.id,
                 body=msg.get_body().decode("utf-8"))


@app.queue_trigger(arg_name="msg", queue_name="hostapp-flaky", connection="AzureWebJobsStorage")
def flaky_queue(msg: func.QueueMessage) -> None:
    data = _payload(msg)
    record_sync("flaky_queue", data["marker"], dequeue_count=msg.dequeue_count, msg_id=msg.id)
    if msg.dequeue_count <= int(data.get("fail_times", 0)):
        raise RuntimeError(f"flaky failure on attempt {msg.dequeue_count}")


@app.queue_trigger(arg_name="msg", queue_name="hostapp-fail", connection="AzureWebJobsStorage")
async def always_fail(msg: func.QueueMessage) -> None:
    data = _payload(msg)
    await record("always_fail", data["marker"], dequeue_count=msg.dequeue_count, ts=time.time())
    raise ValueError("this function always fails")


@app.queue_trigger(arg_name="msg", queue_name="%HOSTAPP_SLOW_QUEUE%", connection="AzureWebJobsStorage")
async def slow_queue(msg: func.QueueMessage, context: func.Context) -> None:
    data = _payload(msg)
    marker = data["marker"]
    started = time.time()
    await record("slow_queue", marker, phase="start", dequeue_count=msg.dequeue_count, msg_id=msg.id,
                 started=started, invocation_id=context.invocation_id)
    await asyncio.sleep(float(data.get("sleep", 0.5)))
    await record("slow_queue", marker, phase="end", dequeue_count=msg.dequeue_count, msg_id=msg.id,
                 started=started, ended=time.time())


@app.queue_trigger(arg_name="msg", queue_name="hostapp-unused", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="hostapp-out", connection="AzureWebJobsStorage")
def with_output(msg: func.QueueMessage, out: func.Out[str]) -> None:
    """Declares an output binding, which the local host does not support (it must warn)."""
    out.set(msg.get_body().decode("utf-8"))


@app.timer_trigger(arg_name="timer", schedule="%TEST_SCHEDULE%", run_on_startup=True, use_monitor=False)
def timer_startup(timer: func.TimerRequest) -> None:
    record_sync("timer_startup", f"timer-{os.getpid()}", past_due=timer.past_due,
                schedule=os.environ.get("TEST_SCHEDULE", ""), ts=time.time())


@app.route(route="items/{id:int}", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
async def http_item(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "id": req.route_params.get("id"),
        "method": req.method,
        "name": req.params.get("name"),
        "body_len": len(req.get_body()),
        "header": req.headers.get("x-test-header"),
    }
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json",
                             headers={"x-hostapp": "1"})


@app.route(route="public/hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def http_public(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello " + req.params.get("name", "world"))


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def http_boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret-detail-that-must-not-leak")


@app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
def http_admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin ok")


@app.event_hub_message_trigger(arg_name="events", event_hub_name="%HOSTAPP_EVENTHUB%",
                               connection="HOSTAPP_EVENTHUB_CONNECTION", cardinality=func.Cardinality.MANY)
async def eventhub_batch(events: list[func.EventHubEvent]) -> None:
    bodies = [event.get_body().decode("utf-8") for event in events]
    marker = "none"
    for text in bodies:
        try:
            marker = json.loads(text)["marker"]
            break
        except (ValueError, KeyError, TypeError):
            continue
    await record("eventhub_batch", marker, count=len(events), bodies=json.dumps(bodies))
