"""Identity Protection and directory-audit calls, shared by every incident a worker runs.

Identity Protection allows 1 request per second per tenant for all apps together, answered 429
without Retry-After beyond it; directory audits 5 requests per 10 s per app
(learn.microsoft.com/graph/throttling-limits). Neither is on the containment path (the steps
call them after the password reset and the session revoke), and neither is called once per
incident in a storm (coalesce.py):

- ``confirm`` / ``dismiss``: confirmCompromised and dismiss take ``userIds``: the incidents that
  close together are confirmed (and dismissed) in one call, at most 60 ids (dismiss's documented
  maximum; confirmCompromised documents none) and one call per IDP_BATCH_SECONDS while the worker
  still has incidents on their way to close (their snapshot ran here, their close has not), at
  once when it has none; each dismiss batch is followed by one read of the users whose risk changed
  since that dismiss began, which answers ``risk_settled`` for every member of the batch;
- ``risk_before``: the user's risk as it was before the responder's first change, from one read
  of every user at risk (shared by the incidents of that moment) when the record shows no change
  since, else from the user's riskyUser history (Identity Protection's record of each change, which
  later changes do not alter);
- ``risk_now`` / ``risk_settled``: the state after the responder's own confirm / dismiss, from one
  read of the users whose risk changed in the last minutes;
- ``detections``: the user's risk detections, from one read of the tenant's detections of the last
  RISK_DETECTION_LOOKBACK_DAYS (records of past events: their times, types and addresses do not
  change afterwards; their riskState shows the remediation);
- ``user_audits``: the directory audit events the steps date footholds by (security-info changes,
  consents) about or by the user, from one read of the tenant's such events in the last 30 days
  (the log's retention), fresh as of the incident's containment (steps/audit_reads.py).

A lone incident gets the per-user read it always had: a bulk read is made only when several
incidents wait at once. The snapshot *starts* the two reads ``risk_before`` and ``detections`` need
(``prefetch_risk``) and does not wait for them: containment never waits on Identity Protection, and
the read, taken meanwhile, usually sees the risk before the change (else the history answers).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from .coalesce import SharedRead, Window, WriteBatcher
from .errors import PermanentError, TransientError
from .ports import GROUP_MEMBERS_PER_REQUEST, GraphPort
from .timestamps import iso_seconds, parse_timestamp, utcnow

logger = logging.getLogger(__name__)

MAX_IDS = 60  # riskyUsers/dismiss: "The maximum count of users to dismiss in one call is 60."
AUDIT_RETENTION = timedelta(days=30)
AUDIT_MAX = 500  # a lone incident's per-user read, as steps/audit_reads.py asks it
RECENT_RISK_CHANGES = timedelta(minutes=15)  # risk_now reads the users whose risk changed this recently
DISMISS_READ_MARGIN = timedelta(minutes=2)  # the read after a dismiss: changed since it began, less clock skew
READ_INTERVAL_S = 1.0  # at most one shared read of a kind per second (Identity Protection's pace)
CONFIRM_QUIET_S = 0.3
DISMISS_QUIET_S = 0.1
# A confirm batch that waits for more incidents goes once it holds this many: the Functions host runs
# at most batchSize + newBatchThreshold of a queue's messages and fetches more only when at most
# newBatchThreshold (host.json: 32) run, so closes held beyond that would stop the close queue.
CONFIRM_ENOUGH = 32
GROUP_BATCH_S = 5.0  # a group add waits at most this long for the worker's other incidents on their way to it
GROUP_QUIET_S = 0.1
MAX_REMEMBERED = 10_000  # users kept in the open / settled records of one worker
OPEN_TTL = timedelta(minutes=30)  # an incident that has not closed this long after its snapshot is not waited for

LISTING, HISTORY = "listing", "history"


def _when(record: Mapping[str, Any]) -> datetime | None:
    value = record.get("riskLastUpdatedDateTime")
    try:
        return parse_timestamp(value) if value else None
    except ValueError:
        return None


def state_before(states: list[dict[str, Any]], changed_at: datetime | None) -> dict[str, Any] | None:
    """The latest risk state recorded before ``changed_at`` (the latest of all when nothing changed yet)."""
    best: dict[str, Any] | None = None
    best_at: datetime | None = None
    for state in states:
        at = _when(state)
        if changed_at is not None and at is not None and at >= changed_at:
            continue
        if best is None or (at is not None and (best_at is None or at > best_at)):
            best, best_at = state, at
    return best


def _by_user(items: list[dict[str, Any]], key: Callable[[dict[str, Any]], list[str]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        for user_id in key(item):
            out.setdefault(user_id.lower(), []).append(item)
    return out


def _audit_users(event: dict[str, Any]) -> list[str]:
    """The users an audit event is about (its targets) or by (its initiator)."""
    users = [str(t.get("id")) for t in event.get("targetResources") or [] if isinstance(t, dict) and t.get("id")]
    initiator = ((event.get("initiatedBy") or {}).get("user") or {}).get("id")
    return users + ([str(initiator)] if initiator else [])


def _consume(task: "asyncio.Task[Any]") -> None:
    """A prefetch's outcome is only wanted by the reads that join it: note a failure, never raise it."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("Identity Protection prefetch failed: %s", task.exception())


