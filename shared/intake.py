"""Intake: turn an IncidentRequest into a new incident (or attach it to an open one).

One open-or-recent incident per user, whatever key the source used: the index
(``userincidents``) has a row per key (object id, UPN) pointing at the user's latest incident;
intake looks under every key the request carries, and the runner adds the missing key when it
resolves the user (``index_user_keys``), so an incident opened from a UPN is found by the
poller's object id afterwards.

Order of writes, chosen so a crash anywhere leaves nothing lost and nothing doubled:
1. claim the user's open-incident index row (conditional create/replace), then the alias row;
2. write the incident row in state ``new``;
3. enqueue the first step, then mark the incident ``queued``.
A redelivered alert finds the index row and the incident: it attaches (a no-op for alert
ids already present) and re-enqueues the first step if the incident is still ``new``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .deps import Deps
from .logs import IncidentLog, incident_log
from .model import IncidentRequest, new_correlation_id, new_incident_id
from .playbook import first_step, incident_order
from .policy import decide_intake
from .states import IncidentState
from .steps.base import enqueue_step
from .timestamps import iso
from .userindex import index_user_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeResult:
    outcome: str  # "created" | "held" | "attached" | "ignored"
    incident_id: str | None
    reason: str = ""


async def submit(deps: Deps, request: IncidentRequest, correlation_id: str | None = None) -> IntakeResult:
    ledger, settings = deps.ledger, deps.settings
    correlation_id = correlation_id or new_correlation_id()
    keys = request_keys(request)
    for _ in range(5):
        now = deps.clock()
        existing = await ledger.get_open(request.user_key)
        open_created = None
        incident = None
        if existing is not None:
            incident = await ledger.get_incident(existing[0]["incident_id"])
            open_created = existing[0].get("created_at") if incident is not None else None
        for alias in keys[1:]:  # the same user under its other key (an incident opened from a UPN)
            found = await ledger.get_open(alias)
            if found is None or (incident is not None and found[0]["incident_id"] == incident["incident_id"]):
                continue
            other = await ledger.get_incident(found[0]["incident_id"])
            if other is not None and (incident is None or other.get("created_at", "") > incident.get("created_at", "")):
                incident, open_created = other, found[0].get("created_at")
        storm_count = 0
        if settings.mode == "auto" or settings.mode == "dry-run":
            storm_count = await ledger.count_recent_incidents(now, settings.storm_window_minutes, settings.storm_threshold)
        decision = decide_intake(request, settings, now, open_created, storm_count, existing=incident)
        if decision.action == "ignore":
            logger.info("[incident=- step=intake corr=%s] ignored: %s", correlation_id, decision.reason)
            return IntakeResult("ignored", None, decision.reason)
        if decision.action == "attach" and incident is not None:
            return await _attach(deps, incident, request, correlation_id)

        incident_id = new_incident_id()
        log = incident_log(logger, incident_id, "intake", correlation_id)
        if not await ledger.claim_open(request.user_key, incident_id, iso(now), existing[1] if existing else None):
            continue  # another alert for this user won the race: loop and attach to it
        order = settings.playbook_steps
        row = {
            "incident_id": incident_id,
            "user_key": request.user_key,
            "user_id": request.user_id or "",
            "user_principal_name": request.user_principal_name or "",
            "source": request.source,
            "risk_level": request.risk_level,
            "alert_ids": ",".join(request.alert_ids),
            "detected_at": request.detected_at,
            "reason": request.reason,
            # "new" until the first step is enqueued; a redelivered alert re-enqueues it.
            "state": IncidentState.HELD if decision.state == IncidentState.HELD else IncidentState.NEW,
            "mode": decision.mode,
            "held_reason": decision.reason if decision.state == IncidentState.HELD else "",
            "playbook": ",".join(order),
            "current_step": order[0],
            "correlation_id": correlation_id,
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        await ledger.create_incident(row)
        await index_user_keys(ledger, keys[1:], incident_id, iso(now))
        await ledger.record_new_incident_for_storm(incident_id, now)
        if decision.state == IncidentState.HELD:
            log.warning("incident held: %s", decision.reason)
            if decision.reason.startswith("storm breaker"):
                await _tell_once_about_storm(deps, now, decision.reason, log)
            return IntakeResult("held", incident_id, decision.reason)
        await enqueue_step(deps, incident_id, first_step(order), request.user_key, correlation_id)
        await ledger.update_incident(incident_id, {"state": IncidentState.QUEUED})
        log.info("incident created for %s from %s (%s); first step %s enqueued", request.user_key, request.source, request.risk_level, order[0])
        return IntakeResult("created", incident_id)
    raise RuntimeError("could not create or attach an incident after repeated races")


def request_keys(request: IncidentRequest) -> list[str]:
    """Every key the request names the user by, the index key first."""
    keys = [request.user_key]
    if request.user_principal_name and request.user_principal_name.lower() not in keys:
        keys.append(request.user_principal_name.lower())
    return keys


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
    return IntakeResult("attached", incident_id)


async def _tell_once_about_storm(deps: Deps, now: datetime, reason: str, log: IncidentLog) -> None:
    window = deps.settings.storm_window_minutes
    bucket = now.strftime("%Y%m%d%H") + f"{(now.minute // window) * window:02d}"
    if await deps.ledger.mark_once("storm-breaker", bucket, {"reason": reason, "recorded_at": iso(now)}):
        log.error("STORM BREAKER TRIPPED: %s. New incidents are held; approve them with `responder approve`.", reason)


async def approve(deps: Deps, incident_id: str, approved_by: str = "operator") -> IntakeResult:
    """Release a held incident: mark approved and enqueue its first (or held) step."""
    incident = await deps.ledger.get_incident(incident_id)
    if incident is None:
        return IntakeResult("not-found", incident_id, "no such incident")
    if incident.get("state") != IncidentState.HELD:
        return IntakeResult("not-held", incident_id, f"incident is {incident.get('state')}, not held")
    order = incident_order(incident, deps.settings.playbook_steps)
    step = incident.get("current_step") or first_step(order)
    await deps.ledger.update_incident(
        incident_id,
        {"state": IncidentState.QUEUED, "approved": True, "approved_by": approved_by[:100], "approved_at": iso(deps.clock())},
        etag=incident.get("_etag"),
    )
    await enqueue_step(deps, incident_id, step, incident["user_key"], incident.get("correlation_id") or new_correlation_id())
    incident_log(logger, incident_id, "approve", incident.get("correlation_id", "-")).info("approved by %s; %s enqueued", approved_by[:100], step)
    return IntakeResult("approved", incident_id)
