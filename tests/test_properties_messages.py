"""Property tests over the message parsers and the queue handlers that use them.

``IncidentRequest.from_json``, ``StepTask.from_json`` (the alerts and step queues) and
``parse_payload`` (Event Hub, polling, ``responder ingest``), fed arbitrary bytes, arbitrary
JSON values, valid messages mutated field by field and byte by byte, and the bad-input corpus
(tests/fixtures/bad) mutated:

* only MessageError (resp. PayloadError) is ever raised, never anything else;
* every accepted IncidentRequest names a valid GUID or UPN and round-trips through
  ``to_json`` / ``from_json``;
* valid messages are always accepted, unchanged (nothing valid is lost);
* the alerts and step handlers never raise: a bad message leaves one error row and one poison
  message with the body, and no Graph call is made for it; a valid one goes on.

Example counts are modest (the file runs in a few seconds); Hypothesis keeps no database and
its cache lives in the temp directory, not in the repository.
"""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

from azure.functions.queue import QueueMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import functions.ingest
import functions.steps
from shared.deps import Deps
from shared.model import RISK_LEVELS, SOURCES, IncidentRequest, MessageError, StepTask
from shared.normalize import PayloadError, parse_payload
from shared.playbook import STEP_NAMES
from shared.policy import refusal, risk_passes
from shared.settings import Settings
from shared.timestamps import parse_timestamp
from shared.validation import is_guid, normalize_upn
from tests.helpers.bad_inputs import all_bad_bodies
from tests.helpers.fakes import FakeClock, FakeGraph, FakeLedger, FakeQueues

logger = logging.getLogger(__name__)

# Keep Hypothesis' caches out of the repository: no .hypothesis/ in the working directory.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "breach-responder-hypothesis")
FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])

SCHEMA = IncidentRequest.SCHEMA
GUID_NEWLINE = "db5829ad-8269-5e33-bdbb-564d04662a23\n"

# -- strategies ----------------------------------------------------------------------------------

guids = st.uuids().flatmap(lambda u: st.sampled_from([str(u), str(u).upper()]))
_UPN_LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#^~.'_+-&$%*=?{|}`/"
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_tld = st.from_regex(r"[A-Za-z]{2,8}", fullmatch=True)
domains = st.builds(lambda labels, tld: ".".join(labels + [tld]), st.lists(_label, min_size=1, max_size=3), _tld)
upns = st.builds(lambda local, domain: f"{local}@{domain}",
                 st.text(alphabet=_UPN_LOCAL_CHARS, min_size=1, max_size=40), domains)
_offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.builds(
    lambda moment, zone, style: (moment.replace(tzinfo=zone).isoformat() if style == "offset"
                                 else moment.isoformat() + "Z"),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)), _offsets,
    st.sampled_from(["offset", "z"]))
alert_ids = st.lists(st.text(min_size=1, max_size=60), max_size=8)


@st.composite
def valid_request_dicts(draw, sources=SOURCES) -> dict:
    """A valid incident request as a producer would write it (optional fields may be absent)."""
    data: dict = {"version": 1}
    if draw(st.booleans()):
        data["schema"] = SCHEMA
    which = draw(st.sampled_from(["id", "upn", "both"]))
    if which in ("id", "both"):
        data["user_id"] = draw(guids)
    if which in ("upn", "both"):
        data["user_principal_name"] = draw(upns)
    optional = {
        "source": st.sampled_from(sources),
        "risk_level": st.sampled_from(RISK_LEVELS),
        "alert_ids": alert_ids,
        "detected_at": timestamps,
        "reason": st.text(max_size=120),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            data[key] = draw(strategy)
    return data


step_tasks = st.builds(
    StepTask,
    incident_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=20).map(lambda h: "inc-" + h),
    step=st.sampled_from(STEP_NAMES),
    user_key=guids | upns,
    correlation_id=st.uuids().map(str),
    enqueued_at=timestamps,
)

interesting = st.sampled_from([
    "x' or 1 eq 1", "adele.vance@contoso.onmicrosoft.com' or 1 eq 1", "../../users/admin", "", " ", "\u0000",
    "\ud800", "\u2028", "💥", "a" * 600, GUID_NEWLINE, "db5829ad-8269-5e33-bdbb-564d04662a2",
    "{db5829ad-8269-5e33-bdbb-564d04662a23}", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
    "yesterday", "2026-13-45T99:99:99Z", "breach-responder/step-task", "inc-../../x", "inc-١٢٣", "high", "manual",
])
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
                | st.text(max_size=30) | interesting)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=10) | interesting, children, max_size=4), max_leaves=8)