class _OnTheirWay:
    """The users whose incidents this worker expects at a later step: a batch there waits for them.
    One that has not arrived OPEN_TTL after it set out is not waited for; at most MAX_REMEMBERED are
    kept (a playbook without that step never drains the record)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._since: dict[str, datetime] = {}

    def _expire(self) -> None:
        oldest = self._clock() - OPEN_TTL
        for user_id in [u for u, at in self._since.items() if at < oldest]:
            del self._since[user_id]

    def add(self, user_id: str) -> None:
        if len(self._since) >= MAX_REMEMBERED:
            self._expire()
            if len(self._since) >= MAX_REMEMBERED:
                self._since.clear()
        self._since[user_id.lower()] = self._clock()

    def discard(self, user_id: str) -> None:
        self._since.pop(user_id.lower(), None)

    def any(self) -> bool:
        self._expire()
        return bool(self._since)


class TenantCalls:
    """The shared calls of one worker (bootstrap builds one; Deps.tenant_calls() makes one on demand)."""

    def __init__(self, graph: GraphPort, *, batch_s: float = 20.0, detection_lookback_days: int = 30,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.graph = graph
        self.clock = clock
        self.detection_lookback = timedelta(days=detection_lookback_days)
        # The platform hands a worker its queue messages in batches (host.json batchSize): the closes
        # of a batch join a confirm batch within moments. While incidents whose snapshot ran in this
        # worker have still to close (``_open``), the batch waits for them, up to batch_s or
        # CONFIRM_ENOUGH members; with none left it goes once none joined for CONFIRM_QUIET_S. Its
        # members leave it together, so the dismiss batch that follows is complete almost at once.
        self._open = _OnTheirWay(clock)
        # Incidents whose snapshot ran here and whose enforce-mfa has not started: a group add waits
        # for them (up to GROUP_BATCH_S, GROUP_MEMBERS_PER_REQUEST users), so a storm adds its users to the MFA group
        # 20 at a time, not one directory write each beside the containment's writes.
        self._before_mfa = _OnTheirWay(clock)
        self._group_adds: dict[str, WriteBatcher] = {}
        self._settled: dict[str, datetime] = {}  # when each user's latest confirm / dismiss call returned
        self.confirm = WriteBatcher(self._confirm, max_ids=MAX_IDS, interval_s=batch_s,
                                    quiet_s=CONFIRM_QUIET_S, expect_more=self.expects_more, enough=CONFIRM_ENOUGH)
        self.dismiss = WriteBatcher(self._dismiss_then_read, max_ids=MAX_IDS, interval_s=batch_s,
                                    quiet_s=DISMISS_QUIET_S)
        self._before: SharedRead[str, tuple[str, list[dict[str, Any]]]] = SharedRead(
            self._history_states, self._at_risk, missing=self._history_states, interval_s=READ_INTERVAL_S, wall=clock)
        self._now: SharedRead[str, dict[str, Any] | None] = SharedRead(
            self._current, self._recently_changed, missing=self._current, interval_s=READ_INTERVAL_S, wall=clock)
        self._detections: SharedRead[str, list[dict[str, Any]]] = SharedRead(
            self._user_detections, self._recent_detections, absent=list, interval_s=READ_INTERVAL_S, wall=clock)
        self._audits: SharedRead[str, list[dict[str, Any]]] = SharedRead(
            self._user_audits, self._recent_audits, absent=list, interval_s=READ_INTERVAL_S, wall=clock)

    # -- the batched writes ---------------------------------------------------------------------

    def mfa_reached(self, user_id: str) -> None:
        """The incident's enforce-mfa started: group adds no longer wait for it."""
        self._before_mfa.discard(user_id)

    async def add_to_group(self, group_id: str, user_id: str) -> bool:
        """Add the user to the group, in one request with the other incidents' adds of the moment (up
        to 20); True: added, False: already a member."""
        self.mfa_reached(user_id)
        batcher = self._group_adds.get(group_id)
        if batcher is None:
            async def add(ids: list[str], group: str = group_id) -> dict[str, bool]:
                return await self.graph.add_group_members(group, ids)

            batcher = self._group_adds[group_id] = WriteBatcher(
                add, max_ids=GROUP_MEMBERS_PER_REQUEST, interval_s=GROUP_BATCH_S, quiet_s=GROUP_QUIET_S, expect_more=self._before_mfa.any)
        return bool(await batcher.submit(user_id))

    def expects_more(self) -> bool:
        """Whether incidents whose snapshot ran here have still to reach close (or be held or fail)."""
        return self._open.any()

    def _mark_settled(self, ids: list[str]) -> None:
        done = self.clock()
        if len(self._settled) >= MAX_REMEMBERED:
            self._settled.clear()
        for user_id in ids:
            self._settled[user_id.lower()] = done

    async def _confirm(self, ids: list[str]) -> None:
        await self.graph.confirm_compromised(ids)
        self._mark_settled(ids)

    async def _dismiss_then_read(self, ids: list[str]) -> None:
        """Dismiss, then (for a batch of several) one read of the users whose risk changed: the state
        every member's close records. A failed read is not the dismiss's failure: members read alone."""
        started = self.clock()
        await self.graph.dismiss_risk(ids)
        self._mark_settled(ids)
        if len(ids) < 2:
            return
        read_at = self.clock()
        try:  # the members changed at the dismiss: a short window keeps a big storm's read to one page
            self._now.offer(Window(read_at, await self._recently_changed(started - DISMISS_READ_MARGIN)))
        except (PermanentError, TransientError) as exc:
            logger.warning("the final risk state of %d dismissed users is read one by one: %s", len(ids), exc)

    # -- reads behind the shared windows ---------------------------------------------------------

    async def _history_states(self, user_id: str) -> tuple[str, list[dict[str, Any]]]:
        return HISTORY, await self.graph.list_risky_user_history(user_id)

    async def _at_risk(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        return {r["id"].lower(): (LISTING, [r]) for r in await self.graph.list_at_risk_users() if r.get("id")}

    async def _current(self, user_id: str) -> dict[str, Any] | None:
        return await self.graph.get_risky_user(user_id)

    async def _recently_changed(self, since: datetime | None = None) -> dict[str, dict[str, Any] | None]:
        since = since or self.clock() - RECENT_RISK_CHANGES
        return {r["id"].lower(): r for r in await self.graph.list_risky_users_changed_since(since) if r.get("id")}

    async def _user_detections(self, user_id: str) -> list[dict[str, Any]]:
        return await self.graph.list_risk_detections(user_id)

    async def _recent_detections(self) -> dict[str, list[dict[str, Any]]]:
        items = await self.graph.list_risk_detections_since(self.clock() - self.detection_lookback)
        return _by_user(items, lambda d: [str(d["userId"])] if d.get("userId") else [])

    async def _user_audits(self, user_id: str) -> list[dict[str, Any]]:
        since = iso_seconds(self.clock() - AUDIT_RETENTION)
        return await self.graph.list_user_audits(user_id, since, max_items=AUDIT_MAX)

    async def _recent_audits(self) -> dict[str, list[dict[str, Any]]]:
        return _by_user(await self.graph.list_dating_audits_since(self.clock() - AUDIT_RETENTION), _audit_users)

    # -- what the steps ask ---------------------------------------------------------------------

    def prefetch_risk(self, user_id: str, fresh_after: datetime) -> None:
        """Start (never wait for) the shared reads ``risk_before`` and ``detections`` will want, so that
        they are taken before the responder's change: the snapshot calls this and goes on at once."""
        self._open.add(user_id)
        self._before_mfa.add(user_id)
        for read in (self._before, self._detections):
            task: asyncio.Task[Any] = asyncio.create_task(read.get(user_id.lower(), fresh_after))
            task.add_done_callback(_consume)

    def closing(self, user_id: str) -> None:
        """The incident reached close (or was held or failed on the way): batches no longer wait for it."""
        self._open.discard(user_id)
        self._before_mfa.discard(user_id)

    async def risk_before(self, user_id: str, fresh_after: datetime, changed_at: datetime | None
                          ) -> tuple[dict[str, Any] | None, str]:
        """(the user's risk record before ``changed_at``, where it came from). None: not a risky user then."""
        source, states = await self._before.get(user_id.lower(), fresh_after)
        found = state_before(states, changed_at)
        if found is None and source == LISTING:
            source, states = await self._history_states(user_id)
            found = state_before(states, changed_at)
        if found is None:
            return None, "not a risky user before the responder's change" if source == HISTORY else source
        if source == LISTING:
            return found, "read after containment; unchanged since before the responder's first change"
        return found, "riskyUser history: the last state recorded before the responder's first change"

    async def risk_now(self, user_id: str, fresh_after: datetime) -> dict[str, Any] | None:
        """The user's risk as read after ``fresh_after`` (after the responder's own confirm / dismiss)."""
        return await self._now.get(user_id.lower(), fresh_after)

    async def risk_settled(self, user_id: str, fresh_after: datetime) -> dict[str, Any] | None:
        """The user's risk after the responder's latest confirm / dismiss of them: from a read that
        started after that call returned (the read that followed their dismiss batch), else after
        ``fresh_after``."""
        settled = self._settled.pop(user_id.lower(), None)
        return await self._now.get(user_id.lower(), min(settled, fresh_after) if settled else fresh_after)

    async def detections(self, user_id: str, fresh_after: datetime) -> list[dict[str, Any]]:
        return await self._detections.get(user_id.lower(), fresh_after)

    async def user_audits(self, user_id: str, fresh_after: datetime) -> list[dict[str, Any]]:
        """Directory audit events about or by the user in the last 30 days, newest first (a lone
        incident: all of them, in one per-user read; several: the dating events of one shared read)."""
        events = await self._audits.get(user_id.lower(), fresh_after)
        unique = {str(e.get("id")) if e.get("id") else str(i): e for i, e in enumerate(events)}
        return sorted(unique.values(), key=lambda e: str(e.get("activityDateTime") or ""), reverse=True)

    def stats(self) -> dict[str, Any]:
        return {"confirm_calls": self.confirm.calls, "dismiss_calls": self.dismiss.calls,
                "risk_before": dict(self._before.calls), "risk_now": dict(self._now.calls),
                "detections": dict(self._detections.calls), "audits": dict(self._audits.calls)}
