"""Decisions on held incidents, each recorded with who made it: approve, reject, expire.

- ``approve``: the approver (a validated principal with ``Incident.Approve``) is added to the
  incident's ``approvals``. The submitter may never approve their own incident; a protected or
  privileged account needs two different approvers (``approvals_required``, set by the gate at
  intake and again before every write step). Once enough people approved, the incident is
  released: the held step is enqueued and the runner asks the gate again before each change.
- ``reject``: ends a held incident without any change in the tenant (state ``rejected``).
- ``expire_held``: a held incident nobody decided on within HOLD_TTL_HOURS ends as ``expired``
  (no change in the tenant) and the SOC is mailed; ``approve`` and ``reject`` expire an
  overdue incident instead of acting on it. The maintenance timer runs the sweep.

Every write is ETag-conditional on the incident row: two approvers at the same moment are
both recorded, and a decision never lands on an incident that changed state meanwhile.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .deps import Deps
from .errors import ConflictError, PermanentError, TransientError, safe_reason
from .logs import incident_log
from .model import new_correlation_id
from .playbook import first_step, incident_order
from .policy import approvals_of
from .principal import Principal
from .states import IncidentState
from .steps.base import Call, enqueue_step
from .timestamps import iso, parse_timestamp
from .validation import clean_text

logger = logging.getLogger(__name__)

__all__ = ["CALLS", "Decision", "approve", "expire_held", "overdue", "reject", "MAX_REJECT_REASON"]

MAX_REJECT_REASON = 500
_ROUNDS = 8
# What the expiry sweep calls (tools/gen_infra.py grants it: the hold_expiry component).
CALLS = (Call("graph", "POST /users/{sender}/sendMail (held incident expired)", "Mail.Send"),)


@dataclass(frozen=True)
class Decision:
    """What happened to one approve/reject call (``outcome``) and why (``reason``, safe to show).

    outcome: approved (released) | approval-recorded (more approvers needed) | rejected |
    not-found | not-held | forbidden (the submitter) | already-approved | expired."""

    outcome: str
    incident_id: str
    reason: str = ""
    approvals: list[dict[str, str]] = field(default_factory=list)
    approvals_required: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "incident_id": self.incident_id, "reason": self.reason}
        if self.approvals or self.approvals_required:
            out.update(approvals=self.approvals, approvals_required=self.approvals_required)
        return out


def overdue(incident: dict[str, Any], now: datetime, ttl_hours: int) -> bool:
    """A held incident older than HOLD_TTL_HOURS (from when it was held)."""
    if incident.get("state") != IncidentState.HELD:
        return False
    since = incident.get("held_at") or incident.get("updated_at") or incident.get("created_at") or ""
    try:
        return now - parse_timestamp(since) > timedelta(hours=ttl_hours)
    except ValueError:
        return True  # a held incident without a readable time: expire rather than keep it forever


async def _held(deps: Deps, incident_id: str) -> tuple[dict[str, Any], Decision | None]:
    """The incident (with its ETag) when a decision may be taken on it, else the Decision that says why
    not: no such incident, not held, or held too long (then it is expired here)."""
    incident = await deps.ledger.get_incident(incident_id)
    if incident is None:
        return {}, Decision("not-found", incident_id, "no such incident")
    if incident.get("state") != IncidentState.HELD:
        return incident, Decision("not-held", incident_id, f"incident is {incident.get('state')}, not held")
    if overdue(incident, deps.clock(), deps.settings.hold_ttl_hours):
        await _expire(deps, incident)
        return incident, Decision("expired", incident_id, f"held longer than HOLD_TTL_HOURS "
                                                          f"({deps.settings.hold_ttl_hours} h): expired without changes")
    return incident, None


async def approve(deps: Deps, incident_id: str, approver: Principal) -> Decision:
    """Record ``approver``'s approval; release the incident once it has enough approvers."""
    for _ in range(_ROUNDS):
        incident, undecidable = await _held(deps, incident_id)
        if undecidable is not None:
            return undecidable
        if incident.get("submitted_by_oid") and incident["submitted_by_oid"] == approver.object_id:
            return Decision("forbidden", incident_id, "the submitter of an incident cannot approve it")
        approvals = approvals_of(incident)
        required = max(1, int(incident.get("approvals_required") or 1))
        if any(a["object_id"] == approver.object_id for a in approvals):
            return Decision("already-approved", incident_id,
                            f"already approved by {approver.name}; it needs a different approver "
                            f"({len(approvals)} of {required})", approvals, required)
        now = iso(deps.clock())
        approvals.append({"object_id": approver.object_id, "upn": approver.name, "at": now})
        fields: dict[str, Any] = {"approvals": json.dumps(approvals), "approved_by": approver.name[:256]}
        released = len(approvals) >= required
        if released:
            fields.update(state=IncidentState.QUEUED, approved=True, approved_at=now)
        try:
            await deps.ledger.update_incident(incident_id, fields, etag=incident.get("_etag"))
        except ConflictError:
            continue  # another approver (or the sweeper) wrote in between: read again
        log = incident_log(logger, incident_id, "approve", incident.get("correlation_id") or "-")
        if not released:
            log.info("approval %d of %d recorded (%s); waiting for a different approver", len(approvals), required,
                     approver.object_id)
            return Decision("approval-recorded", incident_id,
                            f"approval {len(approvals)} of {required} recorded; a different approver must also approve",
                            approvals, required)
        order = incident_order(incident, deps.settings.playbook_steps)
        step = incident.get("current_step") or first_step(order)
        await enqueue_step(deps, incident_id, step, incident["user_key"], incident.get("correlation_id") or new_correlation_id())
        log.info("approved by %s (%d of %d); %s enqueued", approver.object_id, len(approvals), required, step)
        return Decision("approved", incident_id, "", approvals, required)
    raise TransientError(f"incident {incident_id} kept changing; try again")


