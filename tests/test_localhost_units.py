"""Unit tests of the local Functions host's pure parts (no Azurite, no subprocess).

Timespans, NCRONTAB schedules, settings and host.json parsing, route templates, message
decoding, Event Hub input parsing and the queue listener's batching/retry/poison logic
(driven through a fake queue).
"""
from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from localdev.azurite import connection_string_for
from localdev.host.functions import FunctionInfo
from localdev.host.invocation import Invoker
from localdev.host.ncrontab import ScheduleError, next_occurrence, parse_schedule
from localdev.host.queues import MessageDecodeError, QueueListener, decode_body, until_next_poll
from localdev.host.routes import compile_route, sort_routes
from localdev.host.runtime import build_event_hub_events
from localdev.host.settings import (
    QueueOptions,
    SettingsError,
    apply_settings,
    load_local_settings,
    parse_host_config,
    parse_timespan,
    resolve_setting_refs,
)

UTC = timezone.utc


# -- timespans -------------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [
    ("00:01:00", 60.0),
    ("00:00:01", 1.0),
    ("00:00:00.2", 0.2),
    ("00:00:00.250", 0.25),
    ("01:30:15", 5415.0),
    ("1.02:00:00", 93600.0),
    ("00:05", 300.0),
    ("2", 172800.0),  # bare integer = days, like TimeSpan.Parse
    ("-1", -86400.0),
    ("-00:00:01", -1.0),
])
def test_parse_timespan(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "1:2:3:4", "00:60:00", "24:00:00", "00:00:61", 5, None, "5s"])
def test_parse_timespan_rejects(bad):
    with pytest.raises(SettingsError):
        parse_timespan(bad)


# -- NCRONTAB --------------------------------------------------------------------------------
def test_ncrontab_every_five_minutes():
    start = datetime(2024, 3, 1, 10, 2, 30, tzinfo=UTC)
    schedule = parse_schedule("0 */5 * * * *")
    first = schedule.next_after(start)
    assert first == datetime(2024, 3, 1, 10, 5, 0, tzinfo=UTC)
    assert schedule.next_after(first) == datetime(2024, 3, 1, 10, 10, 0, tzinfo=UTC)


def test_ncrontab_daily_at_six():
    assert next_occurrence("0 0 6 * * *", datetime(2024, 3, 1, 5, 59, 59, tzinfo=UTC)) == \
        datetime(2024, 3, 1, 6, 0, 0, tzinfo=UTC)
    assert next_occurrence("0 0 6 * * *", datetime(2024, 3, 1, 6, 0, 0, tzinfo=UTC)) == \
        datetime(2024, 3, 2, 6, 0, 0, tzinfo=UTC)  # strictly after


def test_ncrontab_seconds_field_is_first():
    assert next_occurrence("30 * * * * *", datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)) == \
        datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert next_occurrence("*/10 * * * * *", datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)) == \
        datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)


def test_ncrontab_weekdays_and_day_of_month_are_anded():
    # 2024-01-01 is a Monday; "1-5" = Mon-Fri
    assert next_occurrence("0 30 9 * * 1-5", datetime(2024, 1, 6, 0, 0, tzinfo=UTC)) == \
        datetime(2024, 1, 8, 9, 30, tzinfo=UTC)
    # Friday the 13th (NCrontab ANDs day and day-of-week; classic cron would OR them)
    assert next_occurrence("0 0 0 13 * FRI", datetime(2024, 1, 1, tzinfo=UTC)) == \
        datetime(2024, 9, 13, tzinfo=UTC)


def test_ncrontab_naive_datetimes_are_utc_and_five_fields_accepted():
    assert next_occurrence("*/5 * * * *", datetime(2024, 1, 1, 0, 1)) == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)


def test_timespan_schedule_is_an_interval():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert next_occurrence("00:00:30", start) == datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "* * *", "0 0 25 * * *", "0 61 * * * *", "a b c d e f", "0 0 0 * * * 2024"])
def test_ncrontab_rejects(bad):
    with pytest.raises(ScheduleError):
        parse_schedule(bad)


