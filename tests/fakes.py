"""Hand-written fakes for the ports (ledger, queues, Graph, Exchange) that record calls.

They follow the real adapters' contracts (ETag claims, 'already a member' semantics...)
closely enough for the domain logic to be tested without Azurite or the simulator; the
integration tests run the same logic against the real ones.
"""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.adapters.ledger import TERMINAL_STEP_STATES, Claim, dump_json, iso, load_json
from shared.errors import PermanentError, TransientError


class FakeLedger:
    def __init__(self) -> None:
        self.incidents: dict[str, dict] = {}
        self.steps: dict[tuple[str, str], dict] = {}
        self.open: dict[str, dict] = {}
        self.storm: list[tuple[datetime, str]] = []
        self.errors: list[dict] = []
        self.markers: set[tuple[str, str]] = set()
        self.evidence: dict[tuple[str, str], Any] = {}
        self._etag = itertools.count(1)

    def _tag(self) -> str:
        return f"W/{next(self._etag)}"

    async def ensure(self) -> None:
        pass

    async def create_incident(self, incident: dict) -> None:
        assert incident["incident_id"] not in self.incidents
        self.incidents[incident["incident_id"]] = {**incident, "_etag": self._tag()}

    async def get_incident(self, incident_id: str) -> dict | None:
        row = self.incidents.get(incident_id)
        return dict(row) if row else None

    async def update_incident(self, incident_id: str, fields: dict, etag: str | None = None) -> None:
        row = self.incidents[incident_id]
        if etag and row["_etag"] != etag:
            raise RuntimeError("412 precondition failed")
        row.update(fields)
        row["_etag"] = self._tag()

    async def list_incidents(self, limit: int = 1000) -> list[dict]:
        return sorted((dict(r) for r in self.incidents.values()), key=lambda r: r.get("created_at", ""))[:limit]

    async def get_open(self, user_key: str):
        row = self.open.get(user_key)
        return (dict(row), row["_etag"]) if row else None

    async def claim_open(self, user_key, incident_id, created_at, replace_etag) -> bool:
        current = self.open.get(user_key)
        if replace_etag is None and current is not None:
            return False
        if replace_etag is not None and (current is None or current["_etag"] != replace_etag):
            return False
        self.open[user_key] = {"incident_id": incident_id, "created_at": created_at, "_etag": self._tag()}
        return True

    async def record_new_incident_for_storm(self, incident_id: str, at: datetime) -> None:
        self.storm.append((at, incident_id))

    async def count_recent_incidents(self, at: datetime, window_minutes: int, stop_after: int) -> int:
        start = at.replace(second=0, microsecond=0) - timedelta(minutes=window_minutes - 1)
        return min(stop_after, sum(1 for t, _ in self.storm if t >= start))

    async def mark_once(self, partition: str, row: str, fields: dict) -> bool:
        if (partition, row) in self.markers:
            return False
        self.markers.add((partition, row))
        return True

    async def get_step(self, incident_id: str, step: str) -> dict | None:
        row = self.steps.get((incident_id, step))
        return dict(row) if row else None

    async def list_steps(self, incident_id: str) -> list[dict]:
        return [dict(r, RowKey=s) for (i, s), r in self.steps.items() if i == incident_id]

    async def put_step(self, incident_id: str, step: str, fields: dict) -> None:
        self.steps.setdefault((incident_id, step), {}).update(fields)

    async def claim_step(self, incident_id: str, step: str, lease_s: int, correlation_id: str) -> Claim:
        now = datetime.now(timezone.utc)
        row = self.steps.get((incident_id, step))
        lease_until = iso(now + timedelta(seconds=lease_s))
        if row is None:
            row = {"state": "running", "attempts": 1, "lease_until": lease_until, "checkpoint": "{}", "_etag": self._tag()}
            self.steps[(incident_id, step)] = row
            return Claim("claimed", dict(row), row["_etag"], checkpoint={})
        if row["state"] in TERMINAL_STEP_STATES:
            return Claim("done", dict(row), row["_etag"], checkpoint=load_json(row.get("checkpoint"), {}))
        if row["state"] == "running" and row.get("lease_until", "") > iso(now):
            return Claim("busy", dict(row), row["_etag"], retry_in=5.0)
        row.update(state="running", attempts=row.get("attempts", 0) + 1, lease_until=lease_until, _etag=self._tag())
        return Claim("claimed", dict(row), row["_etag"], checkpoint=load_json(row.get("checkpoint"), {}))

    async def _conditional(self, incident_id, step, claim: Claim, fields: dict) -> None:
        row = self.steps[(incident_id, step)]
        if row["_etag"] != claim.etag:
            raise TransientError("lost the lease")
        row.update(fields)
        row["_etag"] = claim.etag = self._tag()
        claim.row.update(fields)

    async def checkpoint(self, incident_id, step, claim: Claim, updates: dict) -> None:
        claim.checkpoint.update(updates)
        await self._conditional(incident_id, step, claim, {"checkpoint": dump_json(claim.checkpoint)})

    async def release(self, incident_id, step, claim: Claim, error: str) -> None:
        await self._conditional(incident_id, step, claim, {"state": "retrying", "lease_until": "", "error": error})

    async def finish(self, incident_id, step, claim: Claim, state, detail, error: str = "", duration_ms: int = 0) -> None:
        await self._conditional(
            incident_id, step, claim,
            {"state": state, "detail": dump_json(detail), "error": error, "duration_ms": duration_ms, "lease_until": ""},
        )

    async def record_error(self, where: str, reason: str, **kw: Any) -> str:
        self.errors.append({"where": where, "reason": reason, **kw})
        return str(len(self.errors))

    async def put_evidence(self, incident_id: str, section: str, data: Any) -> int:
        text = dump_json(data)
        self.evidence[(incident_id, section)] = json.loads(text)
        return len(text)

    async def put_evidence_many(self, incident_id: str, sections: dict) -> dict:
        return {section: await self.put_evidence(incident_id, section, data) for section, data in sections.items()}

    async def list_evidence(self, incident_id: str) -> dict:
        return {s: d for (i, s), d in self.evidence.items() if i == incident_id}

    # test helpers
    def step_state(self, incident_id: str, step: str) -> str | None:
        row = self.steps.get((incident_id, step))
        return row["state"] if row else None

    def step_detail(self, incident_id: str, step: str) -> dict:
        return load_json(self.steps[(incident_id, step)].get("detail"), {})


