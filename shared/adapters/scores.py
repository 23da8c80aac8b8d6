"""Table storage for Secure Score snapshots and regression findings.

Tables (created by :meth:`ScoreStore.ensure`):
- ``securescores``        PartitionKey = "tenant" (one tenant per app), RowKey = yyyy-mm-dd.
  One row per day, written insert-if-absent: a rerun on the same day, or two runs racing,
  never duplicate or overwrite a day.
- ``securescorefindings`` PartitionKey = yyyy-mm-dd (the day that regressed),
  RowKey = ``after-<previous yyyy-mm-dd>``: one row per compared pair, insert-if-absent.
  ``notify_state`` makes the mail at-least-once and, in the normal path, exactly once: a
  sender claims the row with an ETag before mailing. States: pending -> sending -> sent;
  skipped (mail off, or found by the first run's backfill); failed (transient: retried by
  the next run); error (permanent, e.g. Mail.Send not granted: not retried).

Works on the azure-data-tables aio ``TableServiceClient`` the ledger uses. Reads treat a
missing table as empty (nothing has been stored yet).
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any, AsyncIterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from ..securescore.model import DayRecord, Finding
from ..timestamps import iso, utcnow
from .ledger import key

logger = logging.getLogger(__name__)

SCORES_TABLE = "securescores"
FINDINGS_TABLE = "securescorefindings"
TABLES = (SCORES_TABLE, FINDINGS_TABLE)
DEFAULT_PARTITION = "tenant"
NOTIFY_LEASE_S = 600
MAX_FINDING_CHARS = 28_000


def finding_row_key(finding: Finding) -> str:
    return f"after-{finding.previous_date}"


def finding_json(finding: Finding, limit: int = MAX_FINDING_CHARS) -> str:
    """The finding as JSON for one property; if too long, the smallest falls are left out
    (the biggest come first) and ``controls_omitted`` says how many."""
    data = finding.to_dict()
    text = json.dumps(data, separators=(",", ":"))
    controls = data["controls"]
    keep = len(controls)
    while len(text) > limit and keep > 0:
        keep = keep * 3 // 4
        data["controls"] = controls[:keep]
        data["controls_omitted"] = len(controls) - keep
        text = json.dumps(data, separators=(",", ":"))
    return text


class ScoreStore:
    """Secure Score days and findings over an aio TableServiceClient."""

    def __init__(
        self,
        tables: TableServiceClient,
        partition: str = DEFAULT_PARTITION,
        *,
        scores_table: str = SCORES_TABLE,
        findings_table: str = FINDINGS_TABLE,
    ) -> None:
        self._service = tables
        self.partition = key(partition)
        self.table_names = (scores_table, findings_table)
        self.scores = tables.get_table_client(scores_table)
        self.findings = tables.get_table_client(findings_table)

    async def ensure(self) -> None:
        for name in self.table_names:
            try:
                await self._service.create_table(name)
            except ResourceExistsError:
                pass

    # -- days ------------------------------------------------------------------------------

    async def put_day(self, day: DayRecord) -> bool:
        """Store a day once; False when that day is already stored (nothing is changed)."""
        entity = {"PartitionKey": self.partition, "RowKey": day.date, **day.to_entity(), "stored_at": iso(utcnow())}
        try:
            await self.scores.create_entity(entity)
        except ResourceExistsError:
            return False
        return True

    async def get_day(self, day: str) -> DayRecord | None:
        try:
            entity = await self.scores.get_entity(self.partition, day)
        except ResourceNotFoundError:
            return None
        return DayRecord.from_entity(entity)

    async def _query(self, table: Any, flt: str, params: dict[str, Any], select: list[str] | None = None) -> AsyncIterator[Any]:
        try:
            async for entity in table.query_entities(flt, parameters=params, select=select):
                yield entity
        except ResourceNotFoundError:
            return  # the table does not exist yet: nothing stored

    async def stored_dates(self) -> list[str]:
        """Every stored day, oldest first (RowKeys only: a few hundred short strings a year)."""
        dates = [
            e["RowKey"]
            async for e in self._query(self.scores, "PartitionKey eq @pk", {"pk": self.partition}, select=["RowKey"])
        ]
        return sorted(dates)

    async def latest_date(self) -> str | None:
        dates = await self.stored_dates()
        return dates[-1] if dates else None

    async def list_days(self, since: str | None = None, until: str | None = None) -> list[DayRecord]:
        """Stored days with since <= date <= until (yyyy-mm-dd, both optional), oldest first."""
        flt, params = "PartitionKey eq @pk", {"pk": self.partition}
        if since:
            flt += " and RowKey ge @since"
            params["since"] = since
        if until:
            flt += " and RowKey le @until"
            params["until"] = until
        days = [DayRecord.from_entity(e) async for e in self._query(self.scores, flt, params)]
        days.sort(key=lambda d: d.date)
        return days

    async def day_before(self, day: str) -> DayRecord | None:
        """The latest stored day strictly before ``day``."""
        dates = [d for d in await self.stored_dates() if d < day]
        return await self.get_day(dates[-1]) if dates else None

    # -- findings --------------------------------------------------------------------------

    async def put_finding(self, finding: Finding, notify_state: str = "pending") -> bool:
        """Record a finding once; False when it is already recorded."""
        entity = {
            "PartitionKey": finding.date,
            "RowKey": finding_row_key(finding),
            "previous_date": finding.previous_date,
            "delta": finding.delta,
            "controls_fell": len(finding.controls),
            "data": finding_json(finding),
            "notify_state": notify_state,
            "recorded_at": iso(utcnow()),
        }
        try:
            await self.findings.create_entity(entity)
        except ResourceExistsError:
            return False
        return True

    async def get_finding_row(self, finding: Finding) -> dict[str, Any] | None:
        try:
            entity = await self.findings.get_entity(finding.date, finding_row_key(finding))
        except ResourceNotFoundError:
            return None
        row = dict(entity)
        row["_etag"] = entity.metadata.get("etag")
        return row

    async def claim_notification(self, finding: Finding, lease_s: int = NOTIFY_LEASE_S) -> bool:
        """True for the one caller that may send this finding's mail now.

        A row that is ``pending`` or ``failed``, or ``sending`` with an expired lease (a sender
        that crashed mid-way), is claimed with an ETag-conditional write."""
        row = await self.get_finding_row(finding)
        if row is None:
            return False
        state = row.get("notify_state", "pending")
        now = utcnow()
        if state in ("sent", "skipped"):
            return False
        if state == "sending" and str(row.get("notify_claimed_at", "")) > iso(now - timedelta(seconds=lease_s)):
            return False
        update = {
            "PartitionKey": finding.date,
            "RowKey": finding_row_key(finding),
            "notify_state": "sending",
            "notify_claimed_at": iso(now),
        }
        try:
            await self.findings.update_entity(
                update, mode=UpdateMode.MERGE, etag=row["_etag"], match_condition=MatchConditions.IfNotModified
            )
        except HttpResponseError as exc:
            if getattr(exc, "status_code", 0) in (409, 412):
                return False
            raise
        return True

    async def set_notify_state(self, finding: Finding, state: str, note: str = "") -> None:
        await self.findings.update_entity(
            {
                "PartitionKey": finding.date,
                "RowKey": finding_row_key(finding),
                "notify_state": state,
                "notify_note": note[:500],
                "notify_updated_at": iso(utcnow()),
            },
            mode=UpdateMode.MERGE,
        )

    async def list_finding_rows(self, since: str | None = None) -> list[dict[str, Any]]:
        """Finding rows (oldest first) for days >= since."""
        flt, params = ("PartitionKey ge @since", {"since": since}) if since else ("PartitionKey ne @none", {"none": ""})
        rows = [dict(e) async for e in self._query(self.findings, flt, params)]
        rows.sort(key=lambda r: (r["PartitionKey"], r["RowKey"]))
        return rows

    async def list_findings(self, since: str | None = None) -> list[Finding]:
        out = []
        for row in await self.list_finding_rows(since):
            try:
                out.append(Finding.from_dict(json.loads(row.get("data") or "{}")))
            except (ValueError, KeyError, TypeError):
                logger.warning("Secure Score finding %s/%s is unreadable; skipped", row.get("PartitionKey"), row.get("RowKey"))
        return out
