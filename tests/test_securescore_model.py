"""Pure Secure Score logic: parsing real Graph samples, compact control storage, regression
detection, the SVG chart, the sparkline, settings and the CLI's table rendering."""
from __future__ import annotations

import io
import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.securescore.chart import SPARK, render_svg, render_trend_svg, sparkline
from shared.securescore.cli import emulator_down, render_table, run_score
from shared.securescore.config import ScoreSettings
from shared.securescore.model import (
    DayRecord,
    Finding,
    ScoreParseError,
    control_changes,
    decode_controls,
    detect_regressions,
    encode_controls,
    finding_text,
    parse_page,
    parse_score,
    regressions_between,
)
from shared.securescore.service import plan_top

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "securescore"
SVG = "{http://www.w3.org/2000/svg}"


def load(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def history() -> list[DayRecord]:
    days, skipped = parse_page(load("history-90d.json"))
    assert skipped == []
    return days


def day(date: str, current: float, controls: dict[str, float], maximum: float = 100.0) -> DayRecord:
    return DayRecord(date=date, current=current, max=maximum, percentage=round(100 * current / maximum, 2),
                     controls=controls, controls_total=len(controls))


# -- parsing ------------------------------------------------------------------------------------


def test_parse_docs_sample():
    days, skipped = parse_page(load("graph-securescores-list.json"))
    assert skipped == []
    [record] = days
    assert record.date == "2019-03-19"
    assert (record.current, record.max, record.percentage) == (387.0, 697.0, 55.52)
    assert (record.licensed_users, record.active_users) == (100, 0)
    assert record.averages == {"AllTenants": 37.0, "TotalSeats": 46.0, "IndustryTypes": 109.0}
    assert record.controls == {"AdminMFA": 35.0, "DLPEnabled": 20.0}
    assert record.tenant_id == "00000001-0001-0001-0001-000000000001c"


def test_parse_live_sample_with_its_oddities():
    days, skipped = parse_page(load("graph-securescores-top1-live.json"))
    assert skipped == []
    [record] = days
    assert record.date == "2026-07-17"
    assert (record.current, record.max) == (815.22, 1376.0)
    assert record.percentage == pytest.approx(59.25)
    assert (record.licensed_users, record.active_users) == (0, 3)
    # Only basis -> averageScore is kept; PascalCase SeatSizeRange* keys do not leak in.
    assert record.averages == {"AllTenants": 52.86, "TotalSeats": 48.1}
    assert record.controls == {
        "IntegratedApps": 4.0, "PWAgePolicyNew": 8.0, "SelfServicePasswordReset": 1.0,
        "BlockLegacyAuthentication": 8.0, "MFARegistrationV2": 9.0,
    }


def test_parse_is_lenient_with_strings_case_and_missing_fields():
    record = parse_score({
        "id": "t_2026-01-05",  # no createdDateTime: the day comes from the id
        "CurrentScore": "12.5",  # PascalCase and a numeric string
        "maxScore": None,
        "averageComparativeScores": [{"Basis": "AllTenants", "AverageScore": "40"}, "junk", {"basis": "X"}],
        "controlScores": [
            {"controlName": "A", "score": "3", "on": "true"},
            {"controlName": "B", "score": "n/a"},
            {"score": 4},
            {"controlName": "A", "score": 1},
        ],
    })
    assert record.date == "2026-01-05"
    assert record.current == 12.5
    assert record.max == 0.0 and record.percentage is None
    assert record.averages == {"AllTenants": 40.0}
    assert record.controls == {"A": 3.0}
    assert record.licensed_users is None


def test_parse_page_skips_unusable_objects_and_keeps_one_per_day():
    page = {"value": [
        {"createdDateTime": "2026-07-02T10:00:00.1234567Z", "currentScore": 50, "maxScore": 100},
        {"createdDateTime": "2026-07-02T00:00:00Z", "currentScore": 40, "maxScore": 100},
        {"createdDateTime": "2026-07-01T00:00:00Z", "maxScore": 100},
        {"currentScore": 1},
        "not an object",
    ]}
    days, skipped = parse_page(page)
    assert [(d.date, d.current) for d in days] == [("2026-07-02", 50.0)]
    assert len(skipped) == 3
    with pytest.raises(ScoreParseError):
        parse_score({"createdDateTime": "yesterday", "currentScore": 1})


def test_history_fixture_is_90_consecutive_days_oldest_first():
    days = history()
    assert len(days) == 90
    assert days[0].date == "2026-04-19" and days[-1].date == "2026-07-17"
    assert [d.date for d in days] == sorted(d.date for d in days)


def test_entity_round_trip():
    record = history()[-1]
    entity = {"PartitionKey": "tenant", "RowKey": record.date, **record.to_entity()}
    assert all(len(v) < 32_000 for v in entity.values() if isinstance(v, str))
    assert DayRecord.from_entity(entity) == record


# -- compact control storage -----------------------------------------------------------------------


def test_long_control_list_is_split_into_chunks_and_round_trips():
    controls = {f"Control_{i:04d}_" + "x" * 40: float(i % 17) for i in range(3000)}
    chunks, kept = encode_controls(controls)
    assert kept == 3000
    assert len(chunks) > 1
    assert all(len(text) <= 28_000 for text in chunks.values())
    assert set(chunks) == {"controls"} | {f"controls_{i}" for i in range(1, len(chunks))}
    entity = {**chunks, "controls_chunks": len(chunks)}
    assert decode_controls(entity) == controls


def test_control_list_beyond_the_chunk_budget_keeps_the_highest_scores():
    controls = {f"c{i:03d}": float(i) for i in range(100)}
    chunks, kept = encode_controls(controls, chunk_chars=120, max_chunks=3)
    decoded = decode_controls({**chunks, "controls_chunks": len(chunks)})
    assert len(chunks) == 3 and kept == len(decoded) < 100
    assert min(decoded.values()) > max(v for k, v in controls.items() if k not in decoded)
    record = DayRecord("2026-01-01", 1, 2, 50.0, controls=decoded, controls_total=100)
    assert record.controls_truncated


# -- regressions ----------------------------------------------------------------------------------------


def test_drop_over_threshold_is_a_regression():
    before = day("2026-07-01", 60, {"A": 10, "B": 5})
    after = day("2026-07-02", 53, {"A": 10, "B": 5})  # e.g. a control Graph no longer lists: total fell
    finding = detect_regressions(before, after, min_drop_points=5)
    assert finding is not None
    assert finding.delta == -7 and finding.score_dropped and finding.controls == ()
    assert finding.reasons == ["score fell 7 points (more than 5)"]


def test_drop_within_threshold_without_control_falls_is_not_a_regression():
    assert detect_regressions(day("2026-07-01", 60, {"A": 1}), day("2026-07-02", 55, {"A": 1}), 5) is None


def test_any_control_that_fell_is_a_regression_with_before_after_delta():
    before = day("2026-07-01", 60, {"A": 10, "B": 5, "C": 1})
    after = day("2026-07-02", 61, {"A": 8, "B": 9, "C": 1, "New": 0})
    finding = detect_regressions(before, after, min_drop_points=5)
    assert finding is not None and not finding.score_dropped
    assert [c.to_dict() for c in finding.controls] == [{"control": "A", "before": 10, "after": 8, "delta": -2}]
    changes = control_changes(before, after)
    assert [(c.control, c.delta) for c in changes] == [("A", -2), ("B", 4)]


def test_equal_or_better_day_is_no_false_positive():
    before = day("2026-07-01", 60, {"A": 10, "B": 5})
    assert detect_regressions(before, day("2026-07-02", 60, {"A": 10, "B": 5}), 0) is None
    assert detect_regressions(before, day("2026-07-02", 70, {"A": 10, "B": 15}), 0) is None
    assert detect_regressions(None, before, 0) is None
    assert detect_regressions(before, before, 0) is None  # not a later day


def test_history_has_exactly_the_seeded_regression():
    findings = regressions_between(history(), 5)
    assert [f.date for f in findings] == ["2026-06-29"]
    [finding] = findings
    assert finding.previous_date == "2026-06-28" and finding.delta == -23
    assert {c.control: (c.before, c.after) for c in finding.controls} == {
        "BlockLegacyAuthentication": (8, 0), "mdo_autoforwardingmode": (8, 0), "MFARegistrationV2": (9, 2),
    }
    text = finding_text(finding)
    assert "-23 points" in text and "MFARegistrationV2" in text and "9 -> 2" in text
    assert Finding.from_dict(json.loads(json.dumps(finding.to_dict()))) == finding


# -- planning -------------------------------------------------------------------------------------------


def test_plan_top():
    from datetime import date

    today = date(2026, 7, 17)
    assert plan_top(None, today) == 90
    assert plan_top("2026-07-17", today) == 1
    assert plan_top("2026-07-16", today) == 2
    assert plan_top("2026-07-07", today) == 11
    assert plan_top("2025-01-01", today) == 90


# -- chart --------------------------------------------------------------------------------------------------


def rows_and_findings(days: list[DayRecord]):
    findings = [f.to_dict() for f in regressions_between(days, 5)]
    dates = {f["date"] for f in findings}
    return [dict(d.summary(), regression=d.date in dates) for d in days], findings


def circles(svg: str):
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [c for c in root.iter(f"{SVG}circle") if "day" in (c.get("class") or "").split()]


def test_chart_is_well_formed_with_one_point_per_day_and_regressions_marked():
    days = history()
    rows, findings = rows_and_findings(days)
    svg = render_svg(rows, findings)
    points = circles(svg)
    assert len(points) == 90
    assert sorted(c.get("data-date") for c in points) == [d.date for d in days]
    red = [c for c in points if "regression" in c.get("class").split()]
    assert [c.get("data-date") for c in red] == ["2026-06-29"]
    tip = red[0].find(f"{SVG}title").text
    assert "2026-06-29" in tip and "-23" in tip and "BlockLegacyAuthentication" in tip
    # a lower percentage is drawn lower (SVG y grows downwards)
    by_date = {c.get("data-date"): float(c.get("cy")) for c in points}
    assert by_date["2026-06-29"] > by_date["2026-06-28"]
    assert by_date["2026-07-17"] < by_date["2026-04-19"]
    assert "<script" not in svg and "Regression (1)" in svg and "Jul 17" in svg


def test_chart_with_a_gap_one_day_and_no_days():
    days = history()
    kept = days[:10] + days[15:20]
    rows, findings = rows_and_findings(kept)
    root = ET.fromstring(render_svg(rows, findings))
    assert len(circles(render_svg(rows, findings))) == 15
    assert len([e for e in root.iter(f"{SVG}line") if e.get("class") == "gap"]) == 1
    assert len(circles(render_svg(rows[:1], []))) == 1
    empty = render_trend_svg({"days": [], "regressions": []})
    assert circles(empty) == [] and "No Secure Score snapshots" in empty


def test_chart_escapes_text():
    rows = [{"date": "2026-07-01", "percentage": 50.0, "current": 5, "max": 10, "regression": True}]
    findings = [{"date": "2026-07-01", "previous_date": "2026-06-30", "delta": -1,
                 "controls": [{"control": "<b>&x</b>", "before": 1, "after": 0, "delta": -1}]}]
    svg = render_svg(rows, findings, title='Score "<test>"')
    [point] = circles(svg)
    assert "<b>&x</b>" in point.find(f"{SVG}title").text


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == SPARK
    assert sparkline([0, 100]) == "▁█"
    assert sparkline([5, 5, 5]) == "▄▄▄"
    assert sparkline([1, None, 3]) == "▁ █"
    assert sparkline([]) == ""
    assert len(sparkline([d.percentage for d in history()])) == 90


# -- settings ------------------------------------------------------------------------------------------------


def test_settings_defaults_and_validation():
    settings = ScoreSettings.from_env({})
    assert settings.schedule == "0 30 6 * * *" and settings.min_drop_points == 5.0 and not settings.mail_enabled
    on = ScoreSettings.from_env({"SECURE_SCORE_NOTIFY": "true", "SECURE_SCORE_MIN_DROP_POINTS": "2.5",
                                 "SOC_MAILBOX": "soc@contoso.com", "NOTIFY_SENDER": "br@contoso.com"})
    assert on.mail_enabled and on.min_drop_points == 2.5
    assert not ScoreSettings.from_env({"SECURE_SCORE_NOTIFY": "true", "SOC_MAILBOX": "soc@contoso.com"}).mail_enabled
    with pytest.raises(ConfigError, match="SECURE_SCORE_MIN_DROP_POINTS"):
        ScoreSettings.from_env({"SECURE_SCORE_MIN_DROP_POINTS": "-1"})
    with pytest.raises(ConfigError, match="SECURE_SCORE_NOTIFY"):
        ScoreSettings.from_env({"SECURE_SCORE_NOTIFY": "maybe"})


# -- CLI rendering and the emulator check ------------------------------------------------------------------------


def test_render_table_has_rows_deltas_regression_and_sparkline():
    days = history()[-25:]
    rows, findings = rows_and_findings(days)
    previous = None
    for row in rows:
        row["delta"] = None if previous is None else round(row["current"] - previous, 2)
        previous = row["current"]
    text = render_table({"days": rows, "regressions": findings, "stored_days": 90,
                         "latest": {**rows[-1], "compared_with": rows[-2]["date"], "changes": []}})
    lines = text.splitlines()
    assert lines[0] == "Secure Score: 25 day(s) shown of 90 stored"
    regression_line = next(line for line in lines if line.startswith("2026-06-29"))
    assert "65 / 108" in regression_line and "60.2%" in regression_line and "-23" in regression_line
    assert "! regression" in regression_line
    trend_line = next(line for line in lines if line.startswith("trend"))
    assert len([ch for ch in trend_line if ch in SPARK]) == 25
    assert render_table({"days": []}).startswith("no Secure Score snapshots stored yet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_score_with_local_emulator_down_says_so_in_one_line_and_exits_2():
    port = free_port()
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    out, err = io.StringIO(), io.StringIO()
    code = run_score({"AzureWebJobsStorage": conn}, json_output=True, out=out, err=err)
    assert code == 2
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "not running" in lines[0]


def test_emulator_check_ignores_remote_endpoints():
    assert emulator_down("https://contoso.table.core.windows.net/") is None


def test_score_rejects_bad_days_and_missing_storage():
    err = io.StringIO()
    assert run_score({}, days=0, err=err) == 2 and "--days" in err.getvalue()
    err = io.StringIO()
    assert run_score({}, err=err) == 2 and "storage is not configured" in err.getvalue()
