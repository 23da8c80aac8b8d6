"""The polling reconciler: catches what a stream missed.

Reads Graph ``identityProtection/riskyUsers`` (atRisk / confirmedCompromised, updated
since the watermark) and ``security/alerts_v2`` (updated since the watermark), page by
page through ``@odata.nextLink``, and feeds every page to the same ingestion path as the
streams. alerts_v2 lists the newest alerts first, so the first page already holds the newest
time: the watermark (table ``watermarks``) moves only after the whole window was read, to the
newest time seen in it. A failed page leaves it where it was: the next run re-reads the window
and dedupe makes the re-read harmless. One feed failing does not stop the other (its summary
says ``error``). Graph change notifications do not cover these resources, hence polling.

A window larger than one run may read (``MAX_PAGES``) is halved, whatever order the service
lists it in: the run records a closed window ``(since, until]`` half as wide (row
``<feed>:until``), the next run reads only that, and the watermark moves to ``until`` once it was
read whole; the window then reopens up to now. A window of one second is always read to its
end (the filter has whole-second precision, so it cannot be split further). A storm larger than
a run therefore costs a few extra runs, never a skipped alert, and never a watermark stuck on
a window no run can finish.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from .deps import Deps
from .errors import PermanentError, TransientError
from .ingest import ingest_payload
from .ports import LedgerPort
from .timestamps import iso_seconds, parse_timestamp

logger = logging.getLogger(__name__)

FEEDS = {
    "riskyUsers": {
        "path": "/identityProtection/riskyUsers",
        "field": "riskLastUpdatedDateTime",
        "extra": "(riskState eq 'atRisk' or riskState eq 'confirmedCompromised')",
        "permission": "IdentityRiskyUser.Read.All",
        "source": "graph-riskyusers",
    },
    "alerts_v2": {
        "path": "/security/alerts_v2",
        "field": "lastUpdateDateTime",
        "extra": "",
        "permission": "SecurityAlert.Read.All",
        "source": "graph-alerts",
    },
}
FIRST_LOOKBACK = timedelta(days=1)
MAX_PAGES = 50
MIN_WINDOW = timedelta(seconds=1)  # the $filter literal has whole-second precision


def _odata_datetime(dt: datetime) -> str:
    """An OData DateTimeOffset literal from a datetime we produced (never from raw input)."""
    return iso_seconds(dt)


def build_filter(feed: dict[str, str], since: datetime, until: datetime | None = None) -> str:
    clause = f"{feed['field']} gt {_odata_datetime(since)}"
    if until is not None:
        clause += f" and {feed['field']} le {_odata_datetime(until)}"
    return f"{feed['extra']} and {clause}" if feed["extra"] else clause


def halve(since: datetime, until: datetime) -> datetime:
    """The upper end of a window half as wide as (since, until], in whole seconds, at least MIN_WINDOW."""
    half = max(MIN_WINDOW, timedelta(seconds=int((until - since).total_seconds()) // 2))
    return since.replace(microsecond=0) + half


def newest(items: list[dict[str, Any]], field: str, current: datetime) -> datetime:
    best = current
    for item in items:
        try:
            seen = parse_timestamp(item.get(field) or "")
        except ValueError:
            continue
        best = max(best, seen)
    return best


async def _get_watermark(ledger: LedgerPort, name: str, now: datetime) -> datetime:
    since = await ledger.get_watermark(name)
    try:
        return parse_timestamp(since)
    except ValueError:  # none yet (or unreadable): start a day back
        return now - FIRST_LOOKBACK


async def _get_window_end(ledger: LedgerPort, name: str, since: datetime) -> datetime | None:
    """The end of a closed window an earlier run chose (None: the window is open up to now)."""
    try:
        until = parse_timestamp(await ledger.get_watermark(f"{name}:until"))
    except ValueError:
        return None
    return until if until > since else None


async def poll_once(deps: Deps) -> dict[str, Any]:
    graph = deps.require_graph()
    now = deps.clock()
    summary: dict[str, Any] = {}
    for name, feed in FEEDS.items():
        since = await _get_watermark(deps.ledger, name, now)
        until = await _get_window_end(deps.ledger, name, since)
        # A one-second window cannot be split: it is read to its end, whatever its size.
        page_limit = None if until is not None and until - since <= MIN_WINDOW else MAX_PAGES
        pages = created = 0
        mark = since
        complete = False
        try:
            query = {"$filter": build_filter(feed, since, until)}
            page = await graph.request("GET", feed["path"], query=query, permission=feed["permission"])
            while page is not None and (page_limit is None or pages < page_limit):
                pages += 1
                items = page.get("value", []) if isinstance(page, dict) else []
                if items:
                    report = await ingest_payload(deps, json.dumps({"value": items}), source=feed["source"],
                                                  where=f"poll-{name}")
                    created += sum(1 for o in report.outcomes if o.outcome in ("created", "held"))
                mark = newest(items, feed["field"], mark)
                link = page.get("@odata.nextLink") if isinstance(page, dict) else None
                page = await graph.follow(link, feed["permission"]) if link else None
            complete = page is None
        except (PermanentError, TransientError) as exc:
            summary[name] = {"pages": pages, "new_incidents": created, "watermark": _odata_datetime(since),
                             "error": str(exc)[:300]}
            logger.warning("[incident=- step=poll corr=-] %s: window not fully read (%s); watermark kept at %s",
                           name, exc, _odata_datetime(since))
            continue
        window: str | None = None
        if complete:
            # A closed window was read whole up to its end; an open one up to the newest time seen.
            mark = max(mark, until) if until is not None else mark
            await deps.ledger.set_watermark(name, _odata_datetime(mark))
            if until is not None:
                await deps.ledger.set_watermark(f"{name}:until", "")
        else:
            narrower = halve(since, until if until is not None else max(mark, now))
            window = _odata_datetime(narrower)
            await deps.ledger.set_watermark(f"{name}:until", window)
            logger.warning("[incident=- step=poll corr=-] %s: more than %d pages; watermark kept at %s, the next run "
                           "reads the window up to %s", name, MAX_PAGES, _odata_datetime(since), window)
            mark = since
        summary[name] = {"pages": pages, "new_incidents": created, "watermark": _odata_datetime(mark)}
        if window is not None:
            summary[name]["next_window_until"] = window
        logger.info("[incident=- step=poll corr=-] %s: %s", name, summary[name])
    return summary
