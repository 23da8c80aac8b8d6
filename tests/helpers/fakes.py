"""Hand-written, in-memory fakes of the ports (shared/ports.py) that record calls.

They implement the same protocols as the adapters (mypy checks the assignments at the end
of this file; tests/test_ports.py compares the signatures) and follow the adapters'
contracts: the ledger makes its claim/lease decisions with the same pure functions as the
Table-storage ledger (shared/ledger_protocol.py) on its injected clock, and
tests/test_ledger_contract.py runs one suite against both. The integration tests run the
same domain logic against the real adapters.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from shared.errors import ConflictError, PermanentError
from shared.ledger_protocol import (
    Claim,
    ClaimStatus,
    checkpoint_fields,
    decide_claim,
    dump_json,
    finish_fields,
    load_json,
    release_fields,
)
from shared.ports import QueuedMessage
from shared.storm import Reservation, StormState, decide_reservation, reset_state
from shared.timestamps import iso, parse_timestamp, utcnow

if TYPE_CHECKING:
    from shared.ports import ExchangePort, GraphPort, LedgerPort, QueuePort

Clock = Callable[[], datetime]


class FakeClock:
    """A clock that only moves when told to: ``clock()`` is now, ``clock.advance(seconds)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeLedger:
    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock
        self.incidents: dict[str, dict[str, Any]] = {}
        self.steps: dict[tuple[str, str], dict[str, Any]] = {}
        self.open: dict[str, dict[str, Any]] = {}
        self.storm = StormState()
        self.errors: list[dict[str, Any]] = []
        self.evidence: dict[tuple[str, str], Any] = {}
        self.bundled: set[tuple[str, str]] = set()  # sections last written by put_evidence_many
        self.pending: dict[str, dict[str, tuple[str, str]]] = {}
        self.watermarks: dict[str, str] = {}
        self.redrives: dict[tuple[str, str], dict[str, Any]] = {}
        self._etag = itertools.count(1)

    def _tag(self) -> str:
        return f"W/{next(self._etag)}"

    async def ensure(self) -> None:
        pass

    # -- incidents -------------------------------------------------------------------------
    async def create_incident(self, incident: dict[str, Any]) -> None:
        assert incident["incident_id"] not in self.incidents
        self.incidents[incident["incident_id"]] = {**incident, "_etag": self._tag()}

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        row = self.incidents.get(incident_id)
        return dict(row) if row else None

    async def update_incident(self, incident_id: str, fields: dict[str, Any], etag: str | None = None) -> None:
        row = self.incidents[incident_id]
        if etag and row["_etag"] != etag:
            raise ConflictError(f"incident {incident_id} changed since it was read")
        row.update(fields, updated_at=iso(self.clock()))
        row["_etag"] = self._tag()

    async def list_incidents(self, limit: int = 1000, state: str | None = None) -> list[dict[str, Any]]:
        rows = (dict(r) for r in self.incidents.values() if state is None or r.get("state") == state)
        return sorted(rows, key=lambda r: r.get("created_at", ""))[:limit]

    # -- one open incident per user ----------------------------------------------------------
    async def get_open(self, user_key: str) -> tuple[dict[str, Any], str] | None:
        row = self.open.get(user_key)
        return (dict(row), row["_etag"]) if row else None

    async def claim_open(self, user_key: str, incident_id: str, created_at: str, replace_etag: str | None) -> bool:
        current = self.open.get(user_key)
        if replace_etag is None and current is not None:
            return False
        if replace_etag is not None and (current is None or current["_etag"] != replace_etag):
            return False
        self.open[user_key] = {"incident_id": incident_id, "created_at": created_at, "_etag": self._tag()}
        return True

    # -- storm breaker (the same rule as the table ledger, on one in-memory row) ------------
    async def reserve_incident(self, at: datetime, *, window_minutes: int, threshold: int, source: str,
                               source_quota: int) -> Reservation:
        decision = decide_reservation(self.storm, at, window_minutes=window_minutes, threshold=threshold,
                                      source=source, source_quota=source_quota)
        if decision.state is not None:
            self.storm = decision.state
        return decision

    async def storm_state(self) -> StormState:
        return self.storm

    async def reset_storm(self, by: dict[str, str], at: datetime) -> StormState:
        self.storm = reset_state(self.storm, by, at)
        return self.storm

    # -- the step ledger -----------------------------------------------------------------------
    async def get_step(self, incident_id: str, step: str) -> dict[str, Any] | None:
        row = self.steps.get((incident_id, step))
        return dict(row) if row else None

    async def list_steps(self, incident_id: str) -> list[dict[str, Any]]:
        return [dict(r, RowKey=s) for (i, s), r in self.steps.items() if i == incident_id]

    async def put_step(self, incident_id: str, step: str, fields: dict[str, Any]) -> None:
        row = self.steps.setdefault((incident_id, step), {})
        row.update(fields)
        row["_etag"] = self._tag()

    async def claim_step(self, incident_id: str, step: str, lease_s: int, correlation_id: str) -> Claim:
        row = self.steps.get((incident_id, step))
        decision = decide_claim(row, self.clock(), lease_s, correlation_id)
        if decision.status is not ClaimStatus.CLAIMED:
            assert row is not None
            return Claim(decision.status, dict(row), row["_etag"], retry_in=decision.retry_in, checkpoint=decision.checkpoint)
        row = self.steps.setdefault((incident_id, step), {})
        row.update(decision.fields)
        row["_etag"] = self._tag()
        return Claim(ClaimStatus.CLAIMED, dict(row), row["_etag"], checkpoint=decision.checkpoint)

    async def _conditional(self, incident_id: str, step: str, claim: Claim, fields: dict[str, Any]) -> None:
        row = self.steps[(incident_id, step)]
        if row["_etag"] != claim.etag:
            raise ConflictError(f"lost the lease on {incident_id}/{step}: another worker took it over")
        row.update(fields)
        row["_etag"] = claim.etag = self._tag()
        claim.row.update(fields)

    async def checkpoint(self, incident_id: str, step: str, claim: Claim, updates: dict[str, Any]) -> None:
        claim.checkpoint.update(updates)
        await self._conditional(incident_id, step, claim, checkpoint_fields(claim.checkpoint))

    async def release(self, incident_id: str, step: str, claim: Claim, error: str) -> None:
        await self._conditional(incident_id, step, claim, release_fields(self.clock(), error))

    async def finish(self, incident_id: str, step: str, claim: Claim, state: str, detail: Any,
                     error: str = "", duration_ms: int = 0) -> None:
        await self._conditional(incident_id, step, claim, finish_fields(self.clock(), state, detail, error, duration_ms))

    # -- evidence ------------------------------------------------------------------------------
    async def put_evidence(self, incident_id: str, section: str, data: Any) -> int:
        text = dump_json(data)
        self.bundled.discard((incident_id, section))
        self.evidence[(incident_id, section)] = json.loads(text)
        return len(text)

    async def put_evidence_many(self, incident_id: str, sections: dict[str, Any]) -> dict[str, int]:
        sizes = {section: await self.put_evidence(incident_id, section, data) for section, data in sections.items()}
        self.bundled.update((incident_id, section) for section in sections)  # as the Table ledger: not alone
        return sizes

    async def list_evidence(self, incident_id: str) -> dict[str, Any]:
        return {s: d for (i, s), d in self.evidence.items() if i == incident_id}

    async def get_evidence(self, incident_id: str, section: str) -> Any | None:
        return None if (incident_id, section) in self.bundled else self.evidence.get((incident_id, section))

    # -- errors --------------------------------------------------------------------------------
    async def record_error(self, where: str, reason: str, *, message_id: str = "", excerpt: str = "",
                           **extra: Any) -> str:
        self.errors.append({"where": where, "reason": reason, "message_id": message_id, "excerpt": excerpt,
                            "recorded_at": iso(self.clock()), **extra})
        return str(len(self.errors))

    async def list_errors(self, where: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return [dict(e) for e in self.errors if where is None or e["where"] == where][:limit]

    # -- Defender halves, watermarks, redrive counters ----------------------------------------
    async def add_pending_half(self, alert_id: str, row: str, kind: str, record: str) -> None:
        self.pending.setdefault(alert_id, {})[row] = (kind, record)

    async def pending_halves(self, alert_id: str) -> tuple[list[str], list[str]]:
        halves = list(self.pending.get(alert_id, {}).values())
        return [r for k, r in halves if k == "info"], [r for k, r in halves if k != "info"]

    async def get_watermark(self, feed: str) -> str | None:
        return self.watermarks.get(feed)

    async def set_watermark(self, feed: str, since: str) -> None:
        self.watermarks[feed] = since

    async def get_redrive(self, queue: str, digest: str) -> dict[str, Any]:
        record = self.redrives.get((queue, digest))
        return {"count": record["count"], "gave_up": bool(record.get("gave_up"))} if record else {}

    async def put_redrive(self, queue: str, digest: str, count: int, gave_up: bool = False) -> None:
        record = self.redrives.setdefault((queue, digest), {})
        record["count"] = count
        if gave_up:
            record["gave_up"] = True

    # -- test helpers --------------------------------------------------------------------------
    def step_state(self, incident_id: str, step: str) -> str | None:
        row = self.steps.get((incident_id, step))
        return row["state"] if row else None

    def step_detail(self, incident_id: str, step: str) -> dict[str, Any]:
        return load_json(self.steps[(incident_id, step)].get("detail"), {})


def _stored_text(content: str) -> str:
    """What a function sees of stored text (base64, as host.json says), like the adapter."""
    try:
        return base64.b64decode("".join(content.split()), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return content


class FakeQueues:
    """Queues in memory. ``sent`` records every ``send`` (queue, body, visibility timeout);
    messages are kept as stored text (base64) so peek/receive/delete behave like a queue."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int | None]] = []
        self.stored: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    async def ensure(self, queues: Iterable[str]) -> None:
        for queue in queues:
            self.stored.setdefault(queue, [])

    def _put(self, queue: str, content: str, visible: bool = True) -> str:
        message_id = f"m{next(self._ids)}"
        self.stored.setdefault(queue, []).append({"id": message_id, "content": content, "dequeue_count": 0,
                                                  "visible": visible, "receipt": 0})
        return message_id

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        self.sent.append((queue, body, visibility_timeout))
        return self._put(queue, base64.b64encode(body.encode("utf-8")).decode("ascii"), visible=not visibility_timeout)

    async def send_stored(self, queue: str, content: str) -> str:
        return self._put(queue, content)

    @staticmethod
    def _view(record: dict[str, Any]) -> QueuedMessage:
        return QueuedMessage(id=record["id"], content=record["content"], text=_stored_text(record["content"]),
                             dequeue_count=record["dequeue_count"], pop_receipt=str(record["receipt"]))

    async def peek(self, queue: str, max_messages: int) -> list[QueuedMessage]:
        return [self._view(r) for r in self.stored.get(queue, []) if r["visible"]][:max_messages]

    async def receive(self, queue: str, max_messages: int, visibility_timeout: int) -> list[QueuedMessage]:
        taken = [r for r in self.stored.get(queue, []) if r["visible"]][:max_messages]
        for record in taken:
            record.update(visible=False, dequeue_count=record["dequeue_count"] + 1, receipt=record["receipt"] + 1)
        return [self._view(r) for r in taken]

    def _find(self, queue: str, message: QueuedMessage) -> dict[str, Any] | None:
        return next((r for r in self.stored.get(queue, []) if r["id"] == message.id
                     and str(r["receipt"]) == message.pop_receipt), None)

    async def delete(self, queue: str, message: QueuedMessage) -> None:
        record = self._find(queue, message)
        if record is None:
            raise LookupError(f"message {message.id} is not on {queue} (or its pop receipt is stale)")
        self.stored[queue].remove(record)

    async def make_visible(self, queue: str, message: QueuedMessage) -> bool:
        record = self._find(queue, message)
        if record is None:
            return False
        record["visible"] = True
        return True

    async def approximate_count(self, queue: str) -> int:
        return len(self.stored.get(queue, []))

    # test helper
    def on(self, queue: str) -> list[dict[str, Any]]:
        return [json.loads(b) for q, b, _ in self.sent if q == queue]


class FakeGraph:
    """A small in-memory tenant that records calls; any method can be scripted to fail
    with ``fail(method, *errors)``. Raw requests (``request``/``list_all``/``follow``) are
    served from ``pages[path]``: a list of pages chained by @odata.nextLink."""

    BASE = "https://graph.microsoft.com/v1.0"

    def __init__(self, users: list[dict[str, Any]] | None = None, clock: Clock = utcnow) -> None:
        self.clock = clock
        self.calls: list[tuple[Any, ...]] = []
        self.users = {u["id"]: dict(u) for u in (users or [])}
        self.groups: dict[str, set[str]] = {}
        self.failures: dict[str, list[Exception]] = {}
        self.passwords: dict[str, list[str]] = {}
        self.lost_after_effect: set[str] = set()
        self.mfa: dict[str, str] = {}
        self.auth_methods: dict[str, list[dict[str, Any]]] = {}
        self.rules: dict[str, list[dict[str, Any]]] = {}
        self.risky: dict[str, dict[str, Any]] = {}
        self.risk_history: dict[str, list[dict[str, Any]]] = {}  # user id -> riskyUserHistoryItems, oldest first
        self.detections: dict[str, list[dict[str, Any]]] = {}
        self.outbox: list[dict[str, str]] = []
        self.audits: dict[str, list[dict[str, Any]]] = {}  # user id -> directoryAudit events, newest first
        self.grants: dict[str, dict[str, Any]] = {}  # oauth2PermissionGrants by id
        self.app_roles: dict[str, list[dict[str, Any]]] = {}  # user id -> appRoleAssignments
        self.service_principals: dict[str, dict[str, Any]] = {}
        self.pages: dict[str, list[dict[str, Any]]] = {}
        self.tap_policy: dict[str, Any] = {"state": "enabled", "minimumLifetimeInMinutes": 60,
                                           "maximumLifetimeInMinutes": 480, "defaultLifetimeInMinutes": 60,
                                           "isUsableOnce": False, "defaultLength": 8}
        self.tap_serial = 0
        self.taps: list[tuple[str, str]] = []  # (user id, pass) as Graph answered them: what a test checks
        self.managers: dict[str, dict[str, Any]] = {}

    def fail(self, method: str, *errors: Exception) -> None:
        self.failures.setdefault(method, []).extend(errors)

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        queue = self.failures.get(method)
        if queue:
            raise queue.pop(0)

    def _user(self, key: str) -> dict[str, Any]:
        for user in self.users.values():
            if user["id"] == key or user["userPrincipalName"].lower() == key.lower():
                return user
        raise PermanentError(f"Graph GET /users/{key}: 404 Request_ResourceNotFound", status=404)

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c[0] == method)

    # -- raw requests ------------------------------------------------------------------------
    def _page(self, path: str, index: int) -> dict[str, Any]:
        pages = self.pages.get(path)
        if not pages or index >= len(pages):
            raise PermanentError(f"Graph GET {path}: 404 - no such page in the fake", status=404)
        page = dict(pages[index])
        if index + 1 < len(pages):
            page["@odata.nextLink"] = f"{self.BASE}{path}?$skiptoken={index + 1}"
        return page

    async def request(self, method: str, path: str, *, permission: str, body: Any = None,
                      query: dict[str, str] | None = None, beta: bool = False,
                      headers: dict[str, str] | None = None, idempotent: bool = False) -> Any:
        self._call("request", method, path, dict(query or {}))
        if method != "GET":
            raise PermanentError(f"Graph {method} {path}: the fake serves GET pages only", status=405)
        return self._page(path, 0)

    async def follow(self, link: str, permission: str, headers: dict[str, str] | None = None) -> Any:
        self._call("follow", link)
        parts = urlsplit(link)
        if not link.startswith(self.BASE):
            raise PermanentError(f"Graph nextLink points at another host ({parts.netloc}); refused")
        index = int(parse_qs(parts.query).get("$skiptoken", ["0"])[0])
        return self._page(parts.path.removeprefix("/v1.0"), index)

    async def list_all(self, path: str, *, permission: str, query: dict[str, str] | None = None,
                       max_items: int = 1000, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = await self.request("GET", path, permission=permission, query=query, headers=headers)
        while True:
            items.extend(page.get("value", []))
            link = page.get("@odata.nextLink")
            if not link or len(items) >= max_items:
                return items[:max_items]
            page = await self.follow(link, permission, headers)

    # -- users -------------------------------------------------------------------------------
    async def get_user(self, user_key: str, select: str | None = None) -> dict[str, Any]:
        self._call("get_user", user_key)
        return dict(self._user(user_key))

    async def reset_password(self, user_id: str, password: str, force_change: bool = True) -> None:
        self._call("reset_password", user_id)
        self.passwords.setdefault(user_id, []).append(password)
        self._user(user_id)["lastPasswordChangeDateTime"] = iso(self.clock() + timedelta(seconds=1))
        if "reset_password" in self.lost_after_effect:
            self.lost_after_effect.discard("reset_password")
            raise RuntimeError("worker died after the PATCH landed")

    async def revoke_sessions(self, user_id: str) -> bool:
        self._call("revoke_sessions", user_id)
        self._user(user_id)["signInSessionsValidFromDateTime"] = iso(self.clock() + timedelta(seconds=1))
        return True

    async def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]:
        self._call("check_member_groups", user_id)
        object_id = self._user(user_id)["id"]  # Graph takes the object id or the UPN here
        return [g for g in group_ids if object_id in self.groups.get(g, set())]

    async def list_directory_roles(self, user_id: str) -> list[dict[str, Any]]:
        """Active roles: a user's ``roles`` (display names), as directoryRole objects."""
        self._call("list_directory_roles", user_id)
        return [{"@odata.type": "#microsoft.graph.directoryRole", "displayName": r}
                for r in self._user(user_id).get("roles", [])]

    async def list_eligible_roles(self, user_id: str) -> list[dict[str, Any]]:
        """PIM-eligible roles: a user's ``eligible`` (roleDefinitionIds)."""
        self._call("list_eligible_roles", user_id)
        return [{"principalId": self._user(user_id)["id"], "roleDefinitionId": r}
                for r in self._user(user_id).get("eligible", [])]

    async def list_user_audits(self, user_id: str, since: str, max_items: int = 500) -> list[dict[str, Any]]:
        self._call("list_user_audits", user_id, since)
        return [dict(a) for a in self.audits.get(user_id, []) if str(a.get("activityDateTime") or "") >= since][:max_items]

    async def set_account_enabled(self, user_id: str, enabled: bool) -> None:
        self._call("set_account_enabled", user_id, enabled)
        self._user(user_id)["accountEnabled"] = enabled

    # -- consent grants / app role assignments -----------------------------------------------
    async def list_user_grants(self, user_id: str) -> list[dict[str, Any]]:
        self._call("list_user_grants", user_id)
        return [dict(g) for g in self.grants.values()
                if g.get("consentType") == "Principal" and g.get("principalId") == user_id]

    async def list_admin_grants(self, client_id: str) -> list[dict[str, Any]]:
        self._call("list_admin_grants", client_id)
        return [dict(g) for g in self.grants.values()
                if g.get("clientId") == client_id and g.get("consentType") == "AllPrincipals"]

    async def get_grant(self, grant_id: str) -> dict[str, Any] | None:
        self._call("get_grant", grant_id)
        grant = self.grants.get(grant_id)
        return dict(grant) if grant else None

    async def delete_grant(self, grant_id: str) -> bool:
        self._call("delete_grant", grant_id)
        return self.grants.pop(grant_id, None) is not None

    async def list_app_role_assignments(self, user_id: str) -> list[dict[str, Any]]:
        self._call("list_app_role_assignments", user_id)
        return [dict(a) for a in self.app_roles.get(user_id, [])]

    async def delete_app_role_assignment(self, user_id: str, assignment_id: str) -> bool:
        self._call("delete_app_role_assignment", user_id, assignment_id)
        rows = self.app_roles.get(user_id, [])
        kept = [a for a in rows if a.get("id") != assignment_id]
        self.app_roles[user_id] = kept
        return len(kept) != len(rows)

    async def get_service_principal(self, sp_id: str) -> dict[str, Any] | None:
        self._call("get_service_principal", sp_id)
        found = self.service_principals.get(sp_id)
        return dict(found) if found else None

    # -- groups / MFA ------------------------------------------------------------------------
    async def add_group_member(self, group_id: str, user_id: str) -> bool:
        self._call("add_group_member", group_id, user_id)
        members = self.groups.setdefault(group_id, set())
        if user_id in members:
            return False  # Graph: 400 "One or more added object references already exist"
        members.add(user_id)
        return True

    async def add_group_members(self, group_id: str, user_ids: list[str]) -> dict[str, bool]:
        self._call("add_group_members", group_id, list(user_ids))
        members = self.groups.setdefault(group_id, set())
        if len(user_ids) > 20:
            raise PermanentError("Graph PATCH /groups/{id}: 400 - at most 20 members per request", status=400)
        if any(u in members for u in user_ids):  # Graph refuses the whole request: each on its own
            return {u: await self.add_group_member(group_id, u) for u in user_ids}
        members.update(user_ids)
        return {u: True for u in user_ids}

    async def remove_group_member(self, group_id: str, user_id: str) -> bool:
        self._call("remove_group_member", group_id, user_id)
        members = self.groups.setdefault(group_id, set())
        if user_id not in members:
            return False  # Graph: 404 "One or more removed object references do not exist"
        members.discard(user_id)
        return True

    async def get_mfa_state(self, user_id: str) -> str | None:
        self._call("get_mfa_state", user_id)
        return self.mfa.get(user_id, "disabled")

    async def enforce_per_user_mfa(self, user_id: str) -> None:
        self._call("enforce_per_user_mfa", user_id)
        self.mfa[user_id] = "enforced"

    async def list_auth_methods(self, user_id: str) -> list[dict[str, Any]]:
        self._call("list_auth_methods", user_id)
        return [dict(m) for m in self.auth_methods.get(user_id, [])]

    async def delete_auth_method(self, user_id: str, collection: str, method_id: str) -> bool:
        self._call("delete_auth_method", user_id, collection, method_id)
        methods = self.auth_methods.get(user_id, [])
        kept = [m for m in methods if m.get("id") != method_id]
        self.auth_methods[user_id] = kept
        return len(kept) != len(methods)

    # -- mailbox rules -----------------------------------------------------------------------
    async def list_message_rules(self, user_id: str) -> list[dict[str, Any]]:
        self._call("list_message_rules", user_id)
        return [dict(r) for r in self.rules.get(user_id, [])]

    async def get_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any] | None:
        self._call("get_message_rule", user_id, rule_id)
        rule = next((r for r in self.rules.get(user_id, []) if r.get("id") == rule_id), None)
        return dict(rule) if rule else None

    async def disable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]:
        self._call("disable_message_rule", user_id, rule_id)
        rule = next((r for r in self.rules.get(user_id, []) if r.get("id") == rule_id), None)
        if rule is None:
            raise PermanentError(f"Graph PATCH messageRules/{rule_id}: 404 ErrorItemNotFound", status=404)
        rule["isEnabled"] = False
        return dict(rule)

    async def enable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]:
        self._call("enable_message_rule", user_id, rule_id)
        rule = next((r for r in self.rules.get(user_id, []) if r.get("id") == rule_id), None)
        if rule is None:
            raise PermanentError(f"Graph PATCH messageRules/{rule_id}: 404 ErrorItemNotFound", status=404)
        rule["isEnabled"] = True
        return dict(rule)

    # -- Temporary Access Pass / manager -----------------------------------------------------
    async def get_tap_policy(self) -> dict[str, Any]:
        self._call("get_tap_policy")
        return dict(self.tap_policy)

    async def create_tap(self, user_id: str, lifetime_minutes: int, usable_once: bool = True) -> dict[str, Any]:
        self._call("create_tap", user_id, lifetime_minutes, usable_once)
        if self.tap_policy.get("state") != "enabled":
            raise PermanentError("Graph POST temporaryAccessPassMethods: 400 badRequest - Converged UserCredentialPolicy "
                                 "does not allow creating or updating this authentication method.", status=400)
        self.tap_serial += 1
        secret = f"Tap{self.tap_serial:05d}x"
        method = {"@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod", "id": f"tap-{self.tap_serial}",
                  "createdDateTime": self.clock().isoformat().replace("+00:00", "Z"),
                  "startDateTime": self.clock().isoformat().replace("+00:00", "Z"),
                  "lifetimeInMinutes": lifetime_minutes, "isUsableOnce": usable_once, "isUsable": True}
        methods = [m for m in self.auth_methods.get(user_id, []) if "temporaryAccessPass" not in str(m.get("@odata.type"))]
        self.auth_methods[user_id] = methods + [method]
        self.taps.append((user_id, secret))
        return {**method, "temporaryAccessPass": secret}

    async def delete_tap(self, user_id: str, method_id: str) -> bool:
        self._call("delete_tap", user_id, method_id)
        return await self.delete_auth_method(user_id, "temporaryAccessPassMethods", method_id)

    async def get_manager(self, user_id: str) -> dict[str, Any] | None:
        self._call("get_manager", user_id)
        manager = self.managers.get(user_id)
        return dict(manager) if manager else None

    # -- identity protection / mail ----------------------------------------------------------
    def set_risk(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change a user's risk as Identity Protection does: the record moves, the history keeps each state."""
        record = self.risky.setdefault(user_id, {"id": user_id})
        record.update(fields, riskLastUpdatedDateTime=fields.get("riskLastUpdatedDateTime") or iso(self.clock()))
        self.risk_history.setdefault(user_id, []).append({**record, "userId": user_id})
        return record

    async def confirm_compromised(self, user_ids: list[str]) -> None:
        self._call("confirm_compromised", tuple(user_ids))
        for user_id in user_ids:
            self.set_risk(user_id, riskState="confirmedCompromised", riskLevel="high",
                          riskDetail="adminConfirmedUserCompromised")

    async def dismiss_risk(self, user_ids: list[str]) -> None:
        self._call("dismiss_risk", tuple(user_ids))
        for user_id in user_ids:
            if user_id in self.risky:
                self.set_risk(user_id, riskState="dismissed", riskLevel="none", riskDetail="adminDismissedAllRiskForUser")

    async def get_risky_user(self, user_id: str) -> dict[str, Any] | None:
        self._call("get_risky_user", user_id)
        risky = self.risky.get(user_id)
        return dict(risky) if risky else None

    async def list_risk_detections(self, user_id: str, top: int = 50) -> list[dict[str, Any]]:
        self._call("list_risk_detections", user_id)
        return [dict(d) for d in self.detections.get(user_id, [])][:top]

    async def list_at_risk_users(self, max_items: int = 10_000) -> list[dict[str, Any]]:
        self._call("list_at_risk_users")
        return [dict(r) for r in self.risky.values() if r.get("riskState") in ("atRisk", "confirmedCompromised")]

    async def list_risky_users_changed_since(self, since: datetime, max_items: int = 10_000) -> list[dict[str, Any]]:
        self._call("list_risky_users_changed_since", since)
        return [dict(r) for r in self.risky.values()
                if r.get("riskLastUpdatedDateTime") and parse_timestamp(r["riskLastUpdatedDateTime"]) > since]

    async def list_risky_user_history(self, user_id: str) -> list[dict[str, Any]]:
        self._call("list_risky_user_history", user_id)
        return [dict(h) for h in self.risk_history.get(user_id, [])]

    async def list_risk_detections_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        self._call("list_risk_detections_since", since)
        return [{"userId": user_id, **d} for user_id, items in self.detections.items() for d in items
                if parse_timestamp(d.get("detectedDateTime") or d.get("activityDateTime") or iso(self.clock())) >= since]

    async def list_dating_audits_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        self._call("list_dating_audits_since", since)
        out = []
        for user_id, events in self.audits.items():
            for event in events:
                if parse_timestamp(event.get("activityDateTime") or iso(self.clock())) >= since:
                    out.append({"targetResources": [{"id": user_id}], **event})
        return out

    async def send_mail(self, sender: str, to: str, subject: str, text: str) -> None:
        self._call("send_mail", sender, to)
        self.outbox.append({"from": sender, "to": to, "subject": subject, "text": text})


class FakeExchange:
    """Records InvokeCommand calls; ``results[cmdlet]`` is what a cmdlet returns ([] if unset) and
    ``warnings[cmdlet]`` the ``@adminapi.warnings`` it reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.warnings: dict[str, list[str]] = {}
        self.failures: dict[str, list[Exception]] = {}

    async def invoke(self, cmdlet: str, parameters: dict[str, Any] | None = None,
                     anchor: str | None = None, warnings: list[str] | None = None) -> list[dict[str, Any]]:
        self.calls.append((cmdlet, dict(parameters or {})))
        queue = self.failures.get(cmdlet)
        if queue:
            raise queue.pop(0)
        if warnings is not None:
            warnings.extend(self.warnings.get(cmdlet, []))
        return [dict(r) for r in self.results.get(cmdlet, [])]


if TYPE_CHECKING:  # mypy proves the fakes satisfy the ports (structural typing)
    _ledger: LedgerPort = FakeLedger()
    _queues: QueuePort = FakeQueues()
    _graph: GraphPort = FakeGraph()
    _exchange: ExchangePort = FakeExchange()