# -- settings / host.json --------------------------------------------------------------------
def test_local_settings_do_not_override_environment(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({
        "IsEncrypted": False,
        "Values": {"A": "from-file", "B": "from-file", "N": 5, "T": True},
        "Host": {"LocalHttpPort": 7999},
    }))
    settings = load_local_settings(path)
    assert settings.local_http_port == 7999
    env = {"A": "from-env"}
    applied = apply_settings(settings.values, env)
    assert env == {"A": "from-env", "B": "from-file", "N": "5", "T": "true"}
    assert sorted(applied) == ["B", "N", "T"]


def test_encrypted_settings_are_rejected(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(SettingsError):
        load_local_settings(path)


def test_host_json_defaults():
    config = parse_host_config({"version": "2.0"})
    q = config.queues
    assert (q.batch_size, q.new_batch_threshold, q.max_polling_interval, q.visibility_timeout,
            q.max_dequeue_count, q.message_encoding) == (16, 8, 60.0, 0.0, 5, "base64")
    assert config.route_prefix == "api"
    assert config.function_timeout is None


def test_host_json_values_and_ignored_keys():
    config = parse_host_config({
        "version": "2.0",
        "functionTimeout": "00:10:00",
        "concurrency": {"dynamicConcurrencyEnabled": True},
        "extensions": {
            "queues": {"batchSize": 8, "maxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:30",
                       "maxDequeueCount": 2, "messageEncoding": "None", "maxBatchSize": 1},
            "http": {"routePrefix": "/v1/", "maxOutstandingRequests": 5},
            "eventHubs": {},
        },
    })
    q = config.queues
    assert (q.batch_size, q.new_batch_threshold, q.max_polling_interval, q.visibility_timeout,
            q.max_dequeue_count, q.message_encoding) == (8, 4, 2.0, 30.0, 2, "none")
    assert config.route_prefix == "v1"
    assert config.function_timeout == 600.0
    assert set(config.ignored) == {"concurrency", "extensions.queues.maxBatchSize",
                                   "extensions.http.maxOutstandingRequests", "extensions.eventHubs"}
    assert parse_host_config({"functionTimeout": "-1"}).function_timeout is None


@pytest.mark.parametrize("queues", [
    {"batchSize": 0}, {"batchSize": 33}, {"batchSize": "4"}, {"messageEncoding": "utf8"},
    {"maxPollingInterval": "00:00:00.05"}, {"maxDequeueCount": 0}, {"visibilityTimeout": "soon"},
])
def test_host_json_invalid_queue_options(queues):
    with pytest.raises(SettingsError):
        parse_host_config({"extensions": {"queues": queues}})


def test_resolve_setting_refs():
    env = {"Q": "incidents", "S": "0 */5 * * * *"}
    assert resolve_setting_refs("%Q%", env) == "incidents"
    assert resolve_setting_refs("%Q%-poison", env) == "incidents-poison"
    assert resolve_setting_refs("%S%", env) == "0 */5 * * * *"
    assert resolve_setting_refs("plain", env) == "plain"
    with pytest.raises(SettingsError, match="MISSING"):
        resolve_setting_refs("%MISSING%", env)


# -- routes ----------------------------------------------------------------------------------
def test_route_templates():
    item = compile_route("api/items/{id:int}")
    assert item.match("api/items/42") == {"id": "42"}
    assert item.match("API/Items/42/") == {"id": "42"}
    assert item.match("api/items/x") is None
    assert item.match("api/items/1/2") is None
    opt = compile_route("api/users/{upn?}")
    assert opt.match("api/users") == {} and opt.match("api/users/a@b.c") == {"upn": "a@b.c"}
    rest = compile_route("api/files/{*path}")
    assert rest.match("api/files/a/b/c") == {"path": "a/b/c"}
    ranged = compile_route("api/p/{n:int:range(1,5)}")
    assert ranged.match("api/p/3") == {"n": "3"} and ranged.match("api/p/7") is None
    guid = compile_route("api/t/{tenant:guid}")
    assert guid.match("api/t/6f9619ff-8b86-d011-b42d-00cf4fc964ff")
    assert guid.match("api/t/nope") is None
    assert compile_route("api/d/{x=def}").match("api/d") == {"x": "def"}


def test_route_precedence_literal_first():
    templates = [compile_route(t) for t in ("api/{name}", "api/{*rest}", "api/items", "api/{id:int}")]
    ordered = [t.template for t in sort_routes(templates, key=lambda t: t)]
    assert ordered == ["api/items", "api/{id:int}", "api/{name}", "api/{*rest}"]


# -- decoding --------------------------------------------------------------------------------
def test_decode_body():
    assert decode_body(base64.b64encode(b"\x00\xffhi").decode(), "base64") == b"\x00\xffhi"
    assert decode_body("aGk=\n", "base64") == b"hi"  # whitespace ignored, like .NET
    assert decode_body("plain {json}", "none") == b"plain {json}"
    assert decode_body("", "base64") == b""
    with pytest.raises(MessageDecodeError):
        decode_body("not base64!", "base64")
    with pytest.raises(MessageDecodeError):
        decode_body("abc", "base64")  # bad padding


def test_build_event_hub_events():
    events = build_event_hub_events(json.dumps([{"a": 1}, "text"]))
    assert [e.get_body() for e in events] == [b'{"a": 1}', b"text"]
    assert [e.sequence_number for e in events] == [0, 1]
    assert [e.get_body() for e in build_event_hub_events('{"a": 2}')] == [b'{"a": 2}']
    assert [e.get_body() for e in build_event_hub_events("not json")] == [b"not json"]


def test_connection_string_for():
    conn = connection_string_for((1, 2, 3))
    assert "AccountName=devstoreaccount1" in conn
    assert "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;" in conn
    assert "QueueEndpoint=http://127.0.0.1:2/devstoreaccount1;" in conn
    assert "TableEndpoint=http://127.0.0.1:3/devstoreaccount1;" in conn


# -- queue listener with a fake queue --------------------------------------------------------
class FakeQueue:
    """In-memory stand-in for StorageQueue: tracks visibility, dequeue counts and calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: dict = {}  # id -> dict(content, dequeue, visible_at, receipt)
        self.sent: list = []
        self.receive_sizes: list = []
        self.visibility_calls: list = []
        self._seq = 0

    def put(self, content: str) -> str:
        self._seq += 1
        mid = f"id{self._seq}"
        self.messages[mid] = {"content": content, "dequeue": 0, "visible_at": 0.0, "receipt": "r0"}
        return mid

    async def ensure(self) -> None:
        pass

    async def receive(self, max_messages: int, visibility_timeout: int) -> list:
        self.receive_sizes.append(max_messages)
        now = asyncio.get_running_loop().time()
        out = []
        for mid, m in self.messages.items():
            if len(out) == max_messages:
                break
            if m["visible_at"] <= now:
                m["dequeue"] += 1
                m["visible_at"] = now + visibility_timeout
                m["receipt"] = f"r{m['dequeue']}"
                out.append(SimpleNamespace(id=mid, content=m["content"], pop_receipt=m["receipt"],
                                           dequeue_count=m["dequeue"], inserted_on=None, expires_on=None,
                                           next_visible_on=None))
        return out

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        assert self.messages[message_id]["receipt"] == pop_receipt
        del self.messages[message_id]

    async def set_visibility(self, message_id: str, pop_receipt: str, seconds: int) -> str:
        m = self.messages[message_id]
        assert m["receipt"] == pop_receipt
        self.visibility_calls.append((message_id, seconds))
        m["visible_at"] = asyncio.get_running_loop().time() + seconds
        m["receipt"] = pop_receipt + "u"
        return m["receipt"]

    async def send(self, content: str) -> None:
        self.sent.append(content)


def _info(fn) -> FunctionInfo:
    return FunctionInfo(name=fn.__name__, trigger_type="queueTrigger", trigger=None, user_function=fn,
                        arg_name="msg", is_async=asyncio.iscoroutinefunction(fn), wants_context=False,
                        directory=".")


async def _run_listener(listener: QueueListener, until, timeout: float = 5.0) -> None:
    task = asyncio.create_task(listener.run())
    deadline = asyncio.get_running_loop().time() + timeout
    while not until():
        assert asyncio.get_running_loop().time() < deadline, "listener did not reach the expected state"
        await asyncio.sleep(0.01)
    await listener.drain(1.0)
    await task


@pytest.mark.asyncio
@pytest.mark.parametrize("threshold,bound", [(0, 4), (2, 6)])
async def test_listener_concurrency_bound(threshold, bound):
    running = {"now": 0, "max": 0, "done": 0}

    async def handler(msg):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.02 + 0.01 * (running["done"] % 3))
        running["now"] -= 1
        running["done"] += 1

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    for i in range(20):
        queue.put(base64.b64encode(f"m{i}".encode()).decode())
    options = QueueOptions(batch_size=4, new_batch_threshold=threshold, max_polling_interval=0.2)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01)
    await _run_listener(listener, lambda: running["done"] == 20)
    assert running["max"] <= bound
    assert running["max"] >= 4
    assert set(queue.receive_sizes) == {4}
    assert not queue.messages and not poison.sent


@pytest.mark.asyncio
async def test_listener_retry_visibility_and_poison():
    seen = []

    def handler(msg):  # sync: runs in the thread pool
        seen.append((msg.get_body(), msg.dequeue_count))
        raise RuntimeError("nope")

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    original = base64.b64encode(b"payload").decode()
    queue.put(original)
    options = QueueOptions(batch_size=2, new_batch_threshold=1, max_polling_interval=0.1,
                           visibility_timeout=0.0, max_dequeue_count=3)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01)
    await _run_listener(listener, lambda: poison.sent)
    assert seen == [(b"payload", 1), (b"payload", 2), (b"payload", 3)]
    assert poison.sent == [original]  # the stored text, unchanged
    assert not queue.messages
    assert [s for _, s in queue.visibility_calls] == [0, 0]
    assert listener.stats["poisoned"] == 1


@pytest.mark.asyncio
async def test_listener_invalid_base64_is_a_failure_and_never_invokes():
    calls = []

    async def handler(msg):
        calls.append(msg)

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    queue.put("%%% not base64 %%%")
    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.1, max_dequeue_count=2)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01)
    await _run_listener(listener, lambda: poison.sent)
    assert calls == [] and poison.sent == ["%%% not base64 %%%"]


@pytest.mark.asyncio
async def test_listener_message_over_max_dequeue_is_poisoned_without_invocation():
    calls = []

    async def handler(msg):
        calls.append(msg)

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    mid = queue.put(base64.b64encode(b"x").decode())
    queue.messages[mid]["dequeue"] = 5  # e.g. delivered repeatedly to hosts that crashed
    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.1, max_dequeue_count=5)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01)
    await _run_listener(listener, lambda: poison.sent)
    assert calls == []


@pytest.mark.asyncio
async def test_listener_function_timeout_counts_as_failure():
    async def handler(msg):
        await asyncio.sleep(5)

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    queue.put(base64.b64encode(b"x").decode())
    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.1, max_dequeue_count=1)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(function_timeout=0.1),
                             lease_seconds=30, min_polling_interval=0.01)
    await _run_listener(listener, lambda: poison.sent)
    assert listener.stats["poisoned"] == 1


@pytest.mark.asyncio
async def test_listener_backoff_doubles_to_max_polling_interval_and_resets_when_a_message_arrives():
    handled = asyncio.Event()
    polled_again = asyncio.Event()
    delays: list[float] = []

    async def handler(msg):
        handled.set()

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")

    async def sleep(seconds: float) -> None:  # the listener's wait between polls, without the waiting
        delays.append(seconds)
        if len(delays) == 7:
            queue.put(base64.b64encode(b"x").decode())  # a message arrives during the 7th wait
        if len(delays) == 8:
            polled_again.set()
        await asyncio.sleep(0)

    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.08)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01, sleep=sleep)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(asyncio.gather(handled.wait(), polled_again.wait()), 5)
    await listener.drain(1.0)
    await task
    # 10, 20, 40, 80, 80 ... ms while the queue is empty; the poll after the 7th wait finds the
    # message, and the next empty poll waits the minimum again.
    assert delays[:8] == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.01]
    assert queue.receive_sizes[:8] == [1] * 8 and not queue.messages


def test_a_wait_between_polls_ends_on_a_grid_of_its_own_length_and_never_passes_the_delay():
    assert until_next_poll(12.34, 0.5) == pytest.approx(0.16)  # -> 12.5
    assert until_next_poll(12.5, 0.5) == pytest.approx(0.5)  # on the grid: a whole interval
    assert until_next_poll(12.5 - 1e-9, 0.5) == pytest.approx(0.5)  # a timer a hair early stays on it
    assert until_next_poll(7.0, 0.0) == 0.0
    for i in range(1000):
        now, delay = i * 0.0137, (0.1, 0.2, 0.4, 0.5)[i % 4]
        wait = until_next_poll(now, delay)
        assert 0.0 <= wait <= delay + 1e-6
        assert (now + wait) / delay == pytest.approx(round((now + wait) / delay), abs=1e-6)


@pytest.mark.asyncio
async def test_idle_listeners_started_apart_poll_together_once_backed_off():
    """Two idle queues whose listeners started 30 ms apart: once both wait the maximum interval they
    poll in the same instant (one wake of the host), not 30 ms apart."""
    loop = asyncio.get_running_loop()
    polls: dict[str, list[float]] = {"a": [], "b": []}

    class Recording(FakeQueue):
        async def receive(self, max_messages: int, visibility_timeout: int) -> list:
            polls[self.name].append(loop.time())
            return await super().receive(max_messages, visibility_timeout)

    async def handler(msg):
        pass

    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.1)
    listeners = []
    for name in ("a", "b"):
        listener = QueueListener(_info(handler), Recording(name), FakeQueue(name + "-poison"), options, Invoker(),
                                 lease_seconds=30, min_polling_interval=0.025)
        listeners.append((listener, asyncio.create_task(listener.run())))
        await asyncio.sleep(0.03)
    deadline = loop.time() + 5
    while min(len(polls["a"]), len(polls["b"])) < 8:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    for listener, task in listeners:
        await listener.drain(1.0)
        await task
    late_a, late_b = polls["a"][-3:], polls["b"][-3:]
    assert all(min(abs(t - u) for u in polls["a"]) < 0.005 for t in late_b), (late_a, late_b)


@pytest.mark.asyncio
async def test_listener_shutdown_releases_interrupted_message():
    started = asyncio.Event()

    async def handler(msg):
        started.set()
        await asyncio.sleep(10)

    queue, poison = FakeQueue("q"), FakeQueue("q-poison")
    mid = queue.put(base64.b64encode(b"x").decode())
    options = QueueOptions(batch_size=1, new_batch_threshold=0, max_polling_interval=0.1)
    listener = QueueListener(_info(handler), queue, poison, options, Invoker(), lease_seconds=30,
                             min_polling_interval=0.01)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(started.wait(), 2)
    cancelled = await listener.drain(0.1)
    await task
    assert cancelled == 1
    assert mid in queue.messages  # not deleted: at-least-once
    assert queue.visibility_calls[-1] == (mid, 0)  # released for prompt redelivery
