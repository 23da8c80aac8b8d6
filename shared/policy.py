"""Policy gates (pure): what happens to an incident request before any step runs.

- dedupe: one open-or-recent incident per user (found by object id or UPN, whichever key the
  source used): a second alert attaches to an open incident inside the open-incident window;
  after an incident closed, only a signal newer than the close opens a new one, and the
  responder's own confirmCompromised coming back (riskDetail / riskEventType
  adminConfirmedUserCompromised, for a user it confirmed) opens nothing;
- mode: ``approval`` holds everything, ``dry-run`` runs steps that only record what they
  would do, ``auto`` runs;
- storm breaker: more than STORM_THRESHOLD new incidents inside STORM_WINDOW_MINUTES and
  new incidents are held for a human (the operator is told once per window);
- protected accounts (explicit list, members of PROTECTED_GROUP_ID, holders of an active or
  eligible directory role) and synced users under SYNCED_USER_POLICY=hold are held before
  the first step (``gate_reason``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from .model import RISK_LEVELS, IncidentRequest
from .settings import Settings
from .states import TERMINAL_INCIDENT_STATES, IncidentState
from .timestamps import parse_timestamp

_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3}


def risk_passes(level: str, minimum: str) -> bool:
    """``unknown`` passes only a threshold of none/unknown: never auto-act on a guess."""
    if level == "unknown":
        return minimum in ("none", "unknown")
    if minimum == "unknown":
        return True
    return _RANK[level] >= _RANK[minimum]


@dataclass(frozen=True)
class IntakeDecision:
    action: str  # "ignore" | "attach" | "new"
    state: IncidentState | None = None  # for new: queued | held
    mode: str = ""  # for new: "auto" | "dry-run"
    reason: str = ""


def within_window(created_at: str, now: datetime, hours: int) -> bool:
    try:
        created = parse_timestamp(created_at)
    except ValueError:
        return False
    return now - created <= timedelta(hours=hours)


OWN_CONFIRMATION = "adminConfirmedUserCompromised"


def _after(value: str, mark: str) -> bool:
    try:
        return parse_timestamp(value) > parse_timestamp(mark)
    except ValueError:
        return True  # an unreadable time is not evidence of an echo


def decide_intake(
    request: IncidentRequest,
    settings: Settings,
    now: datetime,
    open_incident_created_at: str | None,
    recent_new_incidents: int,
    existing: dict[str, Any] | None = None,
) -> IntakeDecision:
    """``existing``: the user's latest incident (state, created_at, finished_at, risk_confirmed_at), if any."""
    if request.source != "manual" and request.source != "http" and not risk_passes(request.risk_level, settings.min_risk_level):
        return IntakeDecision("ignore", reason=f"risk {request.risk_level} below MIN_RISK_LEVEL {settings.min_risk_level}")
    if existing and existing.get("risk_confirmed_at") and request.risk_detail == OWN_CONFIRMATION:
        return IntakeDecision("ignore", reason="the responder's own confirmCompromised for this user, not a new signal")
    if existing and existing.get("state") in TERMINAL_INCIDENT_STATES:
        closed = existing.get("finished_at") or existing.get("updated_at") or existing.get("created_at") or ""
        if closed and not _after(request.detected_at, closed):
            return IntakeDecision("attach", reason=f"signal from before the close ({closed}) of the user's last incident")
        # a genuinely new signal after the close: a new incident (below)
    elif open_incident_created_at and within_window(open_incident_created_at, now, settings.open_incident_window_hours):
        return IntakeDecision("attach", reason="open incident for this user")
    mode = "dry-run" if settings.mode == "dry-run" else "auto"
    if settings.mode == "approval":
        return IntakeDecision("new", IncidentState.HELD, mode, "RESPONDER_MODE=approval: every incident waits for approval")
    if recent_new_incidents >= settings.storm_threshold:
        return IntakeDecision(
            "new",
            IncidentState.HELD,
            mode,
            f"storm breaker: {recent_new_incidents} new incidents within {settings.storm_window_minutes} min "
            f"(threshold {settings.storm_threshold})",
        )
    return IntakeDecision("new", IncidentState.QUEUED, mode, "")


def gate_reason(settings: Settings, incident: dict, protected_group_hit: bool) -> str | None:
    """Why the first step must not run without approval (protected accounts, synced-user policy), or None."""
    ids = {str(incident.get("user_id") or "").lower(), str(incident.get("user_principal_name") or "").lower()}
    if ids & settings.protected_users:
        return "protected account (PROTECTED_USERS): never auto-remediated; approve to run"
    if protected_group_hit:
        return "protected account (member of PROTECTED_GROUP_ID): never auto-remediated; approve to run"
    if incident.get("on_prem_synced") and settings.synced_user_policy == "hold":
        return "user is synced from on-premises AD and SYNCED_USER_POLICY=hold: a cloud reset may not write back"
    return None


def privileged_reason(roles: Sequence[str], eligible_roles: Sequence[str]) -> str | None:
    """Why a directory-role holder (active or PIM-eligible) is held for approval, or None."""
    if not roles and not eligible_roles:
        return None
    held = list(roles) + [f"{r} (eligible)" for r in eligible_roles]
    return (f"privileged user: holds directory role(s) {', '.join(held)}; administrators are never "
            "auto-remediated (their password reset also needs a higher role than the app has); approve to run")


assert set(_RANK) | {"unknown"} == set(RISK_LEVELS)
