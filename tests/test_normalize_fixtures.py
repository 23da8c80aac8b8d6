"""Data-driven tests: every alert-shaped sample and ingest fixture against ingest/expectations.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.model import IncidentRequest
from shared.normalize import PayloadError, UnknownSourceError, detect_source, parse_payload
from shared.validation import is_guid, normalize_upn

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTATIONS = json.loads((FIXTURES / "ingest" / "expectations.json").read_text(encoding="utf-8"))


def _case_id(case: dict) -> str:
    options = case.get("options")
    return case["file"] + (" " + ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")


def _check_request(request: IncidentRequest) -> None:
    assert request.user_id is not None or request.user_principal_name is not None
    if request.user_id is not None:
        assert is_guid(request.user_id) and request.user_id == request.user_id.lower()
    if request.user_principal_name is not None:
        assert normalize_upn(request.user_principal_name) == request.user_principal_name
    assert request.detected_at.endswith("Z")
    assert IncidentRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("case", EXPECTATIONS["cases"], ids=_case_id)
def test_fixture_expectations(case: dict) -> None:
    payload = (FIXTURES / case["file"]).read_bytes()
    assert detect_source(payload) == case["detect"]
    result = parse_payload(payload, **case.get("options", {}))

    got = [{key: (list(value) if isinstance(value, tuple) else value)
            for key, value in request.to_dict().items() if key in want}
           for request, want in zip(result.requests, case["requests"])]
    assert len(result.requests) == len(case["requests"]), [r.to_dict() for r in result.requests]
    assert got == case["requests"]
    for request in result.requests:
        _check_request(request)

    assert [[p.alert_id, p.kind] for p in result.pending] == case["pending"]
    for kind in ("rejected", "ignored"):
        entries = getattr(result, kind)
        assert len(entries) == len(case[kind]), [(e.index, e.reason) for e in entries]
        for entry, want in zip(entries, case[kind]):
            assert entry.index == want["index"]
            assert want["reason_contains"] in entry.reason
            assert len(entry.excerpt) <= 100


@pytest.mark.parametrize("name", EXPECTATIONS["non_alert_samples"])
def test_non_alert_samples_produce_nothing(name: str) -> None:
    payload = (FIXTURES / name).read_bytes()
    result = parse_payload(payload)
    assert result.requests == [] and result.pending == []
    assert result.rejected, "a non-alert shape must be reported, not silently dropped"
    with pytest.raises(UnknownSourceError):
        detect_source(payload)


def test_every_sample_is_covered() -> None:
    covered = {case["file"] for case in EXPECTATIONS["cases"]} | set(EXPECTATIONS["non_alert_samples"])
    samples = {f"samples/{p.name}" for p in (FIXTURES / "samples").glob("*.json")}
    ingest = {f"ingest/{p.name}" for p in (FIXTURES / "ingest").iterdir() if p.name != "expectations.json"}
    assert samples | ingest <= covered
    assert len(samples) >= 33


def test_every_sample_parses_without_raising() -> None:
    for path in sorted((FIXTURES / "samples").glob("*.json")):
        for source in ("auto", "entra-diagnostics", "defender-stream", "graph-riskyusers", "graph-alerts", "manual"):
            try:
                parse_payload(path.read_bytes(), source)
            except PayloadError:  # pragma: no cover - the samples are all JSON
                pytest.fail(f"{path.name} is readable JSON and must not raise")


def test_sample_alert_shapes_by_name() -> None:
    """The headline expectations from the brief, spelled out."""
    def run(name: str, **kw):
        return parse_payload((FIXTURES / "samples" / name).read_bytes(), **kw)

    assert run("entra-diag-riskyusers-record-remediated.json").requests == []
    [req] = run("entra-diag-userriskevents-record-high.json").requests
    assert (req.user_id, req.risk_level, req.source) == ("5289e9c7-3945-4ffd-8fd3-d56124baf45d", "high", "entra-diagnostics")
    assert run("graph-riskyusers-list-dismissed.json").requests == []
    [req] = run("graph-riskyuser-single-high.json").requests
    assert (req.user_principal_name, req.risk_level) == ("alexw@contoso.com", "high")
    for name in ("graph-alerts-v2-list-device.json", "graph-alerts-v2-single-device.json"):
        assert run(name, min_risk_level="none").requests == []
    assert run("defender-stream-alertevidence-file-record.json", min_risk_level="none").requests == []
    info = run("defender-stream-alertinfo-record-b.json")
    assert info.requests == [] and [(p.alert_id, p.kind) for p in info.pending] == [
        ("ad6450625369250ba3fc4b5752f34f474ec80b20ae", "info")]