INCIDENT_FIELDS = ["schema", "version", "user_id", "user_principal_name", "source", "risk_level", "alert_ids",
                   "detected_at", "reason"]
STEP_FIELDS = ["schema", "version", "incident_id", "step", "user_key", "correlation_id", "enqueued_at"]


@st.composite
def mutated(draw, base: dict, fields: list[str]) -> bytes:
    """``base`` with one to three mutations: a field set to anything, removed or added, or bytes changed."""
    data = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "del", "add"]))
        if op == "set":
            data[draw(st.sampled_from(fields))] = draw(json_values | interesting)
        elif op == "del" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif op == "add":
            data[draw(st.text(max_size=12) | interesting)] = draw(json_values)
    body = json.dumps(data).encode("utf-8")
    if draw(st.integers(0, 3)) == 0:
        return body
    return draw(byte_mutation(body))


def byte_mutation(body: bytes):
    @st.composite
    def _mutate(draw) -> bytes:
        out = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
            pos = draw(st.integers(0, max(0, len(out) - 1)))
            if op == "flip" and out:
                out[pos] = draw(st.integers(0, 255))
            elif op == "insert":
                out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif op == "delete" and out:
                del out[pos: pos + draw(st.integers(1, 8))]
            elif op == "truncate":
                del out[pos:]
        return bytes(out)
    return _mutate()


# -- checks --------------------------------------------------------------------------------------


def check_request(request: IncidentRequest) -> None:
    """What every accepted incident request guarantees."""
    assert request.user_id is not None or request.user_principal_name is not None
    if request.user_id is not None:
        assert is_guid(request.user_id) and request.user_id == request.user_id.lower() and "\n" not in request.user_id
    if request.user_principal_name is not None:
        assert normalize_upn(request.user_principal_name) == request.user_principal_name
    assert request.source in SOURCES and request.risk_level in RISK_LEVELS
    parse_timestamp(request.detected_at)
    assert IncidentRequest.from_json(request.to_json()) == request
    assert IncidentRequest.from_json(request.to_json().encode("utf-8")) == request


def incident_from(body: bytes | str) -> IncidentRequest | None:
    """from_json that may only fail with MessageError; an accepted request is checked."""
    try:
        request = IncidentRequest.from_json(body)
    except MessageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    check_request(request)
    return request


def step_from(body: bytes | str) -> StepTask | None:
    try:
        task = StepTask.from_json(body)
    except MessageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert task.incident_id.startswith("inc-") and task.step and task.user_key and task.correlation_id
    assert StepTask.from_json(task.to_json()) == task
    return task


def payload_from(body: bytes | str):
    try:
        result = parse_payload(body)
    except PayloadError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    for request in result.requests:
        check_request(request)
    for bad in result.rejected + result.ignored:
        assert bad.reason and "\n" not in bad.reason and len(bad.excerpt) <= 100
    return result


def same_request(got: IncidentRequest, data: dict) -> bool:
    """``got`` is ``data`` normalised (a missing detected_at defaults to about now)."""
    detected = data.get("detected_at", got.detected_at)
    if "detected_at" not in data:
        assert abs(parse_timestamp(got.detected_at) - datetime.now(timezone.utc)) < timedelta(seconds=60)
    return got == IncidentRequest(
        user_id=data.get("user_id"), user_principal_name=data.get("user_principal_name"),
        source=data.get("source", "manual"), risk_level=data.get("risk_level", "high"),
        alert_ids=tuple(data.get("alert_ids", ())), reason=data.get("reason", ""), detected_at=detected)


# -- the parsers: only their own error, whatever comes in ----------------------------------------


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_the_parsers_own_errors(body):
    incident_from(body)
    step_from(body)
    payload_from(body)


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_the_parsers_own_errors(text):
    incident_from(text)
    step_from(text)
    payload_from(text)


@FAST
@given(json_values)
def test_arbitrary_json_values_raise_only_the_parsers_own_errors(value):
    body = json.dumps(value).encode("utf-8")
    incident_from(body)
    step_from(body)
    payload_from(body)