async def reject(deps: Deps, incident_id: str, by: Principal, reason: str) -> Decision:
    """End a held incident without any change in the tenant."""
    text = clean_text(reason, MAX_REJECT_REASON)
    for _ in range(_ROUNDS):
        incident, undecidable = await _held(deps, incident_id)
        if undecidable is not None:
            return undecidable
        now = iso(deps.clock())
        try:
            await deps.ledger.update_incident(incident_id, {
                "state": IncidentState.REJECTED, "rejected_by_oid": by.object_id, "rejected_by_upn": by.name[:256],
                "rejected_at": now, "reject_reason": text, "finished_at": now,
            }, etag=incident.get("_etag"))
        except ConflictError:
            continue
        incident_log(logger, incident_id, "reject", incident.get("correlation_id") or "-").warning(
            "rejected by %s: nothing will be changed", by.object_id)
        return Decision("rejected", incident_id, text)
    raise TransientError(f"incident {incident_id} kept changing; try again")


async def _expire(deps: Deps, incident: dict[str, Any]) -> bool:
    """Held → expired (conditional), then the SOC mail. False when someone decided first."""
    now = iso(deps.clock())
    try:
        await deps.ledger.update_incident(incident["incident_id"], {
            "state": IncidentState.EXPIRED, "expired_at": now, "finished_at": now,
            "expiry_note": f"held longer than HOLD_TTL_HOURS ({deps.settings.hold_ttl_hours} h) without a decision",
        }, etag=incident.get("_etag"))
    except ConflictError:
        return False
    incident_log(logger, incident["incident_id"], "expire", incident.get("correlation_id") or "-").warning(
        "held incident expired after %d h without a decision; nothing was changed", deps.settings.hold_ttl_hours)
    await _mail_expiry(deps, {**incident, "state": IncidentState.EXPIRED, "expired_at": now})
    return True


async def _mail_expiry(deps: Deps, incident: dict[str, Any]) -> None:
    """Tell the SOC a held incident expired (once: ``expiry_mail`` records the outcome)."""
    settings = deps.settings
    if not (settings.soc_mailbox and settings.notify_sender) or deps.graph is None:
        note = "not sent: SOC_MAILBOX / NOTIFY_SENDER not set" if deps.graph is not None else "not sent: no Graph here"
        await deps.ledger.update_incident(incident["incident_id"], {"expiry_mail": note})
        return
    who = incident.get("user_principal_name") or incident.get("user_id") or incident.get("user_key")
    subject = f"[Breach Responder] HELD INCIDENT EXPIRED without a decision: {who} ({incident['incident_id']})"
    approvals = approvals_of(incident)
    text = "\n".join([
        f"Incident {incident['incident_id']} for {who} was held for approval and nobody approved or rejected it "
        f"within HOLD_TTL_HOURS ({settings.hold_ttl_hours} h). It has ended as EXPIRED; nothing was changed in the tenant.",
        f"Held because: {clean_text(incident.get('held_reason'), 500) or 'unknown'}",
        f"{clean_text(incident.get('protection'), 500)}",
        f"Approvals so far: {', '.join(a.get('upn', '?') for a in approvals) or 'none'} "
        f"(of {incident.get('approvals_required') or 1} needed)",
        f"Alert: {clean_text(incident.get('reason'), 500)} (source {incident.get('source')}, alert ids "
        f"{clean_text(incident.get('alert_ids'), 300) or 'none'})",
        "If the account is still at risk, submit a new incident.",
    ])
    try:
        await deps.graph.send_mail(settings.notify_sender, settings.soc_mailbox, subject, text)
        note = "sent"
    except (PermanentError, TransientError) as exc:
        note = f"failed: {safe_reason(exc)[:300]}"
        logger.error("[incident=%s step=expire corr=-] expiry mail failed: %s", incident["incident_id"], note)
    await deps.ledger.update_incident(incident["incident_id"], {"expiry_mail": note})


async def expire_held(deps: Deps, limit: int = 1000) -> dict[str, int]:
    """The sweep (maintenance timer): expire overdue held incidents; mail expiries not mailed yet."""
    stats = {"expired": 0, "mailed": 0}
    now = deps.clock()
    for incident in await deps.ledger.list_incidents(limit, state=IncidentState.HELD):
        if overdue(incident, now, deps.settings.hold_ttl_hours):
            fresh = await deps.ledger.get_incident(incident["incident_id"])  # with its ETag
            if fresh is not None and overdue(fresh, now, deps.settings.hold_ttl_hours) and await _expire(deps, fresh):
                stats["expired"] += 1
    for incident in await deps.ledger.list_incidents(limit, state=IncidentState.EXPIRED):
        if not incident.get("expiry_mail"):  # the worker stopped between the expiry and its mail
            await _mail_expiry(deps, incident)
            stats["mailed"] += 1
    return stats
