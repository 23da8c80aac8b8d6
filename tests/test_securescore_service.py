"""Secure Score store and snapshot service against real Azurite, with a hand-written fake Graph.

Each test gets its own pair of tables in the session Azurite, so tests do not see each
other's days. The fake Graph serves the 90-day fixture (newest first) up to a settable
"today", pages it with @odata.nextLink like Graph does, records every call, and can fail
the next N calls with a TransientError (429 with Retry-After) or mail sends.
"""
from __future__ import annotations

import io
import json
import uuid
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.data.tables.aio import TableServiceClient

from shared.adapters.scores import ScoreStore
from shared.errors import PermanentError, TransientError
from shared.securescore.config import ScoreSettings
from shared.securescore.model import DayRecord, parse_page, parse_score
from shared.securescore.service import latest_score, snapshot, summary, trend

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "securescore"
HISTORY = json.loads((FIXTURES / "history-90d.json").read_text(encoding="utf-8"))["value"]
LAST = date(2026, 7, 17)  # the newest day in the fixture
MAIL_ON = ScoreSettings(min_drop_points=5, notify=True, soc_mailbox="soc@contoso.com", notify_sender="br@contoso.com")
MAIL_OFF = ScoreSettings(min_drop_points=5)


class FakeGraph:
    """Serves GET /security/secureScores like Graph (newest first, $top, nextLink paging)."""

    def __init__(self, today: date = LAST, page_size: int = 25) -> None:
        self.today = today
        self.page_size = page_size
        self.calls: list[dict[str, Any]] = []
        self.mails: list[dict[str, str]] = []
        self.fail_next: list[Exception] = []
        self.mail_failures: list[Exception] = []

    def _items(self) -> list[dict]:
        return [s for s in HISTORY if s["createdDateTime"][:10] <= self.today.isoformat()]

    async def request(self, method: str, path: str, *, permission: str, query: dict[str, str] | None = None,
                      **_: Any) -> Any:
        self.calls.append({"method": method, "path": path, "query": dict(query or {}), "permission": permission})
        if self.fail_next:
            raise self.fail_next.pop(0)
        assert (method, path) == ("GET", "/security/secureScores")
        top = int((query or {}).get("$top", "100"))
        skip = int((query or {}).get("$skiptoken", "0"))
        items = self._items()[:top]
        page = items[skip:skip + self.page_size]
        body: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(items):
            body["@odata.nextLink"] = (
                f"https://graph.microsoft.com/v1.0/security/secureScores?$top={top}&$skiptoken={skip + self.page_size}"
            )
        return body

    async def list_all(self, path: str, *, permission: str, query: dict[str, str] | None = None,
                       max_items: int = 1000) -> list[dict]:
        """GraphAdapter.list_all's contract: follow nextLink until max_items."""
        items: list[dict] = []
        page = await self.request("GET", path, query=query, permission=permission)
        while True:
            items.extend(page.get("value", []))
            link = page.get("@odata.nextLink")
            if not link or len(items) >= max_items:
                return items[:max_items]
            params = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
            page = await self.request("GET", urlsplit(link).path.removeprefix("/v1.0"), query=params,
                                      permission=permission)

    async def send_mail(self, sender: str, to: str, subject: str, text: str) -> None:
        if self.mail_failures:
            raise self.mail_failures.pop(0)
        self.mails.append({"sender": sender, "to": to, "subject": subject, "text": text})

    @property
    def tops(self) -> list[str]:
        return [c["query"].get("$top") for c in self.calls if "$skiptoken" not in c["query"]]


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def tables(azurite):
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service


@pytest.fixture
async def store(tables):
    suffix = uuid.uuid4().hex[:10]
    store = ScoreStore(tables, scores_table=f"ss{suffix}", findings_table=f"ssf{suffix}")
    await store.ensure()
    return store


async def count_rows(table) -> int:
    return len([e async for e in table.list_entities()])


# -- backfill, rerun, gap fill ----------------------------------------------------------------------


