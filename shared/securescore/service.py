"""Secure Score snapshot, trend and summary: the use cases the timer, the HTTP routes, the CLI,
the demo and the close step call.

``snapshot()`` reads ``GET /security/secureScores?$top=N`` (permission SecurityEvents.Read.All):
- nothing stored yet -> backfill: ``$top=90``, everything Graph keeps;
- else ``$top`` = days since the newest stored day + 1 (at most 90), so a timer that missed
  days fills the gap; a rerun on the same day fetches one object and stores nothing.
Each day not yet stored is compared with the stored (or fetched) day before it; a regression
becomes a finding row, written *before* the day row so a crash in between is healed by the
rerun (the day is still new then, the finding insert is idempotent). Mails go out after the
rows are written, to ``SOC_MAILBOX`` when ``SECURE_SCORE_NOTIFY`` is on; each run also re-sends
mails of recent findings that are still pending (a crash or a transient failure before the
send), so a mail is sent at least once and, in the normal path, exactly once.

Retries: the Graph adapter already retries 429s (honouring Retry-After) and 5xx on reads
in-process; a TransientError that still comes out is retried here a few times (waiting its
Retry-After, capped at 30 s) because a timer trigger has no platform retry. If it still fails the error propagates: the
invocation is marked failed and the next run fills the gap.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from azure.core.exceptions import AzureError

from ..errors import PermanentError, TransientError
from ..ports import GraphPort, ScoreStorePort
from .config import MAX_DAYS, ScoreSettings
from .model import DayRecord, Finding, control_changes, detect_regressions, finding_text, parse_page

logger = logging.getLogger(__name__)

PATH = "/security/secureScores"
PERMISSION = "SecurityEvents.Read.All"
FETCH_ATTEMPTS = 3
MAX_RETRY_WAIT_S = 30.0
RESEND_WINDOW_DAYS = 7

Sleep = Callable[[float], Awaitable[Any]]


def _today() -> date:
    return datetime.now(timezone.utc).date()


@dataclass
class SnapshotResult:
    backfill: bool
    top: int
    fetched: int = 0
    stored: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    mailed: int = 0
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "backfill": self.backfill,
            "top": self.top,
            "fetched": self.fetched,
            "stored": list(self.stored),
            "already_stored": len(self.already_stored),
            "unparsed": list(self.unparsed),
            "findings": [f.to_dict() for f in self.findings],
            "mailed": self.mailed,
            "attempts": self.attempts,
        }


def plan_top(latest: str | None, today: date) -> int:
    """How many daily objects to ask Graph for: all it keeps on the first run, else enough
    to cover every day since the newest stored one (that day included), capped at 90."""
    if latest is None:
        return MAX_DAYS
    gap = (today - date.fromisoformat(latest)).days
    return max(1, min(MAX_DAYS, gap + 1))


async def fetch_scores(
    graph: GraphPort, top: int, *, attempts: int = FETCH_ATTEMPTS, sleep: Sleep = asyncio.sleep
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``top`` secureScore objects (following nextLink) and the attempts it took."""
    for attempt in range(1, attempts + 1):
        try:
            items = await graph.list_all(PATH, permission=PERMISSION, query={"$top": str(top)}, max_items=top)
            return list(items or []), attempt
        except TransientError as exc:
            if attempt >= attempts:
                logger.warning("Secure Score fetch failed after %d attempts: %s", attempt, exc)
                raise
            wait = exc.retry_after if exc.retry_after is not None else 2.0 * attempt
            wait = min(max(wait, 0.0), MAX_RETRY_WAIT_S)
            logger.warning("Secure Score fetch attempt %d failed (%s); retrying in %.1fs", attempt, exc, wait)
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def snapshot(
    graph: GraphPort,
    store: ScoreStorePort,
    settings: ScoreSettings,
    *,
    today: date | None = None,
    sleep: Sleep = asyncio.sleep,
    attempts: int = FETCH_ATTEMPTS,
) -> SnapshotResult:
    """Fetch what is missing, store one row per new day, record and mail regressions."""
    today = today or _today()
    stored_dates = await store.stored_dates()
    latest = stored_dates[-1] if stored_dates else None
    result = SnapshotResult(backfill=latest is None, top=plan_top(latest, today))
    items, result.attempts = await fetch_scores(graph, result.top, attempts=attempts, sleep=sleep)
    days, result.unparsed = parse_page(items)
    result.fetched = len(days)
    for reason in result.unparsed:
        logger.warning("Secure Score object skipped: %s", reason)

    known = set(stored_dates)
    fetched = {d.date: d for d in days}
    notify_state = "pending" if settings.mail_enabled and not result.backfill else "skipped"
    for day in days:
        if day.date in known:
            result.already_stored.append(day.date)
            continue
        previous = await _previous(store, known, fetched, day.date)
        finding = detect_regressions(previous, day, settings.min_drop_points)
        if finding is not None:
            await store.put_finding(finding, notify_state=notify_state)
            result.findings.append(finding)
            logger.warning(
                "Secure Score regression on %s: %+g points, %d control(s) fell",
                finding.date, finding.delta, len(finding.controls),
            )
        if await store.put_day(day):
            result.stored.append(day.date)
        else:
            result.already_stored.append(day.date)  # another run stored it meanwhile
        known.add(day.date)

    if settings.mail_enabled:
        # this run's findings (a gap fill can reach back weeks) and any recent unsent ones
        since = min([(today - timedelta(days=RESEND_WINDOW_DAYS)).isoformat()] + [f.date for f in result.findings])
        result.mailed = await send_pending(graph, store, settings, since=since)
    logger.info(
        "Secure Score snapshot: top=%d fetched=%d stored=%d already=%d findings=%d mailed=%d",
        result.top, result.fetched, len(result.stored), len(result.already_stored), len(result.findings), result.mailed,
    )
    return result


