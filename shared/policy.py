"""Policy gates (pure): what happens to an incident request before any step runs.

- refusals (``refusal``): a caller claiming a stream source, a ``detected_at`` in the future
  or older than LOOKBACK_DAYS;
- dedupe: one incident per user (found by the resolved object id or the UPN): a second alert
  attaches only to an incident that is not over; after an incident ended, only a signal newer
  than its end opens a new one, and the responder's own confirmCompromised coming back
  (riskDetail / riskEventType adminConfirmedUserCompromised, for a user it confirmed) opens nothing;
- mode: ``approval`` holds everything, ``dry-run`` runs steps that only record what they
  would do, ``auto`` runs (the storm breaker's reservation is shared/storm.py);
- protection (``assess_protection``): explicitly protected accounts (PROTECTED_USERS, members of
  PROTECTED_GROUP_ID) and holders of an active or eligible directory role need two different
  approvers before any change; synced users under SYNCED_USER_POLICY=hold need one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

from .model import RISK_LEVELS, SOURCES, IncidentRequest
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


OWN_CONFIRMATION = "adminConfirmedUserCompromised"
# Stream sources are set by the normalizers from what Microsoft's services sent; a person or a
# producer on the alerts queue or POST /api/incidents names itself manual or http.
CALLER_SOURCES = ("manual", "http")
STREAM_SOURCES = tuple(s for s in SOURCES if s not in CALLER_SOURCES)
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _after(value: str, mark: str) -> bool:
    try:
        return parse_timestamp(value) > parse_timestamp(mark)
    except ValueError:
        return True  # an unreadable time is not evidence of an echo


def refusal(request: IncidentRequest, settings: Settings, now: datetime, via: str) -> str | None:
    """Why a request is refused before anything is looked up, or None.

    ``via``: ``http`` / ``queue`` for requests a caller wrote (they may not claim a stream source
    or Identity Protection's riskDetail), anything else for the normalizers' own requests.
    ``detected_at`` must be no later than now plus the clock skew and no older than LOOKBACK_DAYS:
    it is the cut-off enforce-mfa may use, and "0001-01-01" would make every method look new."""
    if via in ("http", "queue"):
        if request.source in STREAM_SOURCES:
            return f"{via} callers may not claim the stream source {request.source} (manual or http)"
        if request.risk_detail:
            return "risk_detail is set by the stream normalizers only, not by callers"
    try:
        detected = parse_timestamp(request.detected_at)
    except ValueError:
        return "detected_at is not an ISO 8601 timestamp"
    if detected > now + MAX_CLOCK_SKEW:
        return f"detected_at {request.detected_at} is in the future (beyond {int(MAX_CLOCK_SKEW.total_seconds() // 60)} min of clock skew)"
    if detected < now - timedelta(days=settings.lookback_days):
        return f"detected_at {request.detected_at} is older than LOOKBACK_DAYS ({settings.lookback_days} days)"
    return None


def decide_intake(request: IncidentRequest, settings: Settings, now: datetime,
                  existing: dict[str, Any] | None = None) -> IntakeDecision:
    """``existing``: the user's latest incident (state, created_at, finished_at, risk_confirmed_at),
    found by the resolved object id or the UPN. Alerts attach only to an incident that is not over;
    after an incident ended, an older signal is ignored and a newer one opens a new incident."""
    if request.source not in CALLER_SOURCES and not risk_passes(request.risk_level, settings.min_risk_level):
        return IntakeDecision("ignore", reason=f"risk {request.risk_level} below MIN_RISK_LEVEL {settings.min_risk_level}")
    if existing and existing.get("risk_confirmed_at") and request.risk_detail == OWN_CONFIRMATION:
        return IntakeDecision("ignore", reason="the responder's own confirmCompromised for this user, not a new signal")
    if existing and existing.get("state") in TERMINAL_INCIDENT_STATES:
        closed = existing.get("finished_at") or existing.get("updated_at") or existing.get("created_at") or ""
        if closed and not _after(request.detected_at, closed):
            return IntakeDecision("ignore", reason=f"signal from before the end ({closed}) of the user's last incident "
                                                   f"{existing.get('incident_id', '')} ({existing.get('state')})")
        # a genuinely new signal after the close: a new incident (below)
    elif existing:
        return IntakeDecision("attach", reason="open incident for this user")
    mode = "dry-run" if settings.mode == "dry-run" else "auto"
    if settings.mode == "approval":
        return IntakeDecision("new", IncidentState.HELD, mode, "RESPONDER_MODE=approval: every incident waits for approval")
    return IntakeDecision("new", IncidentState.QUEUED, mode, "")


@dataclass
class GateFacts:
    """What the protection lookups (shared/gate.py) found about one user."""

    in_group: bool = False
    roles: list[str] = field(default_factory=list)  # active directory roles (display names)
    eligible: list[str] = field(default_factory=list)  # PIM-eligible roles
    note: str = ""  # what could not be read
    lookup_failed: str = ""  # the active-role lookup failed: protected until a person says otherwise (fail closed)
    eligible_read: bool = False  # eligibility needs the object id: read later when the key was a UPN


#: A protected or privileged account is changed only after two different people approved.
PROTECTED_APPROVALS = 2


@dataclass(frozen=True)
class Protection:
    """The gate's verdict on one user (pure, from settings, the incident and the lookups).

    ``protected``: "yes" (PROTECTED_USERS, PROTECTED_GROUP_ID, an active or eligible directory
    role), "unknown" (the role lookup failed: treated as yes) or "no". ``approvals_required``:
    2 for a protected account, 1 when another rule holds it (SYNCED_USER_POLICY=hold), else 0.
    ``contain``: revoke the sessions while it is held (role holders and unknowns; never the
    explicitly protected break-glass accounts, which are not touched at all)."""

    protected: str
    reason: str = ""
    hold_reason: str | None = None
    approvals_required: int = 0
    contain: bool = False

    @property
    def summary(self) -> str:
        """What the operator sees: "protected: yes, because ..."."""
        if self.protected == "no":
            return "protected: no" + (f" (held: {self.hold_reason})" if self.hold_reason else "")
        return f"protected: {self.protected}, because {self.reason}"

    def hold(self, approvals: int) -> str | None:
        """Why the incident must wait, given ``approvals`` distinct approvers so far, or None."""
        if approvals >= self.approvals_required or self.hold_reason is None:
            return None
        needed = "two different people" if self.approvals_required > 1 else "an operator"
        return f"{self.hold_reason}; needs approval by {needed} ({approvals} of {self.approvals_required} so far)"


def approvals_of(incident: dict[str, Any]) -> list[dict[str, str]]:
    """The incident's approvals (``approvals``: a JSON list of {object_id, upn, at}), one per person."""
    raw = incident.get("approvals")
    try:
        listed = json.loads(raw) if isinstance(raw, str) and raw else (raw if isinstance(raw, list) else [])
    except ValueError:
        return []
    seen: dict[str, dict[str, str]] = {}
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and entry.get("object_id") and entry["object_id"] not in seen:
            seen[str(entry["object_id"])] = {k: str(v) for k, v in entry.items()}
    return list(seen.values())


def gate_reason(settings: Settings, incident: dict, protected_group_hit: bool) -> str | None:
    """Why the incident must not run without approval: protected accounts, synced-user policy; or None."""
    ids = {str(incident.get("user_id") or "").lower(), str(incident.get("user_principal_name") or "").lower()}
    if ids & settings.protected_users:
        return "protected account (PROTECTED_USERS): never auto-remediated"
    if protected_group_hit:
        return "protected account (member of PROTECTED_GROUP_ID): never auto-remediated"
    if incident.get("on_prem_synced") and settings.synced_user_policy == "hold":
        return "user is synced from on-premises AD and SYNCED_USER_POLICY=hold: a cloud reset may not write back"
    return None


def privileged_reason(roles: Sequence[str], eligible_roles: Sequence[str]) -> str | None:
    """Why a directory-role holder (active or PIM-eligible) is held for approval, or None."""
    if not roles and not eligible_roles:
        return None
    held = list(roles) + [f"{r} (eligible)" for r in eligible_roles]
    return (f"privileged user: holds directory role(s) {', '.join(held)}; administrators are never "
            "auto-remediated (their password reset also needs a higher role than the app has)")


def assess_protection(settings: Settings, incident: dict[str, Any], facts: GateFacts) -> Protection:
    """Is the user protected, why, and how many approvals a change needs."""
    ids = {str(incident.get("user_id") or "").lower(), str(incident.get("user_principal_name") or "").lower()}
    if ids & settings.protected_users:
        return Protection("yes", "the account is named in PROTECTED_USERS (break-glass)",
                          gate_reason(settings, incident, facts.in_group), PROTECTED_APPROVALS)
    if facts.in_group:
        return Protection("yes", "the account is a member of PROTECTED_GROUP_ID",
                          gate_reason(settings, incident, True), PROTECTED_APPROVALS)
    privileged = privileged_reason(facts.roles, facts.eligible)
    if privileged:
        held = facts.roles + [f"{r} (eligible)" for r in facts.eligible]
        return Protection("yes", f"it holds the directory role(s) {', '.join(held)}", privileged, PROTECTED_APPROVALS,
                          contain=True)
    if facts.lookup_failed:
        return Protection("unknown", facts.lookup_failed,
                          f"{facts.lookup_failed}: held until people confirm the user is not an administrator",
                          PROTECTED_APPROVALS, contain=True)
    other = gate_reason(settings, incident, False)
    return Protection("no", "", other, 1 if other else 0)


assert set(_RANK) | {"unknown"} == set(RISK_LEVELS)