async def test_first_run_backfills_90_days(store):
    graph = FakeGraph()
    result = await snapshot(graph, store, MAIL_OFF, today=LAST, sleep=Sleeps())
    assert result.backfill and result.top == 90
    assert graph.tops == ["90"]
    assert len(graph.calls) == 4  # 90 objects in pages of 25: nextLink followed
    assert all(c["permission"] == "SecurityEvents.Read.All" for c in graph.calls)
    assert len(result.stored) == 90 and result.already_stored == []
    assert await count_rows(store.scores) == 90
    dates = await store.stored_dates()
    assert dates[0] == "2026-04-19" and dates[-1] == "2026-07-17"
    # what is stored is what Graph said, compactly
    expected = parse_score(HISTORY[0])
    assert await store.get_day("2026-07-17") == expected
    assert expected.controls["MFARegistrationV2"] == 9.0 and expected.averages["AllTenants"] == 52.86
    # the seeded regression is a finding, not mailed (backfill never mails history)
    assert [f.date for f in result.findings] == ["2026-06-29"]
    rows = await store.list_finding_rows()
    assert [(r["PartitionKey"], r["RowKey"], r["notify_state"]) for r in rows] == [("2026-06-29", "after-2026-06-28", "skipped")]
    assert graph.mails == []


async def test_rerun_on_the_same_day_stores_nothing_new(store):
    graph = FakeGraph()
    await snapshot(graph, store, MAIL_ON, today=LAST, sleep=Sleeps())
    before = {e["RowKey"]: e.metadata["etag"] async for e in store.scores.list_entities()}
    again = await snapshot(graph, store, MAIL_ON, today=LAST, sleep=Sleeps())
    assert not again.backfill and again.top == 1
    assert graph.tops == ["90", "1"]
    assert again.stored == [] and again.already_stored == ["2026-07-17"] and again.findings == []
    after = {e["RowKey"]: e.metadata["etag"] async for e in store.scores.list_entities()}
    assert after == before  # not even rewritten
    assert await count_rows(store.findings) == 1
    assert graph.mails == []


async def test_missed_days_are_filled_and_their_regression_found_and_mailed_once(store):
    graph = FakeGraph(today=date(2026, 6, 27))
    first = await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 27), sleep=Sleeps())
    assert first.backfill and len(first.stored) == 70  # all Graph had on that day
    assert first.findings == []

    graph.today = LAST  # the timer did not run for 20 days
    gap = await snapshot(graph, store, MAIL_ON, today=LAST, sleep=Sleeps())
    assert gap.top == 21 and graph.tops[-1] == "21"
    assert gap.stored == [f"2026-06-{d}" for d in (28, 29, 30)] + [f"2026-07-{d:02d}" for d in range(1, 18)]
    assert gap.already_stored == ["2026-06-27"]
    assert await count_rows(store.scores) == 90
    [finding] = gap.findings
    assert (finding.date, finding.previous_date, finding.delta) == ("2026-06-29", "2026-06-28", -23)
    assert gap.mailed == 1
    [mail] = graph.mails
    assert mail["to"] == "soc@contoso.com" and mail["sender"] == "br@contoso.com"
    assert "23 points" in mail["subject"] and "2026-06-29" in mail["subject"]
    for control, line in (("BlockLegacyAuthentication", "8 -> 0  (-8)"), ("MFARegistrationV2", "9 -> 2  (-7)")):
        assert any(control in row and line in row for row in mail["text"].splitlines())
    [row] = await store.list_finding_rows()
    assert row["notify_state"] == "sent"

    rerun = await snapshot(graph, store, MAIL_ON, today=LAST, sleep=Sleeps())
    assert rerun.stored == [] and rerun.mailed == 0 and len(graph.mails) == 1


async def test_each_gap_day_is_compared_with_the_day_before_it(store):
    graph = FakeGraph(today=date(2026, 6, 28))
    await snapshot(graph, store, MAIL_OFF, today=date(2026, 6, 28), sleep=Sleeps())
    graph.today = date(2026, 7, 4)
    result = await snapshot(graph, store, MAIL_OFF, today=date(2026, 7, 4), sleep=Sleeps())
    # 06-29 fell (a finding); 07-03 recovered (not a finding); equal days are not findings
    assert [f.date for f in result.findings] == ["2026-06-29"]
    assert len(result.stored) == 6


# -- retries ----------------------------------------------------------------------------------------------


