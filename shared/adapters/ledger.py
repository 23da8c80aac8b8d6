"""Table storage: incidents, the per-step ledger, the per-user open-incident index, errors.

Tables (all created at start-up):
- ``incidents``     PartitionKey = incident id, RowKey = "incident"
- ``steps``         PartitionKey = incident id, RowKey = step name (the ledger)
- ``userincidents`` PartitionKey = user key (object id or UPN), RowKey = "open"
- ``stormwindow``   PartitionKey = "storm", RowKey = "breaker": the storm breaker (shared/storm.py)
- ``errors``        PartitionKey = where (queue / entry point), RowKey = time + uuid
- ``evidence``      PartitionKey = incident id, RowKey = snapshot section, or "bundle:<digest>" for
                    several sections in one row (d0, d1, … named by its ``sections`` list)
- ``defenderpending`` PartitionKey = AlertId (escaped or hashed), RowKey = kind + digest
- ``watermarks``    PartitionKey = "poll", RowKey = feed: the polling reconciler's watermark
- ``redrives``      PartitionKey = source queue, RowKey = body digest: poison redrive counts

The ledger row is claimed with an ETag-conditional write before any side effect, so two
deliveries of one message never act at once, and a finished step is never run again; the
decision itself is shared/ledger_protocol.py (the in-memory fake uses the same one).
Point reads and writes (get, create, update, upsert: four per step) go over the Table REST API
(shared/adapters/tablerest.py) when bootstrap passes the account's endpoint; queries, listings and
table creation use the SDK. Nothing here stores a password or a token; ``detail`` and ``checkpoint`` are JSON written
by steps, which never put secrets in them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import uuid
from datetime import datetime
from typing import Any, Callable
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from ..errors import ConflictError, TransientError
from ..ledger_protocol import (
    MAX_ERROR_CHARS,
    Claim,
    ClaimStatus,
    checkpoint_fields,
    decide_claim,
    dump_json,
    finish_fields,
    load_json,
    release_fields,
)
from ..storm import Reservation, StormState, decide_reservation, reset_state
from ..timestamps import iso, utcnow
from .tablerest import RestTable, TableEndpoint

logger = logging.getLogger(__name__)

TABLES = ("incidents", "steps", "userincidents", "stormwindow", "errors", "evidence", "defenderpending", "watermarks", "redrives")
STORM_ROUNDS = 200  # conditional-write rounds before a reservation gives up (TransientError: retried)
STORM_GROUP = 500  # reservations decided and written together at most (the row's reservations fit one property)
_MAX_KEY_CHARS = 512  # a PartitionKey/RowKey is at most 1 KiB
CLAIM_ROUNDS = 5


# An evidence bundle's RowKey: ":" is never in key()'s output, so no single section's row can take it.
BUNDLE_PREFIX = "bundle:"
BUNDLE_BYTES = 900_000  # an entity holds 1 MiB; a string property counts 2 bytes a character
BUNDLE_SECTIONS = 200  # an entity holds 252 properties besides PartitionKey, RowKey and Timestamp


def _bundles(texts: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Sections grouped, in order, into bundles that fit one entity."""
    bundles: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    size = 0
    for section, text in texts:
        cost = 2 * len(text) + 2 * len(section) + 64
        if current and (size + cost > BUNDLE_BYTES or len(current) >= BUNDLE_SECTIONS):
            bundles.append(current)
            current, size = [], 0
        current.append((section, text))
        size += cost
    if current:
        bundles.append(current)
    return bundles


def key(value: str) -> str:
    """A safe PartitionKey/RowKey: table keys may not contain / \\ # ? or control characters."""
    return quote(value, safe="@.-_+'!~*()")


def pending_key(alert_id: str) -> str:
    """The PartitionKey for a Defender AlertId: escaped, or hashed when escaping would pass the key limit."""
    escaped = key(alert_id)
    if len(escaped) <= _MAX_KEY_CHARS:
        return escaped
    return "sha256-" + hashlib.sha256(alert_id.encode("utf-8", "surrogatepass")).hexdigest()


def _is_conflict(exc: HttpResponseError) -> bool:
    return isinstance(exc, (ResourceModifiedError, ResourceExistsError)) or getattr(exc, "status_code", 0) in (409, 412)


