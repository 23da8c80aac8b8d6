"""Property tests: parse_payload never raises anything but PayloadError, and only emits valid requests."""
from __future__ import annotations

import copy
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from shared.model import RISK_LEVELS, SOURCES, IncidentRequest
from shared.normalize import PayloadError, detect_source, join_defender, parse_payload, parse_time
from shared.timestamps import parse_timestamp
from shared.validation import is_guid, normalize_upn

FIXTURES = Path(__file__).parent / "fixtures"
# Keep Hypothesis' caches (constants, unicode data) out of the repository: no .hypothesis/ in cwd.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "breach-responder-hypothesis")
FAST = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _load(rel: str):
    return json.loads((FIXTURES / rel).read_text(encoding="utf-8"))


TEMPLATES = [
    _load("samples/entra-diag-userriskevents-record-high.json"),
    _load("samples/entra-diag-riskyusers-record-remediated.json"),
    _load("samples/defender-stream-alertinfo-record-b.json"),
    _load("samples/defender-stream-alertevidence-file-record.json"),
    _load("ingest/defender-alertevidence-user-record.json"),
    _load("samples/graph-riskyuser-single-high.json"),
    _load("samples/graph-riskdetection-live.json"),
    _load("ingest/graph-alert-v2-user-evidence.json"),
    IncidentRequest(user_id="5289e9c7-3945-4ffd-8fd3-d56124baf45d", user_principal_name=None).to_dict(),
]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
interesting_strings = st.sampled_from([
    "x' or 1 eq 1", "", " ", "S-1-5-18", "NT AUTHORITY", "User", "Mailbox", "Impacted", "Related", "High",
    "hidden", "atRisk", "confirmedCompromised", "remediated", "8/22/2022 6:07:16 PM", "2022-09-09T9:59:27.958Z",
    "0001-01-01T00:00:00Z", "5289e9c7-3945-4ffd-8fd3-d56124baf45d", "not-a-guid", "a@b.co", "A@contoso.com ",
    "RiskyUsers", "UserRiskEvents", "AdvancedHunting-AlertEvidence", "#microsoft.graph.security.userEvidence",
    "{\"AadId\": \"5289e9c7-3945-4ffd-8fd3-d56124baf45d\"}", "\u0000", "\u2028", "💥", "a" * 300,
])
json_values = st.recursive(json_scalars | interesting_strings,
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=12) | interesting_strings, children, max_size=4),
                           max_leaves=8)


def check_result(result) -> None:
    for request in result.requests:
        assert isinstance(request, IncidentRequest)
        assert request.user_id is not None or request.user_principal_name is not None
        if request.user_id is not None:
            assert is_guid(request.user_id)
        if request.user_principal_name is not None:
            assert normalize_upn(request.user_principal_name) == request.user_principal_name
        assert request.source in SOURCES and request.risk_level in RISK_LEVELS
        assert request.detected_at.endswith("Z")
        parse_timestamp(request.detected_at)
        assert IncidentRequest.from_json(request.to_json()) == request
    for entry in result.rejected + result.ignored:
        assert not entry.reason.startswith("internal error"), entry.reason
        assert "\n" not in entry.reason and len(entry.excerpt) <= 100
    for pending in result.pending:
        json.loads(pending.to_json())


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes(payload: bytes) -> None:
    try:
        result = parse_payload(payload)
    except PayloadError as exc:
        assert "\n" not in str(exc)
        return
    check_result(result)


@FAST
@given(json_values, st.sampled_from(["auto", "manual", "http", "entra-diagnostics", "defender-stream",
                                     "graph-riskyusers", "graph-alerts"]),
       st.sampled_from(["none", "low", "medium", "high"]))
def test_arbitrary_json(value, source: str, minimum: str) -> None:
    text = json.dumps(value)
    try:
        result = parse_payload(text, source, min_risk_level=minimum)
    except PayloadError:
        return
    check_result(result)
    try:
        detect_source(value)
    except ValueError:
        pass


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


TEMPLATE_PATHS = [list(_paths(t)) for t in TEMPLATES]


@st.composite
def mutated_records(draw):
    """A real record with 1-3 values (anywhere in it, nested ones included) replaced by arbitrary JSON."""
    which = draw(st.integers(0, len(TEMPLATES) - 1))
    record = copy.deepcopy(TEMPLATES[which])
    for path in draw(st.lists(st.sampled_from(TEMPLATE_PATHS[which]), min_size=1, max_size=3, unique=True)):
        target = record
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    return record


@FAST
@given(st.lists(mutated_records(), min_size=1, max_size=4), st.sampled_from(["records", "array", "jsonl"]),
       st.sampled_from(["none", "medium"]))
def test_mutated_real_records(records, container: str, minimum: str) -> None:
    if container == "records":
        text = json.dumps({"records": records})
    elif container == "array":
        text = json.dumps(records)
    else:
        text = "\n".join(json.dumps(r) for r in records)
    result = parse_payload(text, min_risk_level=minimum)
    check_result(result)
    outcomes = len(result.requests) + len(result.rejected) + len(result.ignored) + len(result.pending)
    assert outcomes >= 1


@settings(FAST, max_examples=60)
@given(st.lists(mutated_records(), max_size=3), st.lists(mutated_records(), max_size=3))
def test_join_defender_never_raises(infos, evidence) -> None:
    check_result(join_defender(infos, evidence, min_risk_level="none"))


@settings(max_examples=200, deadline=None, database=None)
@given(st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(timezone.utc)))
def test_parse_time_round_trips(moment: datetime) -> None:
    seven = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}7Z"
    assert parse_time(seven) == moment
    one_digit_hour = f"{moment:%Y-%m-%d}T{moment.hour}:{moment:%M:%S}Z"
    assert parse_time(one_digit_hour) == moment.replace(microsecond=0)
    hour12 = moment.hour % 12 or 12
    us = f"{moment.month}/{moment.day}/{moment.year} {hour12}:{moment:%M:%S} {'PM' if moment.hour >= 12 else 'AM'}"
    assert parse_time(us) == moment.replace(microsecond=0)
    offset = moment.astimezone(timezone(timedelta(hours=-7, minutes=-30))).isoformat()
    assert parse_time(offset) == moment