async def test_429_then_success_is_retried_honouring_retry_after(store):
    graph = FakeGraph()
    graph.fail_next = [
        TransientError("Graph GET /security/secureScores: 429 TooManyRequests", status=429, retry_after=1.5),
        TransientError("Graph GET /security/secureScores: 503", status=503),
    ]
    sleeps = Sleeps()
    result = await snapshot(graph, store, MAIL_OFF, today=LAST, sleep=sleeps)
    assert result.attempts == 3
    assert sleeps.waits == [1.5, 4.0]  # Retry-After when given, else a short backoff
    assert len(result.stored) == 90


async def test_persistent_throttling_gives_up_after_three_attempts_and_stores_nothing(store):
    graph = FakeGraph()
    graph.fail_next = [TransientError("429", status=429, retry_after=999.0) for _ in range(3)]
    sleeps = Sleeps()
    with pytest.raises(TransientError):
        await snapshot(graph, store, MAIL_OFF, today=LAST, sleep=sleeps)
    assert sleeps.waits == [30.0, 30.0]  # Retry-After is capped for a timer
    assert len(graph.calls) == 3
    assert await count_rows(store.scores) == 0


async def test_permanent_error_is_not_retried(store):
    graph = FakeGraph()
    graph.fail_next = [PermanentError("403 - grant SecurityEvents.Read.All", status=403)]
    with pytest.raises(PermanentError):
        await snapshot(graph, store, MAIL_OFF, today=LAST, sleep=Sleeps())
    assert len(graph.calls) == 1


# -- findings ------------------------------------------------------------------------------------------------


async def test_findings_are_idempotent_and_a_crash_between_finding_and_day_heals(store):
    graph = FakeGraph(today=date(2026, 6, 28))
    await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 28), sleep=Sleeps())
    days, _ = parse_page(HISTORY)
    by_date = {d.date: d for d in days}
    from shared.securescore.model import detect_regressions

    finding = detect_regressions(by_date["2026-06-28"], by_date["2026-06-29"], 5)
    # a previous run wrote the finding and then crashed before storing the day and mailing
    assert await store.put_finding(finding) is True
    assert await store.put_finding(finding) is False
    graph.today = date(2026, 6, 29)
    result = await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 29), sleep=Sleeps())
    assert result.stored == ["2026-06-29"]
    assert await count_rows(store.findings) == 1
    assert len(graph.mails) == 1
    assert len(await store.list_findings()) == 1


async def test_only_one_sender_claims_a_mail_and_transient_mail_failures_are_retried_next_run(store):
    graph = FakeGraph(today=date(2026, 6, 28))
    await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 28), sleep=Sleeps())
    graph.today = date(2026, 6, 29)
    graph.mail_failures = [TransientError("sendMail 503", status=503)]
    first = await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 29), sleep=Sleeps())
    assert first.stored == ["2026-06-29"] and first.mailed == 0
    [row] = await store.list_finding_rows()
    assert row["notify_state"] == "failed"

    [finding] = await store.list_findings()
    assert await store.claim_notification(finding) is True
    assert await store.claim_notification(finding) is False  # another sender holds it
    await store.set_notify_state(finding, "failed", "released by the test")

    graph.today = date(2026, 6, 30)
    second = await snapshot(graph, store, MAIL_ON, today=date(2026, 6, 30), sleep=Sleeps())
    assert second.mailed == 1 and len(graph.mails) == 1
    [row] = await store.list_finding_rows()
    assert row["notify_state"] == "sent"


# -- reading: trend, summary, latest score ----------------------------------------------------------------------


async def test_trend_summary_and_latest_score(store):
    assert await summary(store) is None
    assert await latest_score(store) is None
    assert (await trend(store, 30))["days"] == []
    await snapshot(FakeGraph(), store, MAIL_OFF, today=LAST, sleep=Sleeps())

    data = await trend(store, 30)
    assert len(data["days"]) == 30 and data["stored_days"] == 90
    assert data["days"][0]["date"] == "2026-06-18" and data["days"][-1]["date"] == "2026-07-17"
    assert data["days"][0]["delta"] is not None  # compared with the day before the window
    by_date = {d["date"]: d for d in data["days"]}
    assert by_date["2026-06-29"]["regression"] is True and by_date["2026-06-29"]["delta"] == -23
    assert by_date["2026-07-03"]["regression"] is False and by_date["2026-07-03"]["delta"] == 23
    assert [r["date"] for r in data["regressions"]] == ["2026-06-29"]
    assert data["latest"]["date"] == "2026-07-17" and data["latest"]["compared_with"] == "2026-07-16"
    assert "controls" not in data["days"][0]  # the list stays small
    json.dumps(data)

    short = await trend(store, 10)
    assert len(short["days"]) == 10 and short["regressions"] == []

    latest = await store.get_day("2026-07-17")
    assert await summary(store) == {"current": latest.current, "max": latest.max, "percentage": latest.percentage,
                                    "date": "2026-07-17", "days": 90}
    assert await latest_score(store) == {"date": "2026-07-17", "current": 98.0, "max": 108.0, "percentage": 90.74}