@dataclasses.dataclass(frozen=True)
class _StormAsk:
    at: datetime
    window_minutes: int
    threshold: int
    source: str
    source_quota: int


class Ledger:
    """The app's tables over one aio TableServiceClient; ``clock`` is the worker's clock (Deps.clock)."""

    def __init__(self, tables: TableServiceClient, clock: Callable[[], datetime] = utcnow,
                 rest: TableEndpoint | None = None) -> None:
        """``rest``: the account's REST endpoint for the point operations (shared/adapters/tablerest.py;
        the owner closes it); without it every operation goes through the SDK."""
        self._service = tables
        self._clock = clock
        self.t: dict[str, Any] = {name: tables.get_table_client(name) for name in TABLES}
        if rest is not None:
            self.t = {name: RestTable(rest, client) for name, client in self.t.items()}
        # Reservations asked while one is being written wait here and go together (one read, one
        # conditional write for the lot): a storm's intakes no longer race each other for the row.
        self._storm_waiting: list[tuple[_StormAsk, asyncio.Future[Reservation]]] = []
        self._storm_task: asyncio.Task[None] | None = None

    async def ensure(self) -> None:
        async def create(name: str) -> None:
            try:
                await self._service.create_table(name)
            except ResourceExistsError:
                pass

        await asyncio.gather(*(create(name) for name in TABLES))

    # -- incidents -----------------------------------------------------------------------

    async def create_incident(self, incident: dict[str, Any]) -> None:
        entity = {"PartitionKey": incident["incident_id"], "RowKey": "incident", **incident}
        await self.t["incidents"].create_entity(entity)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        try:
            entity = await self.t["incidents"].get_entity(key(incident_id), "incident")
        except ResourceNotFoundError:
            return None
        row = dict(entity)
        row["_etag"] = entity.metadata.get("etag")
        return row

    async def update_incident(self, incident_id: str, fields: dict[str, Any], etag: str | None = None) -> None:
        entity = {"PartitionKey": key(incident_id), "RowKey": "incident", **fields, "updated_at": iso(self._clock())}
        if etag:
            try:
                await self.t["incidents"].update_entity(
                    entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except HttpResponseError as exc:
                if _is_conflict(exc):
                    raise ConflictError(f"incident {incident_id} changed since it was read") from None
                raise
        else:
            await self.t["incidents"].update_entity(entity, mode=UpdateMode.MERGE)

    async def list_incidents(self, limit: int = 1000, state: str | None = None) -> list[dict[str, Any]]:
        rows = []
        table = self.t["incidents"]
        entities = (table.query_entities("state eq @state", parameters={"state": str(state)}, results_per_page=min(limit, 1000))
                    if state is not None else table.list_entities(results_per_page=min(limit, 1000)))
        async for entity in entities:
            rows.append(dict(entity))
            if len(rows) >= limit:
                break
        rows.sort(key=lambda r: r.get("created_at", ""))
        return rows

    # -- per-user open incident index ----------------------------------------------------

    async def get_open(self, user_key: str) -> tuple[dict[str, Any], str] | None:
        try:
            entity = await self.t["userincidents"].get_entity(key(user_key), "open")
        except ResourceNotFoundError:
            return None
        return dict(entity), str(entity.metadata["etag"])

    async def claim_open(self, user_key: str, incident_id: str, created_at: str, replace_etag: str | None) -> bool:
        """Point the user's index at a new incident; False if another writer won the race."""
        entity = {"PartitionKey": key(user_key), "RowKey": "open", "incident_id": incident_id, "created_at": created_at}
        try:
            if replace_etag is None:
                await self.t["userincidents"].create_entity(entity)
            else:
                await self.t["userincidents"].update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=replace_etag, match_condition=MatchConditions.IfNotModified
                )
        except HttpResponseError as exc:
            if _is_conflict(exc):
                return False
            raise
        return True

    # -- storm breaker -------------------------------------------------------------------
    # One row (stormwindow / storm / breaker) holds the window's reservations and the latch;
    # every change is ETag-conditional, so two intakes never take the same last slot
    # (shared/storm.py decides what the row becomes).

    async def _storm_row(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            entity = await self.t["stormwindow"].get_entity("storm", "breaker")
        except ResourceNotFoundError:
            return None, None
        return dict(entity), str(entity.metadata["etag"])

    async def _write_storm(self, state: StormState, etag: str | None) -> bool:
        entity = {"PartitionKey": "storm", "RowKey": "breaker", **state.to_row()}
        try:
            if etag is None:
                await self.t["stormwindow"].create_entity(entity)
            else:
                await self.t["stormwindow"].update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                          match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if _is_conflict(exc):
                return False
            raise
        return True

    async def reserve_incident(self, at: datetime, *, window_minutes: int, threshold: int, source: str,
                               source_quota: int) -> Reservation:
        """One slot, decided exactly as if this worker's concurrent reservations ran one after another
        (the rule in shared/storm.py, in order of asking), written with theirs in one conditional write."""
        future: asyncio.Future[Reservation] = asyncio.get_running_loop().create_future()
        self._storm_waiting.append((_StormAsk(at, window_minutes, threshold, source, source_quota), future))
        if self._storm_task is None or self._storm_task.done():
            self._storm_task = asyncio.create_task(self._reserve_waiting())
        return await future

    async def _reserve_waiting(self) -> None:
        while self._storm_waiting:
            group, self._storm_waiting = self._storm_waiting[:STORM_GROUP], self._storm_waiting[STORM_GROUP:]
            try:
                decisions = await self._reserve_group([ask for ask, _ in group])
            except Exception as exc:  # every intake of the group gets the error (TransientError: retried)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), decision in zip(group, decisions):
                if not future.done():
                    future.set_result(decision)

    async def _reserve_group(self, asks: list["_StormAsk"]) -> list[Reservation]:
        for attempt in range(STORM_ROUNDS):
            row, etag = await self._storm_row()
            state, changed, decisions = StormState.from_row(row), False, []
            for ask in asks:
                decision = decide_reservation(state, ask.at, window_minutes=ask.window_minutes, threshold=ask.threshold,
                                              source=ask.source, source_quota=ask.source_quota)
                if decision.state is not None:
                    state, changed = decision.state, True
                decisions.append(decision)
            if not changed or await self._write_storm(state, etag):
                return decisions
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * (attempt + 1))))  # another worker won: read again
        raise TransientError("storm breaker row is too contended; the intake will be retried")

    async def storm_state(self) -> StormState:
        row, _ = await self._storm_row()
        return StormState.from_row(row)

    async def reset_storm(self, by: dict[str, str], at: datetime) -> StormState:
        for _ in range(STORM_ROUNDS):
            row, etag = await self._storm_row()
            state = reset_state(StormState.from_row(row), by, at)
            if await self._write_storm(state, etag):
                return state
        raise TransientError("storm breaker row is too contended; try the reset again")

    # -- step ledger ---------------------------------------------------------------------

    async def get_step(self, incident_id: str, step: str) -> dict[str, Any] | None:
        try:
            entity = await self.t["steps"].get_entity(key(incident_id), step)
        except ResourceNotFoundError:
            return None
        row = dict(entity)
        row["_etag"] = entity.metadata.get("etag")
        return row

    async def list_steps(self, incident_id: str) -> list[dict[str, Any]]:
        rows = []
        async for entity in self.t["steps"].query_entities("PartitionKey eq @pk", parameters={"pk": key(incident_id)}):
            rows.append(dict(entity))
        return rows

    async def put_step(self, incident_id: str, step: str, fields: dict[str, Any]) -> None:
        """Write a step row outright (used for rows no worker claims: skipped, held, not run)."""
        entity = {"PartitionKey": key(incident_id), "RowKey": step, **fields}
        await self.t["steps"].upsert_entity(entity, mode=UpdateMode.MERGE)

    async def claim_step(self, incident_id: str, step: str, lease_s: int, correlation_id: str) -> Claim:
        """Claim the row (see shared/ledger_protocol.py); every write is ETag-conditional."""
        table = self.t["steps"]
        for round_ in range(CLAIM_ROUNDS):
            # First delivery is the common case: try to create the row straight away (one
            # round trip); only when it exists is it read to decide.
            row = None if round_ == 0 else await self.get_step(incident_id, step)
            decision = decide_claim(row, self._clock(), lease_s, correlation_id)
            if decision.status is not ClaimStatus.CLAIMED:
                assert row is not None
                return Claim(decision.status, row, row.get("_etag"), retry_in=decision.retry_in, checkpoint=decision.checkpoint)
            entity = {"PartitionKey": key(incident_id), "RowKey": step, **decision.fields}
            try:
                if decision.create:
                    meta = await table.create_entity(entity)
                else:
                    assert row is not None
                    meta = await table.update_entity(
                        entity, mode=UpdateMode.MERGE, etag=row["_etag"], match_condition=MatchConditions.IfNotModified
                    )
            except HttpResponseError as exc:
                if _is_conflict(exc):
                    continue  # another worker wrote the row in between: read it and decide again
                raise
            merged = entity if row is None else {**row, **entity}
            return Claim(ClaimStatus.CLAIMED, merged, meta.get("etag"), checkpoint=decision.checkpoint)
        raise TransientError(f"could not claim ledger row {incident_id}/{step}: repeated write conflicts")

    async def _conditional(self, incident_id: str, step: str, claim: Claim, fields: dict[str, Any]) -> None:
        entity = {"PartitionKey": key(incident_id), "RowKey": step, **fields}
        try:
            meta = await self.t["steps"].update_entity(
                entity, mode=UpdateMode.MERGE, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )
        except HttpResponseError as exc:
            if _is_conflict(exc):
                raise ConflictError(f"lost the lease on {incident_id}/{step}: another worker took it over") from None
            raise
        claim.etag = meta.get("etag")
        claim.row.update(fields)

    async def checkpoint(self, incident_id: str, step: str, claim: Claim, updates: dict[str, Any]) -> None:
        """Persist progress inside a claimed step (before/after each side effect)."""
        claim.checkpoint.update(updates)
        await self._conditional(incident_id, step, claim, checkpoint_fields(claim.checkpoint))

    async def release(self, incident_id: str, step: str, claim: Claim, error: str) -> None:
        """Give the step back after a transient failure so the retry can claim it at once."""
        await self._conditional(incident_id, step, claim, release_fields(self._clock(), error))

    async def finish(
        self, incident_id: str, step: str, claim: Claim, state: str, detail: Any, error: str = "", duration_ms: int = 0
    ) -> None:
        await self._conditional(incident_id, step, claim, finish_fields(self._clock(), state, detail, error, duration_ms))

    # -- evidence (the "before" snapshot) ------------------------------------------------

    async def put_evidence(self, incident_id: str, section: str, data: Any) -> int:
        """Store one snapshot section (size-bounded); returns the stored size in characters."""
        text = dump_json(data)
        await self.t["evidence"].upsert_entity(
            {"PartitionKey": key(incident_id), "RowKey": key(section), "data": text, "recorded_at": iso(self._clock())},
            mode=UpdateMode.REPLACE,
        )
        return len(text)

    async def get_evidence(self, incident_id: str, section: str) -> Any | None:
        """One section written on its own (put_evidence), or None: one point read."""
        try:
            entity = await self.t["evidence"].get_entity(key(incident_id), key(section))
        except ResourceNotFoundError:
            return None
        return load_json(entity.get("data"), None)

    async def put_evidence_many(self, incident_id: str, sections: dict[str, Any]) -> dict[str, int]:
        """Store several snapshot sections in one row (a bundle: one request); returns each stored size in
        characters. A table transaction of one row per section cost ~6x the CPU (the SDK builds and parses
        its multipart MIME body with the email package: docs/benchmarks.md). Sections that would pass an
        entity's 1 MiB or its property count go in further bundles."""
        if not sections:
            return {}
        now = iso(self._clock())
        texts = {section: dump_json(data) for section, data in sections.items()}
        for bundle in _bundles(list(texts.items())):
            names = [section for section, _ in bundle]
            row_key = BUNDLE_PREFIX + hashlib.sha256("\n".join(names).encode("utf-8", "surrogatepass")).hexdigest()[:32]
            entity: dict[str, Any] = {"PartitionKey": key(incident_id), "RowKey": row_key, "recorded_at": now,
                                      "sections": dump_json(names)}
            entity.update({f"d{i}": text for i, (_, text) in enumerate(bundle)})
            await self.t["evidence"].upsert_entity(entity, mode=UpdateMode.REPLACE)
        return {section: len(text) for section, text in texts.items()}

    async def list_evidence(self, incident_id: str) -> dict[str, Any]:
        """Every section of the incident's evidence; a section stored more than once (a single row and a
        bundle) is the one recorded last."""
        sections: dict[str, Any] = {}
        recorded: dict[str, str] = {}
        async for entity in self.t["evidence"].query_entities("PartitionKey eq @pk", parameters={"pk": key(incident_id)}):
            row_key, at = str(entity["RowKey"]), str(entity.get("recorded_at") or "")
            if row_key.startswith(BUNDLE_PREFIX):
                names = load_json(entity.get("sections"), []) or []
                pairs = [(str(name), entity.get(f"d{i}")) for i, name in enumerate(names)]
            else:
                pairs = [(row_key, entity.get("data"))]
            for name, text in pairs:
                if name not in recorded or at >= recorded[name]:
                    sections[name], recorded[name] = load_json(text, None), at
        return sections

    # -- errors --------------------------------------------------------------------------

    async def record_error(self, where: str, reason: str, *, message_id: str = "", excerpt: str = "", **extra: Any) -> str:
        now = self._clock()
        row_key = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        entity = {
            "PartitionKey": key(where),
            "RowKey": row_key,
            "reason": reason[:MAX_ERROR_CHARS],
            "message_id": message_id,
            "excerpt": excerpt[:500],
            "recorded_at": iso(now),
            **{k: (v if isinstance(v, (str, int, float, bool)) else dump_json(v)) for k, v in extra.items()},
        }
        await self.t["errors"].create_entity(entity)
        return row_key

    async def list_errors(self, where: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        rows = []
        query = self.t["errors"].query_entities("PartitionKey eq @pk", parameters={"pk": key(where)}) if where else self.t["errors"].list_entities()
        async for entity in query:
            rows.append(dict(entity))
            if len(rows) >= limit:
                break
        return rows

    # -- Defender halves (defenderpending) -------------------------------------------------

    async def add_pending_half(self, alert_id: str, row: str, kind: str, record: str) -> None:
        await self.t["defenderpending"].upsert_entity(
            {"PartitionKey": pending_key(alert_id), "RowKey": key(row), "kind": kind, "record": record}
        )

    async def pending_halves(self, alert_id: str) -> tuple[list[str], list[str]]:
        infos: list[str] = []
        evidence: list[str] = []
        try:
            async for entity in self.t["defenderpending"].query_entities(
                "PartitionKey eq @pk", parameters={"pk": pending_key(alert_id)}
            ):
                (infos if entity.get("kind") == "info" else evidence).append(entity.get("record") or "")
        except ResourceNotFoundError:
            pass
        return infos, evidence

    # -- polling watermarks (watermarks) ---------------------------------------------------

    async def get_watermark(self, feed: str) -> str | None:
        try:
            entity = await self.t["watermarks"].get_entity("poll", key(feed))
        except ResourceNotFoundError:
            return None
        since = entity.get("since")
        return str(since) if since else None

    async def set_watermark(self, feed: str, since: str) -> None:
        await self.t["watermarks"].upsert_entity({"PartitionKey": "poll", "RowKey": key(feed), "since": since})

    # -- poison redrive counters (redrives) ------------------------------------------------

    async def get_redrive(self, queue: str, digest: str) -> dict[str, Any]:
        try:
            entity = await self.t["redrives"].get_entity(key(queue), key(digest))
        except ResourceNotFoundError:
            return {}
        return {"count": int(entity.get("count", 0) or 0), "gave_up": bool(entity.get("gave_up"))}

    async def put_redrive(self, queue: str, digest: str, count: int, gave_up: bool = False) -> None:
        entity: dict[str, Any] = {"PartitionKey": key(queue), "RowKey": key(digest), "count": count}
        if gave_up:
            entity["gave_up"] = True
        await self.t["redrives"].upsert_entity(entity)