@FAST
@given(st.data())
def test_mutated_incident_requests_raise_only_message_error_and_what_is_accepted_is_sound(data):
    body = data.draw(mutated(data.draw(valid_request_dicts()), INCIDENT_FIELDS))
    incident_from(body)
    payload_from(body)


@FAST
@given(st.data())
def test_mutated_step_tasks_raise_only_message_error(data):
    task = data.draw(step_tasks)
    step_from(data.draw(mutated(json.loads(task.to_json()), STEP_FIELDS)))


BAD_BODIES = all_bad_bodies()


@FAST
@given(st.sampled_from(BAD_BODIES).flatmap(lambda nb: byte_mutation(nb[1]) if len(nb[1]) < 70_000 else st.just(nb[1])))
def test_the_bad_corpus_mutated_byte_by_byte_raises_only_the_parsers_own_errors(body):
    incident_from(body)
    step_from(body)
    payload_from(body)


def test_every_corpus_case_is_refused_by_the_parser_its_entry_point_uses():
    for name, body in BAD_BODIES:
        if name.startswith("step-"):
            task = step_from(body)  # a task for another step parses; its handler refuses it (step-for-another-step)
            assert task is None or task.step != "reset-password", name
        elif not name.startswith(("entra-", "defender-", "intake-")):  # intake-*: a valid message intake refuses
            assert incident_from(body) is None, name
        payload_from(body)


# -- nothing valid is lost -----------------------------------------------------------------------


@FAST
@given(valid_request_dicts())
def test_every_valid_incident_request_is_accepted_unchanged(data):
    body = json.dumps(data)
    request = incident_from(body.encode("utf-8"))
    assert request is not None and same_request(request, data)
    again = incident_from(body)  # str and bytes alike
    assert again is not None and same_request(again, data)


@FAST
@given(valid_request_dicts(sources=("manual", "http")))
def test_every_valid_manual_request_survives_parse_payload_too(data):
    result = payload_from(json.dumps(data))
    assert result is not None and result.rejected == [] and result.ignored == []
    assert len(result.requests) == 1 and same_request(result.requests[0], data)


@FAST
@given(step_tasks)
def test_every_valid_step_task_is_accepted_unchanged(task):
    assert step_from(task.to_json().encode("utf-8")) == task


# -- the bugs these properties found, as plain examples --------------------------------------------


def test_a_number_past_pythons_digit_limit_is_a_message_error_not_a_value_error():
    huge = "9" * 5000
    assert incident_from(f'{{"version": {huge}, "user_principal_name": "a@contoso.com"}}'.encode()) is None
    assert step_from(f'{{"version": 1, "incident_id": {huge}}}'.encode()) is None


def test_a_detected_at_whose_utc_value_leaves_years_1_to_9999_is_a_message_error_not_an_overflow():
    for stamp in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        body = json.dumps({"version": 1, "user_principal_name": "a@contoso.com", "detected_at": stamp})
        assert incident_from(body.encode()) is None, stamp


def test_a_user_id_with_a_trailing_newline_is_refused_as_not_a_guid():
    body = json.dumps({"version": 1, "user_id": GUID_NEWLINE}).encode()
    try:
        IncidentRequest.from_json(body)
    except MessageError as exc:
        assert "not a GUID" in str(exc)
    else:
        raise AssertionError("a GUID followed by a newline was accepted")
    assert not is_guid(GUID_NEWLINE)


def test_text_with_a_lone_surrogate_is_a_message_error_not_a_unicode_error():
    assert incident_from('{"version": 1, "user_principal_name": "\ud800@contoso.com"}') is None
    assert step_from('{"version": 1, "incident_id": "inc-\ud800"}') is None


# -- the handlers: never raise, quarantine what is bad, call nothing for it ------------------------


class AnyUserGraph(FakeGraph):
    """A tenant where every key names a user: an object id resolves to user-<id>@contoso.com, a UPN
    to a stable id. (A request naming an id and a UPN therefore names two users, as a random
    pair does.)"""

    def _user(self, key: str) -> dict:
        if is_guid(key):
            return {"id": key.lower(), "userPrincipalName": f"user-{key.lower()}@contoso.com"}
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, key.lower())), "userPrincipalName": key}


def _deps() -> Deps:
    settings_ = Settings.from_env({"RESPONDER_MODE": "auto"})
    return Deps(settings=settings_, ledger=FakeLedger(), queues=FakeQueues(), graph=AnyUserGraph(),
                clock=FakeClock(datetime.now(timezone.utc)))