async def _previous(store: ScoreStorePort, known: set[str], fetched: dict[str, DayRecord], day: str) -> DayRecord | None:
    earlier = [d for d in known if d < day]
    if not earlier:
        return None
    previous = max(earlier)
    return fetched.get(previous) or await store.get_day(previous)


async def send_pending(graph: GraphPort, store: ScoreStorePort, settings: ScoreSettings, since: str) -> int:
    """Mail every finding since ``since`` whose mail is pending (or failed transiently, or
    was claimed by a sender that never finished). Returns how many were mailed."""
    sent = 0
    for finding in await store.list_findings(since):
        if not await store.claim_notification(finding):
            continue
        subject = f"[Breach Responder] Secure Score fell {-finding.delta:g} points on {finding.date}"
        if finding.delta >= 0:
            subject = f"[Breach Responder] Secure Score: {len(finding.controls)} control(s) regressed on {finding.date}"
        try:
            await graph.send_mail(settings.notify_sender, settings.soc_mailbox, subject, finding_text(finding))
        except TransientError as exc:
            logger.warning("Secure Score mail for %s not sent (will retry next run): %s", finding.date, exc)
            await store.set_notify_state(finding, "failed", str(exc))
            continue
        except PermanentError as exc:
            logger.error("Secure Score mail for %s not sent: %s", finding.date, exc)
            await store.set_notify_state(finding, "error", str(exc))
            continue
        await store.set_notify_state(finding, "sent", settings.soc_mailbox)
        sent += 1
    return sent


# -- reading ----------------------------------------------------------------------------------


async def trend(store: ScoreStorePort, days: int = 30) -> dict[str, Any]:
    """The last ``days`` stored days (oldest first) with day-over-day deltas, the latest day
    with its control changes since the day before, and the regressions in that window."""
    days = max(1, int(days))
    dates = await store.stored_dates()
    window = dates[-days:]
    if not window:
        return {"days": [], "latest": None, "regressions": [], "stored_days": 0}
    records = await store.list_days(since=window[0])
    findings = await store.list_findings(since=window[0])
    regressed = {f.date: f for f in findings}
    before = await store.get_day(dates[-days - 1]) if len(dates) > days else None
    rows = []
    previous = before
    for record in records:
        row = record.summary()
        row["delta"] = round(record.current - previous.current, 2) if previous else None
        row["regression"] = record.date in regressed
        rows.append(row)
        previous = record
    last = records[-1]
    prior = records[-2] if len(records) > 1 else before
    latest = last.summary()
    latest["compared_with"] = prior.date if prior else None
    latest["changes"] = [c.to_dict() for c in control_changes(prior, last)] if prior else []
    return {
        "days": rows,
        "latest": latest,
        "regressions": [f.to_dict() for f in findings],
        "stored_days": len(dates),
    }


async def summary(store: ScoreStorePort) -> dict[str, Any] | None:
    """``{"current", "max", "percentage", "date", "days"}`` of the newest stored day (days =
    how many days are stored), or None when nothing is stored."""
    dates = await store.stored_dates()
    if not dates:
        return None
    day = await store.get_day(dates[-1])
    if day is None:
        return None
    return {"current": day.current, "max": day.max, "percentage": day.percentage, "date": day.date, "days": len(dates)}


LATEST_TTL_S = 300.0  # the score is stored once a day: every close of a storm need not read it again
_latest: "weakref.WeakKeyDictionary[Any, tuple[float, dict[str, Any]]]" = weakref.WeakKeyDictionary()


async def latest_score(store: ScoreStorePort | None, clock: Callable[[], float] = time.monotonic) -> dict[str, Any] | None:
    """Best effort, for recording beside an incident: the newest stored day's score, or None
    when no score store is wired, nothing is stored or storage cannot be read (never raises
    a storage error). Kept per store for LATEST_TTL_S."""
    if store is None:
        return None
    hit = _latest.get(store)
    if hit is not None and hit[0] > clock():
        return hit[1]
    try:
        found = await summary(store)
    except AzureError as exc:
        logger.warning("Secure Score not recorded: storage read failed (%s)", exc.__class__.__name__)
        return None
    value = None if found is None else {"date": found["date"], "current": found["current"], "max": found["max"],
                                        "percentage": found["percentage"]}
    if value is not None:
        _latest[store] = (clock() + LATEST_TTL_S, value)
    return value
