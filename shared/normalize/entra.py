"""Entra ID Protection records: diagnostic settings → Event Hub (and the Graph objects they mirror).

Shape: ``{"records": [{"time", "category", "operationName", "tenantId", "properties": {...}}]}``
(or one record, an array, JSON Lines from a storage-account export). Inside ``properties``
the records keep Graph's camelCase, so the same mapping serves Graph ``riskyUsers`` and
``riskDetections`` objects (graph.py calls ``identity_protection_signal``).

Mapping decisions
-----------------
* Categories: ``RiskyUsers`` (a riskyUser: ``properties.id`` is the user's object id) and
  ``UserRiskEvents`` (a riskDetection: ``properties.userId`` is the user; ``properties.id``
  is the detection id). Other Entra categories (SignInLogs, AuditLogs,
  RiskyServicePrincipals, ...) are ignored; unknown categories are rejected.
* User: object id (GUID) and/or ``userPrincipalName``. Neither → rejected ("names no user").
  A present but malformed id or UPN rejects the record (never half-trusted).
  A RiskyUsers record without ``id`` may name the user with ``userId``.
* riskState: ``atRisk`` counts; ``confirmedCompromised`` counts as **high** whatever the
  riskLevel says; ``remediated``, ``dismissed``, ``confirmedSafe`` and ``none`` are ignored.
  A missing or unrecognised state (``unknownFutureValue``) falls through to the level check.
* riskLevel: ``low`` / ``medium`` / ``high`` / ``none`` as-is; ``hidden`` (no P2 licence to
  see it), ``unknownFutureValue``, missing or other → ``unknown``, which only passes when
  ``min_risk_level="none"``. Level ``none`` never produces a request.
* Alert ids: risk detections carry their detection ``id`` (the key for
  ``GET identityProtection/riskDetections/{id}``). ``requestId`` / ``correlationId`` are
  sign-in identifiers, not alert ids, and are left out. RiskyUsers records carry none (their
  ``id`` is the user's own object id).
* detected_at: riskyUser ``riskLastUpdatedDateTime``; detection ``detectedDateTime``, then
  ``activityDateTime``, then ``lastUpdatedDateTime``; then the envelope ``time`` (which may
  be US-locale text, ``8/22/2022 6:07:16 PM``, read as UTC); then ``now``.
* risk_detail: the riskyUser's ``riskDetail`` or the detection's ``riskEventType`` (letters and digits
  only), so intake can tell the responder's own ``adminConfirmedUserCompromised`` from a new signal.
* Reason: ``Entra ID Protection: user risk high (atRisk)`` for a riskyUser,
  ``Entra ID Protection: risk detection maliciousIPAddress, high (atRisk)`` for a detection.
"""
from __future__ import annotations

from typing import Any

from ._common import (
    Collector,
    Context,
    RecordIgnored,
    RecordRejected,
    alert_id_of,
    clean_text,
    first_time,
    json_type,
    meets_threshold,
    user_identity,
)

__all__ = ["parse_entra_record", "identity_protection_signal", "map_entra_risk_level"]

_CLEARED_STATES = {"remediated", "dismissed", "confirmedsafe", "none"}
_LEVELS = {"none": "none", "low": "low", "medium": "medium", "high": "high"}


def map_entra_risk_level(value: object) -> str:
    """Entra riskLevel → IncidentRequest risk level (hidden / unknownFutureValue → unknown)."""
    if not isinstance(value, str):
        return "unknown"
    return _LEVELS.get(value.strip().lower(), "unknown")


def parse_entra_record(index: int | None, record: dict[str, Any], kind: str, ctx: Context, out: Collector) -> None:
    """One Entra diagnostic record (kind ``entra-risk`` or ``entra-other``)."""
    category = str(record.get("category", "")).strip()
    if kind == "entra-other":
        raise RecordIgnored(f"Entra category {clean_text(category, 60)} is not a user-risk category")
    props = record.get("properties")
    if not isinstance(props, dict):
        raise RecordRejected(f"{clean_text(category, 40)} record has no properties object (got {json_type(props)})")
    signal_kind = "user" if category.lower() == "riskyusers" else "detection"
    identity_protection_signal(index, record, props, signal_kind, "entra-diagnostics", ctx, out,
                               envelope_time=record.get("time"))


def identity_protection_signal(
    index: int | None,
    record: Any,
    props: dict[str, Any],
    signal_kind: str,
    source: str,
    ctx: Context,
    out: Collector,
    envelope_time: object = None,
) -> None:
    """A riskyUser (``signal_kind="user"``) or riskDetection (``"detection"``) → a candidate request."""
    if signal_kind == "user":
        raw_id = props.get("id") if props.get("id") not in (None, "") else props.get("userId")
        id_field = "id" if props.get("id") not in (None, "") else "userId"
    else:
        raw_id, id_field = props.get("userId"), "userId"
    user_id, upn = user_identity(raw_id, props.get("userPrincipalName"), id_field, "userPrincipalName")
    if user_id is None and upn is None:
        named = "id or userId" if signal_kind == "user" else "userId"
        raise RecordRejected(f"record names no user (no {named} or userPrincipalName)")

    raw_state = props.get("riskState")
    if raw_state is not None and not isinstance(raw_state, str):
        raise RecordRejected(f"riskState must be a string, got {json_type(raw_state)}")
    state = (raw_state or "").strip()
    state_key = state.lower()
    if state_key in _CLEARED_STATES:
        raise RecordIgnored(f"risk state {state}: the user is not at risk")
    level = map_entra_risk_level(props.get("riskLevel"))
    if state_key == "confirmedcompromised":
        level = "high"
    if not meets_threshold(level, ctx.min_risk_level):
        shown = clean_text(props.get("riskLevel"), 30) or "missing"
        raise RecordIgnored(f"risk level {shown} ({level}) does not meet the threshold {ctx.min_risk_level}")

    state_text = clean_text(state, 40) or "state unknown"
    if signal_kind == "user":
        alert_ids: tuple[str, ...] = ()
        detected = first_time(ctx, props.get("riskLastUpdatedDateTime"), envelope_time)
        reason = f"Entra ID Protection: user risk {level} ({state_text})"
    else:
        # A missing or unusable detection id only costs the alert id, not the signal.
        try:
            alert_ids = (alert_id_of(props.get("id"), "risk detection id"),)
        except RecordRejected:
            alert_ids = ()
        detected = first_time(ctx, props.get("detectedDateTime"), props.get("activityDateTime"),
                              props.get("lastUpdatedDateTime"), envelope_time)
        event = clean_text(props.get("riskEventType"), 60) or clean_text(props.get("riskType"), 60) or "unknown type"
        reason = f"Entra ID Protection: risk detection {event}, {level} ({state_text})"
    raw_detail = props.get("riskDetail") if signal_kind == "user" else props.get("riskEventType")
    detail = raw_detail.strip() if isinstance(raw_detail, str) and raw_detail.strip().isalnum() else ""
    out.add(index, record, user_id=user_id, user_principal_name=upn, source=source, risk_level=level,
            alert_ids=alert_ids, detected_at=detected, reason=reason, risk_detail=detail[:64])