def _run_alert(body: bytes) -> Deps:
    deps = _deps()

    async def get_deps() -> Deps:
        return deps

    with mock.patch.object(functions.ingest, "get_deps", get_deps):
        asyncio.run(functions.ingest.alerts(QueueMessage(id="m-1", body=body, dequeue_count=1)))
    return deps


def _assert_quarantined(deps: Deps, queue: str, body: bytes) -> None:
    assert [e["where"] for e in deps.ledger.errors] == [queue]
    error = deps.ledger.errors[0]
    assert error["reason"] and error["message_id"] == "m-1" and len(error["excerpt"]) <= 200
    assert deps.queues.sent == [(f"{queue}-poison", body.decode("utf-8", errors="replace"), None)]


@FAST
@given(st.one_of(st.binary(max_size=300), valid_request_dicts().map(lambda d: json.dumps(d).encode()),
                 st.just(b""), st.sampled_from([b for _, b in BAD_BODIES if len(b) < 60_000])))
def test_the_alerts_handler_never_raises_quarantines_bad_messages_and_never_calls_graph_for_them(body):
    deps = _run_alert(body)
    try:
        IncidentRequest.from_json(body)
    except MessageError:
        assert deps.graph.calls == []
        _assert_quarantined(deps, "alerts", body)
        assert deps.ledger.incidents == {}
    else:
        _check_outcome(deps, body)


def _check_outcome(deps: Deps, body: bytes) -> None:
    """A valid message: refused and parked with its reason, or an incident unless policy ignores it."""
    refused = expected_refusal(deps, body)
    if refused:
        _assert_quarantined(deps, "alerts", body)
        assert refused in deps.ledger.errors[0]["reason"] and deps.ledger.incidents == {}
    else:
        assert deps.ledger.errors == [] and not any(q.endswith("-poison") for q, _, _ in deps.queues.sent)
        assert len(deps.ledger.incidents) == expected_incidents(deps, body)


def expected_refusal(deps: Deps, body: bytes) -> str:
    """What intake refuses a queue caller for ("" = nothing): policy's refusals, then an id and a
    UPN that resolve to two users."""
    request = IncidentRequest.from_json(body)
    refused = refusal(request, deps.settings, deps.clock(), "queue")
    if refused:
        return refused
    return "different users" if request.user_id and request.user_principal_name else ""


def expected_incidents(deps: Deps, body: bytes) -> int:
    """A valid request becomes an incident unless policy ignores it (a stream signal below MIN_RISK_LEVEL)."""
    request = IncidentRequest.from_json(body)
    manual = request.source in ("manual", "http")
    return 1 if manual or risk_passes(request.risk_level, deps.settings.min_risk_level) else 0


@FAST
@given(st.data())
def test_the_alerts_handler_survives_mutated_requests(data):
    body = data.draw(mutated(data.draw(valid_request_dicts()), INCIDENT_FIELDS))
    deps = _run_alert(body)
    try:
        IncidentRequest.from_json(body)
    except MessageError:
        assert deps.graph.calls == []
        _assert_quarantined(deps, "alerts", body)
    else:
        _check_outcome(deps, body)


class _Runner:
    def __init__(self) -> None:
        self.tasks: list[StepTask] = []

    async def run(self, task: StepTask) -> str:
        self.tasks.append(task)
        return "succeeded"


@FAST
@given(st.one_of(st.binary(max_size=300), step_tasks.map(lambda t: t.to_json().encode()),
                 st.sampled_from([b for n, b in BAD_BODIES if n.startswith("step-")])))
def test_the_step_handler_never_raises_and_runs_only_well_formed_tasks_for_its_own_step(body):
    deps, runner = _deps(), _Runner()

    async def get_deps() -> Deps:
        return deps

    async def get_runner() -> _Runner:
        return runner

    handler = functions.steps._make_handler("reset-password")
    with mock.patch.object(functions.steps, "get_deps", get_deps), mock.patch.object(functions.steps, "get_runner", get_runner):
        asyncio.run(handler(QueueMessage(id="m-1", body=body, dequeue_count=1)))
    assert deps.graph.calls == []
    try:
        task = StepTask.from_json(body)
    except MessageError:
        task = None
    if task is not None and task.step == "reset-password":
        assert runner.tasks == [task] and deps.ledger.errors == []
    else:
        assert runner.tasks == []
        _assert_quarantined(deps, "step-reset-password", body)