async def test_latest_control_changes(store):
    graph = FakeGraph(today=date(2026, 6, 29))
    await snapshot(graph, store, MAIL_OFF, today=date(2026, 6, 29), sleep=Sleeps())
    latest = (await trend(store, 5))["latest"]
    assert latest["date"] == "2026-06-29"
    assert [(c["control"], c["before"], c["after"]) for c in latest["changes"]] == [
        ("BlockLegacyAuthentication", 8.0, 0.0), ("mdo_autoforwardingmode", 8.0, 0.0), ("MFARegistrationV2", 9.0, 2.0),
    ]


async def test_long_control_list_round_trips_through_table_storage(store):
    controls = {f"VeryLongControlName_{i:04d}_" + "z" * 30: float(i % 9) for i in range(2500)}
    record = DayRecord("2026-07-01", 500.0, 1000.0, 50.0, controls=controls, controls_total=len(controls))
    assert await store.put_day(record) is True
    assert await store.put_day(record) is False
    stored = await store.get_day("2026-07-01")
    assert stored.controls == controls and not stored.controls_truncated
    entity = await store.scores.get_entity(store.partition, "2026-07-01")
    assert entity["controls_chunks"] > 1


async def test_missing_tables_read_as_empty(tables):
    store = ScoreStore(tables, scores_table=f"nope{uuid.uuid4().hex[:8]}", findings_table=f"nope{uuid.uuid4().hex[:8]}")
    assert await store.stored_dates() == [] and await store.list_findings() == []
    assert await latest_score(store) is None


# -- the CLI over real storage ---------------------------------------------------------------------------------------


def test_score_cli_lists_stored_days_and_writes_the_chart(azurite, tmp_path, monkeypatch):
    import asyncio

    from shared.securescore import cli as score_cli

    suffix = uuid.uuid4().hex[:10]
    names = {"scores_table": f"ss{suffix}", "findings_table": f"ssf{suffix}"}

    async def fill() -> None:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
            store = ScoreStore(service, **names)
            await store.ensure()
            await snapshot(FakeGraph(), store, MAIL_OFF, today=LAST, sleep=Sleeps())

    asyncio.run(fill())

    import shared.bootstrap

    real_open_storage = shared.bootstrap.open_storage

    def open_storage(env: Any) -> Any:  # the real storage, with this test's Secure Score tables
        storage = real_open_storage(env)
        storage.scores = ScoreStore(storage.clients.tables, **names)
        return storage

    monkeypatch.setattr(shared.bootstrap, "open_storage", open_storage)
    env = {"AzureWebJobsStorage": azurite.connection_string}

    out, err = io.StringIO(), io.StringIO()
    svg = tmp_path / "score.svg"
    assert score_cli.run_score(env, json_output=True, days=90, svg=str(svg), out=out, err=err) == 0
    data = json.loads(out.getvalue())
    assert set(data) >= {"days", "latest", "regressions"}
    assert len(data["days"]) == 90 and data["latest"]["date"] == "2026-07-17"
    assert [r["date"] for r in data["regressions"]] == ["2026-06-29"]
    root = ET.parse(svg).getroot()
    points = [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if "day" in (c.get("class") or "").split()]
    assert len(points) == 90
    assert "chart written to" in err.getvalue()

    out = io.StringIO()
    assert score_cli.run_score(env, days=7, out=out, err=io.StringIO()) == 0
    text = out.getvalue()
    assert text.startswith("Secure Score: 7 day(s) shown of 90 stored")
    assert "2026-07-17" in text and "2026-07-10" not in text and "trend  " in text
