"""Intake: turn an IncidentRequest into a new incident (or attach it to an open one).

Before anything is stored:
- ``policy.refusal``: a caller (HTTP, alerts queue) claiming a stream source, a ``detected_at``
  in the future or older than LOOKBACK_DAYS;
- the user is resolved through Graph (where Graph is wired: the worker, not the operator CLI):
  a request whose ``user_id`` and ``user_principal_name`` are different users, or a user the
  tenant does not have, is refused; the incident is keyed by the resolved object id;
- the protection gate is asked (shared/gate.py), so the incident says from the start
  "protected: yes, because ..." and how many approvals a change needs.

One incident per user, whatever key the source used: the index (``userincidents``) has a row
per key (object id, UPN) pointing at the user's latest incident; an alert attaches only to an
incident that is not over. A new incident that would run on its own first reserves a slot of
the storm breaker (shared/storm.py: atomic, latching, with a per-source quota); without one it
is held.

Order of writes, chosen so a crash anywhere leaves nothing lost and nothing doubled:
1. claim the user's index row (conditional create/replace), then the storm slot;
2. write the incident row in state ``new`` (or ``held``), then the other index keys;
3. enqueue the first step, then mark the incident ``queued``.
A redelivered alert finds the index row and the incident: it attaches (a no-op for alert
ids already present) and re-enqueues the first step if the incident is still ``new``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .deps import Deps
from .errors import PermanentError
from .gate import protection_gate
from .logs import incident_log
from .model import IncidentRequest, new_correlation_id, new_incident_id
from .notify import notify_held, notify_storm
from .playbook import first_step, incident_order
from .policy import Protection, decide_intake, refusal
from .principal import Principal
from .priority import Priority, priority
from .states import IncidentState
from .steps.base import enqueue_step
from .timestamps import iso
from .userindex import index_user_keys, resolved_user_fields

logger = logging.getLogger(__name__)

__all__ = ["IntakeResult", "request_keys", "submit"]


@dataclass(frozen=True)
class IntakeResult:
    outcome: str  # "created" | "held" | "attached" | "ignored" | "refused"
    incident_id: str | None
    reason: str = ""
    protection: str = ""  # "protected: yes, because ..." for a new incident


class _Refused(Exception):
    pass


async def _resolve(deps: Deps, request: IncidentRequest) -> dict[str, Any] | None:
    """The user as Graph knows them (resolved_user_fields), or None where no Graph is wired.
    Raises _Refused for a user the tenant does not have or an id and a UPN of two users."""
    if deps.graph is None:
        return None
    try:
        user = await deps.graph.get_user(request.user_id or str(request.user_principal_name))
    except PermanentError as exc:
        if exc.status == 404:
            raise _Refused(f"no such user in the tenant: {request.user_key}") from None
        raise
    fields = resolved_user_fields(user)
    if request.user_id and request.user_principal_name and fields["user_principal_name"] != request.user_principal_name:
        raise _Refused(f"user_id and user_principal_name name different users ({request.user_id} is "
                       f"{fields['user_principal_name'] or 'another user'}, not {request.user_principal_name})")
    return fields


async def submit(deps: Deps, request: IncidentRequest, correlation_id: str | None = None, *,
                 via: str = "internal", submitter: Principal | None = None) -> IntakeResult:
    """``via``: ``http`` / ``queue`` for what a caller wrote, ``internal`` for the normalizers'
    requests (streams, poller, ``responder ingest``); ``submitter``: the validated caller.
    Intake is on the way from the alert to the password reset: its Graph reads go before the later
    steps' at a throttled service, after the snapshots' and resets' (shared/priority.py)."""
    async with deps.intake_slot():  # at most INTAKE_CONCURRENCY at once: the first resets keep the CPU
        with priority(Priority.INTAKE, time.time()):
            return await _submit(deps, request, correlation_id, via=via, submitter=submitter)


