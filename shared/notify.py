"""SOC mails beside the close step's summary: an incident was held (with a link to its console
page), failed, or needs a manual action. One mail per event.

Each event has a key on the incident (``held:<held_at>``, ``failed:<step>``, ``action:<step>``,
``storm:<tripped_at>``) recorded in the incident row's ``notices`` (JSON). The key is claimed with an
ETag-conditional write *before* the mail is sent and marked ``sent`` (or ``failed: ...``) after it, so
two workers, a redelivered message or a re-run step never mail the same event twice. The price of
"at most once": a worker that stops between the claim and the send loses that one mail; the notice
then stays ``sending`` on the incident (``responder status``, the console), and the console and the
close mail still show the incident. A failed mail is recorded, never raised: a notice never stops
intake or a step.

A storm is one event: incidents held because the storm breaker is tripped are not mailed one by one;
the intake that tripped the breaker mails once (``storm:``).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from .console.links import console_root, incident_link
from .deps import Deps
from .errors import ConflictError, PermanentError, TransientError, safe_reason
from .ledger_protocol import load_json
from .policy import approvals_of
from .timestamps import iso
from .validation import clean_text

logger = logging.getLogger(__name__)

__all__ = ["notify", "notify_held", "notify_failed", "notify_action", "notify_storm", "SENT", "SENDING"]

SENT, SENDING = "sent", "sending"
_ROUNDS = 6
PREFIX = "[Breach Responder]"


def _who(incident: dict[str, Any]) -> str:
    return clean_text(incident.get("user_principal_name") or incident.get("user_id") or incident.get("user_key"), 256)


def _footer(deps: Deps, incident_id: str) -> list[str]:
    link = incident_link(deps.settings, incident_id)
    return ["", f"Console: {link}" if link else f"Status: responder status {incident_id}"]


async def notify(deps: Deps, incident_id: str, event: str, subject: str, lines: list[str]) -> str:
    """Mail the SOC once for ``event`` of this incident. Returns what happened: sent | already |
    not-configured | not-found | failed: ...; never raises for a mail or storage conflict."""
    settings = deps.settings
    if not (settings.soc_mailbox and settings.notify_sender) or deps.graph is None:
        return "not-configured"
    for _ in range(_ROUNDS):
        incident = await deps.ledger.get_incident(incident_id)
        if incident is None:
            return "not-found"
        notices = load_json(incident.get("notices"), {}) or {}
        if event in notices:
            return "already"
        notices[event] = {"state": SENDING, "at": iso(deps.clock())}
        try:
            await deps.ledger.update_incident(incident_id, {"notices": json.dumps(notices)}, etag=incident.get("_etag"))
        except ConflictError:
            continue
        break
    else:
        return "failed: the incident kept changing"
    text = "\n".join(lines + _footer(deps, incident_id))
    try:
        await deps.graph.send_mail(settings.notify_sender, settings.soc_mailbox, subject, text)
        outcome = SENT
    except (PermanentError, TransientError) as exc:
        outcome = f"failed: {safe_reason(exc)[:200]}"
        logger.error("[incident=%s step=notify corr=-] SOC mail for %s failed: %s", incident_id, event, outcome)
    await _mark(deps, incident_id, event, outcome)
    logger.info("[incident=%s step=notify corr=-] SOC mail for %s: %s", incident_id, event, outcome)
    return outcome


async def _mark(deps: Deps, incident_id: str, event: str, outcome: str) -> None:
    for _ in range(_ROUNDS):
        incident = await deps.ledger.get_incident(incident_id)
        if incident is None:
            return
        notices = load_json(incident.get("notices"), {}) or {}
        notices[event] = {**notices.get(event, {}), "state": outcome, "done_at": iso(deps.clock())}
        try:
            await deps.ledger.update_incident(incident_id, {"notices": json.dumps(notices)}, etag=incident.get("_etag"))
            return
        except ConflictError:
            continue


async def notify_held(deps: Deps, incident: dict[str, Any]) -> str:
    """A held incident waits for operators: why, who it is, what approving it takes, and the link."""
    incident_id = incident["incident_id"]
    who = _who(incident)
    approvals = approvals_of(incident)
    needed = max(1, int(incident.get("approvals_required") or 1))
    lines = [
        f"Incident {incident_id} for {who} is HELD: nothing changes in the tenant until it is approved.",
        f"Why held: {clean_text(incident.get('held_reason'), 500) or 'unknown'}",
        clean_text(incident.get("protection"), 500) or "protected: not assessed yet",
        f"Approvals: {len(approvals)} of {needed}"
        + (f" ({', '.join(clean_text(a.get('upn'), 120) for a in approvals)})" if approvals else ""),
        f"Alert: {clean_text(incident.get('reason'), 500) or '-'} (source {clean_text(incident.get('source'), 40)}, "
        f"risk {clean_text(incident.get('risk_level'), 20)}, alert ids {clean_text(incident.get('alert_ids'), 300) or '-'})",
        f"Approve or reject it in the console, or: responder approve {incident_id} / responder reject {incident_id} --reason ...",
        f"Unless someone decides, it expires after HOLD_TTL_HOURS ({deps.settings.hold_ttl_hours} h) without changes.",
    ]
    held_at = str(incident.get("held_at") or incident.get("created_at") or "")
    return await notify(deps, incident_id, f"held:{held_at}", f"{PREFIX} HELD for approval: {who} ({incident_id})", lines)


async def notify_storm(deps: Deps, incident: dict[str, Any]) -> str:
    """The storm breaker tripped (mailed once, by the intake that tripped it)."""
    root = console_root(deps.settings)
    lines = [
        "The storm breaker TRIPPED: " + (clean_text(incident.get("held_reason"), 500) or "too many new incidents"),
        f"Every new incident is held (no change in the tenant) until an operator resets it: responder storm reset "
        f"(or POST /api/storm/reset). The first held incident is {incident['incident_id']} for {_who(incident)}.",
        f"Held incidents: {root}?state=held" if root else "Held incidents: responder status",
    ]
    return await notify(deps, incident["incident_id"], f"storm:{incident.get('held_at') or ''}",
                        f"{PREFIX} STORM BREAKER TRIPPED: new incidents are held", lines)


async def notify_failed(deps: Deps, incident_id: str) -> str:
    """An incident stopped: at which step, why, and that the SOC must finish by hand."""
    incident = await deps.ledger.get_incident(incident_id)
    if incident is None:
        return "not-found"
    who, step = _who(incident), clean_text(incident.get("stopped_at"), 60) or "?"
    lines = [
        f"Incident {incident_id} for {who} FAILED at step {step}; the steps after it did not run.",
        f"Reason: {clean_text(incident.get('stop_reason'), 800) or 'unknown'}",
        "What ran before it is in the incident's ledger; finish the containment by hand (or fix the cause and "
        "submit a new incident).",
    ]
    return await notify(deps, incident_id, f"failed:{step}", f"{PREFIX} FAILED: {who} ({incident_id}) at {step}", lines)


async def notify_action(deps: Deps, incident_id: str, step: str, action: str) -> str:
    """A step found something only a person can do (an on-premises reset, a pass not delivered ...)."""
    incident = await deps.ledger.get_incident(incident_id)
    if incident is None:
        return "not-found"
    who = _who(incident)
    text = clean_text(action, 800)
    lines = [f"Incident {incident_id} for {who}: ACTION REQUIRED (found by step {step})", text,
             "The playbook goes on; the close mail repeats this with everything else to review."]
    headline = text.split(":")[0][:80] or "manual action"
    return await notify(deps, incident_id, f"action:{step}", f"{PREFIX} ACTION REQUIRED: {headline}: {who} ({incident_id})",
                        lines)