class FakeQueues:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int | None]] = []

    async def ensure(self, queues) -> None:
        pass

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        self.sent.append((queue, body, visibility_timeout))
        return f"m{len(self.sent)}"

    def on(self, queue: str) -> list[dict]:
        return [json.loads(b) for q, b, _ in self.sent if q == queue]


class FakeGraph:
    """Records calls; behaviour per method can be scripted with ``fail``."""

    def __init__(self, users: list[dict] | None = None) -> None:
        self.calls: list[tuple] = []
        self.users = {u["id"]: dict(u) for u in (users or [])}
        self.groups: dict[str, set[str]] = {}
        self.failures: dict[str, list[Exception]] = {}
        self.passwords: dict[str, list[str]] = {}
        self.lost_after_effect: set[str] = set()

    def fail(self, method: str, *errors: Exception) -> None:
        self.failures.setdefault(method, []).extend(errors)

    def _maybe_fail(self, method: str) -> None:
        queue = self.failures.get(method)
        if queue:
            raise queue.pop(0)

    def _user(self, key: str) -> dict:
        for user in self.users.values():
            if user["id"] == key or user["userPrincipalName"].lower() == key.lower():
                return user
        raise PermanentError(f"Graph GET /users/{key}: 404 Request_ResourceNotFound", status=404)

    async def get_user(self, user_key: str, select: str = "") -> dict:
        self.calls.append(("get_user", user_key))
        self._maybe_fail("get_user")
        return dict(self._user(user_key))

    async def reset_password(self, user_id: str, password: str, force_change: bool = True) -> None:
        self.calls.append(("reset_password", user_id))
        self._maybe_fail("reset_password")
        self.passwords.setdefault(user_id, []).append(password)
        self._user(user_id)["lastPasswordChangeDateTime"] = iso(datetime.now(timezone.utc) + timedelta(seconds=1))
        if "reset_password" in self.lost_after_effect:
            self.lost_after_effect.discard("reset_password")
            raise RuntimeError("worker died after the PATCH landed")

    async def revoke_sessions(self, user_id: str) -> bool:
        self.calls.append(("revoke_sessions", user_id))
        self._maybe_fail("revoke_sessions")
        return True

    async def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]:
        self.calls.append(("check_member_groups", user_id))
        self._maybe_fail("check_member_groups")
        object_id = self._user(user_id)["id"]  # Graph takes the object id or the UPN here
        return [g for g in group_ids if object_id in self.groups.get(g, set())]

    async def confirm_compromised(self, user_ids: list[str]) -> None:
        self.calls.append(("confirm_compromised", tuple(user_ids)))
        self._maybe_fail("confirm_compromised")
        for uid in user_ids:
            self._user(uid)["riskState"] = "confirmedCompromised"

    async def get_risky_user(self, user_id: str) -> dict | None:
        self.calls.append(("get_risky_user", user_id))
        user = self._user(user_id)
        return {"id": user["id"], "riskState": user["riskState"]} if user.get("riskState") else None

    async def list_directory_roles(self, user_id: str) -> list[dict]:
        """Active roles: a user's ``roles`` (display names), as directoryRole objects."""
        self.calls.append(("list_directory_roles", user_id))
        self._maybe_fail("list_directory_roles")
        return [{"@odata.type": "#microsoft.graph.directoryRole", "displayName": r}
                for r in self._user(user_id).get("roles", [])]

    async def list_eligible_roles(self, user_id: str) -> list[dict]:
        """PIM-eligible roles: a user's ``eligible`` (roleDefinitionIds)."""
        self.calls.append(("list_eligible_roles", user_id))
        self._maybe_fail("list_eligible_roles")
        return [{"principalId": self._user(user_id)["id"], "roleDefinitionId": r}
                for r in self._user(user_id).get("eligible", [])]

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c[0] == method)

