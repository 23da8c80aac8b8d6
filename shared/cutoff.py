"""The cut-off: the instant after which a change to the account is taken to be the attacker's (pure).

One rule for every step that dates what it finds (enforce-mfa's authentication methods,
clean-mailbox's trusted senders, remove-delegates' mailbox rights, revoke-app-consent's
consent grants and app role assignments), set by AUTH_METHOD_CUTOFF (the name is kept from
issue 12, which introduced it for methods; README, "Attacker methods and the cut-off"):

- ``first-risk-detection`` (default): the earliest Identity Protection detection the snapshot
  found for the user, else the alert's time;
- ``first-risky-sign-in``: the earliest detection of a sign-in;
- ``lookback``: the alert's time minus AUTH_METHOD_LOOKBACK_HOURS.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .timestamps import parse_timestamp


def cutoff(settings: Any, incident: dict[str, Any], now: datetime) -> dict[str, str]:
    """``{"rule", "at", "basis"}``: the cut-off for this incident, per AUTH_METHOD_CUTOFF."""
    detected = incident.get("detected_at") or now.isoformat()
    rule = settings.auth_method_cutoff
    if rule == "lookback":
        base = min(parse_timestamp(detected), now)
        at = (base - timedelta(hours=settings.auth_method_lookback_hours)).isoformat().replace("+00:00", "Z")
        return {"rule": rule, "at": at, "basis": f"alert time minus {settings.auth_method_lookback_hours} h"}
    if rule == "first-risky-sign-in" and incident.get("first_risky_signin_at"):
        return {"rule": rule, "at": incident["first_risky_signin_at"], "basis": "earliest risky sign-in"}
    if incident.get("first_risk_at"):
        return {"rule": rule, "at": incident["first_risk_at"], "basis": "earliest risk detection"}
    return {"rule": rule, "at": detected, "basis": "alert time (no risk detection found)"}


def after_cutoff(when: str | datetime | None, cut: str) -> bool | None:
    """Is ``when`` at or after the cut-off ``cut``? None when ``when`` is missing or unreadable."""
    if when is None or when == "":
        return None
    try:
        moment = when if isinstance(when, datetime) else parse_timestamp(when)
    except ValueError:
        return None
    return moment >= parse_timestamp(cut)