async def _submit(deps: Deps, request: IncidentRequest, correlation_id: str | None, *,
                  via: str, submitter: Principal | None) -> IntakeResult:
    ledger, settings = deps.ledger, deps.settings
    correlation_id = correlation_id or new_correlation_id()
    refused = refusal(request, settings, deps.clock(), via)
    if refused is None:
        try:
            resolved = await _resolve(deps, request)
        except _Refused as exc:
            refused = str(exc)
    if refused is not None:
        logger.warning("[incident=- step=intake corr=%s] refused: %s", correlation_id, refused)
        return IntakeResult("refused", None, refused)
    keys = request_keys(request, resolved)
    for _ in range(5):
        now = deps.clock()
        incident = None
        existing = None
        for index, key in enumerate(keys):  # the same user under each key it is known by
            found = await ledger.get_open(key)
            if index == 0:
                existing = found
            if found is None or (incident is not None and found[0]["incident_id"] == incident["incident_id"]):
                continue
            other = await ledger.get_incident(found[0]["incident_id"])
            if other is not None and (incident is None or other.get("created_at", "") > incident.get("created_at", "")):
                incident = other
        decision = decide_intake(request, settings, now, existing=incident)
        if decision.action == "ignore":
            logger.info("[incident=- step=intake corr=%s] ignored: %s", correlation_id, decision.reason)
            return IntakeResult("ignored", None, decision.reason)
        if decision.action == "attach" and incident is not None:
            return await _attach(deps, incident, request, correlation_id)

        row = _incident_row(request, resolved, keys[0], correlation_id, now, decision.mode, settings.playbook_steps,
                            via, submitter)
        protection = await protection_gate.assess(deps.graph, settings, now, row) if resolved and deps.graph else None
        row.update(_protection_fields(protection))
        incident_id = row["incident_id"]
        log = incident_log(logger, incident_id, "intake", correlation_id)
        if not await ledger.claim_open(keys[0], incident_id, row["created_at"], existing[1] if existing else None):
            continue  # another alert for this user won the race: loop and attach to it
        held_reason = decision.reason if decision.state == IncidentState.HELD else ""
        reservation = None
        if not held_reason:
            reservation = await ledger.reserve_incident(
                now, window_minutes=settings.storm_window_minutes, threshold=settings.storm_threshold,
                source=request.source, source_quota=settings.storm_source_quota)
            if not reservation.granted:
                held_reason = reservation.reason
                if reservation.tripped_now:
                    log.error("STORM BREAKER TRIPPED: %s. New incidents are held until an operator resets it "
                              "(responder storm reset).", reservation.reason)
        if held_reason:
            row.update(state=IncidentState.HELD, held_reason=held_reason, held_at=row["created_at"],
                       approvals_required=max(1, int(row["approvals_required"])))
        await ledger.create_incident(row)
        await index_user_keys(ledger, keys[1:], incident_id, row["created_at"])
        summary = protection.summary if protection else row["protection"]
        if held_reason:
            log.warning("incident held: %s (%s)", held_reason, summary)
            # One SOC mail per held incident, with its console link; a storm is one event (shared/notify.py).
            if reservation is None or reservation.granted:
                await notify_held(deps, row)
            elif reservation.tripped_now:
                await notify_storm(deps, row)
            return IntakeResult("held", incident_id, held_reason, summary)
        await enqueue_step(deps, incident_id, first_step(settings.playbook_steps), keys[0], correlation_id)
        await ledger.update_incident(incident_id, {"state": IncidentState.QUEUED})
        log.info("incident created for %s from %s (%s, %s); first step %s enqueued", keys[0], request.source,
                 request.risk_level, summary, settings.playbook_steps[0])
        return IntakeResult("created", incident_id, "", summary)
    raise RuntimeError("could not create or attach an incident after repeated races")


def request_keys(request: IncidentRequest, resolved: dict[str, Any] | None = None) -> list[str]:
    """Every key the user is known by, the index key first: the resolved object id when Graph
    resolved the user, else the request's own key."""
    keys = [resolved["user_id"]] if resolved else [request.user_key]
    for key in (resolved or {}).get("user_principal_name"), request.user_id, request.user_principal_name:
        if key and key.lower() not in keys:
            keys.append(key.lower())
    return keys


def _incident_row(request: IncidentRequest, resolved: dict[str, Any] | None, user_key: str, correlation_id: str,
                  now: Any, mode: str, order: tuple[str, ...], via: str, submitter: Principal | None) -> dict[str, Any]:
    who = submitter.record() if submitter else {}
    row: dict[str, Any] = {
        "incident_id": new_incident_id(),
        "user_key": user_key,
        "user_id": request.user_id or "",
        "user_principal_name": request.user_principal_name or "",
        "source": request.source,
        "risk_level": request.risk_level,
        "alert_ids": ",".join(request.alert_ids),
        "detected_at": request.detected_at,
        "reason": request.reason,
        # "new" until the first step is enqueued; a redelivered alert re-enqueues it.
        "state": IncidentState.NEW,
        "mode": mode,
        "held_reason": "",
        "playbook": ",".join(order),
        "current_step": order[0],
        "correlation_id": correlation_id,
        "created_at": iso(now),
        "updated_at": iso(now),
        "submitted_via": via,
        "submitted_by_oid": who.get("object_id", ""),
        "submitted_by_upn": who.get("upn", ""),
        "submitted_by_kind": who.get("kind", ""),
        "approvals": "[]",
    }
    if resolved:
        row.update(resolved)
    return row


def _protection_fields(protection: Protection | None) -> dict[str, Any]:
    if protection is None:  # no Graph here (responder ingest): the runner's gate decides before any change
        return {"protected": "unknown", "approvals_required": 1,
                "protection": "protected: not assessed yet (no Graph at intake); checked before any change"}
    return {"protected": protection.protected, "approvals_required": protection.approvals_required,
            "protection": protection.summary[:1000]}


async def _attach(deps: Deps, incident: dict[str, Any], request: IncidentRequest, correlation_id: str) -> IntakeResult:
    incident_id = incident["incident_id"]
    log = incident_log(logger, incident_id, "intake", correlation_id)
    known = [a for a in (incident.get("alert_ids") or "").split(",") if a]
    merged = list(dict.fromkeys(known + list(request.alert_ids)))
    if merged != known:
        await deps.ledger.update_incident(incident_id, {"alert_ids": ",".join(merged)[:30000]})
        log.info("alert attached to open incident (%d alert ids)", len(merged))
    else:
        log.info("duplicate alert for open incident; nothing new")
    if incident.get("state") == IncidentState.NEW:
        order = incident_order(incident, deps.settings.playbook_steps)
        await enqueue_step(deps, incident_id, first_step(order), incident["user_key"], incident.get("correlation_id") or correlation_id)
        await deps.ledger.update_incident(incident_id, {"state": IncidentState.QUEUED})
        log.info("first step re-enqueued (the previous attempt stopped before enqueueing it)")
    return IntakeResult("attached", incident_id, "", str(incident.get("protection") or ""))
