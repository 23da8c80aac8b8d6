"""Pure helpers of the tenant simulator: the $filter subset, paging links, relative seed times, Retry-After."""
from __future__ import annotations

import datetime as dt

import pytest

from localdev.simulator.faults import ServiceFaults, format_retry_after
from localdev.simulator.odata import GraphError, compile_filter, paginate, parse_iso, resolve_relative_times

ITEMS = [
    {"id": "a", "riskState": "atRisk", "riskLevel": "high", "riskLastUpdatedDateTime": "2026-07-18T15:01:38.2400000Z"},
    {"id": "b", "riskState": "atRisk", "riskLevel": "medium", "riskLastUpdatedDateTime": "2026-07-18T16:00:00Z"},
    {"id": "c", "riskState": "dismissed", "riskLevel": "none", "riskLastUpdatedDateTime": "2026-07-17T09:00:00Z"},
]


@pytest.mark.parametrize("text, expected", [
    ("riskState eq 'atRisk' and riskLevel eq 'high'", ["a"]),
    ("RiskState eq 'ATRISK'", ["a", "b"]),
    ("riskState eq 'atRisk' and (riskLevel eq 'high' or riskLevel eq 'medium')", ["a", "b"]),
    ("not riskState eq 'atRisk'", ["c"]),
    ("riskLastUpdatedDateTime gt 2026-07-18T15:01:38Z", ["a", "b"]),
    ("riskLastUpdatedDateTime gt 2026-07-18T15:30:00.1234567Z", ["b"]),
    ("riskLastUpdatedDateTime le '2026-07-17T09:00:00Z'", ["c"]),
    ("riskLevel ne 'none' and riskLastUpdatedDateTime ge 2026-07-18", ["a", "b"]),
])
def test_filter_subset(text, expected):
    pred = compile_filter(text, ("id", "riskState", "riskLevel", "riskLastUpdatedDateTime"))
    assert [i["id"] for i in ITEMS if pred(i)] == expected


@pytest.mark.parametrize("text", ["riskState eq", "riskState like 'x'", "foo eq 'x'", "riskState eq 'x' and",
                                  "(riskState eq 'x'", "riskState eq bareword"])
def test_filter_rejects_nonsense(text):
    with pytest.raises(GraphError) as info:
        compile_filter(text, ("riskState",))
    assert info.value.status == 400


def test_paginate_builds_absolute_next_links():
    items = list(range(45))
    query = {"$filter": "riskState eq 'atRisk'", "$top": "20"}
    page, link = paginate(items, query, "http://127.0.0.1:1234", "/v1.0/identityProtection/riskyUsers", 100, 500)
    assert page == list(range(20))
    assert link.startswith("http://127.0.0.1:1234/v1.0/identityProtection/riskyUsers?$filter=riskState%20eq%20'atRisk'")
    token = link.split("$skiptoken=")[1]
    page2, link2 = paginate(items, {**query, "$skiptoken": token}, "http://h", "/p", 100, 500)
    assert page2 == list(range(20, 40)) and link2
    page3, link3 = paginate(items, {**query, "$skiptoken": link2.split("$skiptoken=")[1]}, "http://h", "/p", 100, 500)
    assert page3 == list(range(40, 45)) and link3 is None
    with pytest.raises(GraphError):
        paginate(items, {"$skiptoken": "garbage!"}, "http://h", "/p", 100, 500)
    with pytest.raises(GraphError):
        paginate(items, {"$top": "0"}, "http://h", "/p", 100, 500)


def test_relative_times_and_iso_parsing():
    now = dt.datetime(2026, 7, 18, 12, 0, tzinfo=dt.timezone.utc)
    out = resolve_relative_times({"a": "@now-2h", "b": ["@now+1d-30m"], "c": "@nowhere", "d": 5}, now)
    assert parse_iso(out["a"]) == now - dt.timedelta(hours=2)
    assert parse_iso(out["b"][0]) == now + dt.timedelta(days=1, minutes=-30)
    assert out["c"] == "@nowhere" and out["d"] == 5
    assert parse_iso("2022-09-09T9:59:27.958Z") == dt.datetime(2022, 9, 9, 9, 59, 27, 958000, tzinfo=dt.timezone.utc)
    assert parse_iso("2025-11-11T09:47:38.0000000+00:00").tzinfo is not None
    assert parse_iso("atRisk") is None


def test_retry_after_format_and_token_bucket():
    assert format_retry_after(2.0) == "2"
    assert format_retry_after(0.345) in ("0.34", "0.35")
    assert format_retry_after(0.0) == "0.01"
    bucket = ServiceFaults({"rate_per_s": 10, "burst": 2})
    assert bucket.decide() is None and bucket.decide() is None
    throttled = bucket.decide()
    assert throttled.status == 429 and 0 < float(throttled.retry_after) <= 0.1

    def run(seed):
        faults = ServiceFaults({"error_rate": 0.5, "error_statuses": [503, 500], "seed": seed})
        return [d.status if d else None for d in (faults.decide() for _ in range(40))]
    first = run(3)
    assert first == run(3)  # the seed makes random faults reproducible
    assert {None, 503, 500} == set(first)
