"""Graph polling shapes: ``identityProtection/riskyUsers`` (+ ``riskDetections``) and ``security/alerts_v2``.

Shapes: a page ``{"@odata.context"?, "value": [...], "@odata.nextLink"?}``, a single object
(``GET .../{id}``) or a JSON array of objects. Paging is the caller's business; the
nextLink is not followed here (no I/O).

riskyUsers / riskDetections
---------------------------
Same mapping as the Entra diagnostic records (see entra.py), source ``graph-riskyusers``:
riskyUser ``id`` is the user's object id, riskDetection ``userId`` is; atRisk counts,
confirmedCompromised counts as high, remediated / dismissed / confirmedSafe / none are
ignored; ``hidden`` → unknown. ``isDeleted`` / ``isGuest`` / ``isProcessing`` do not filter
(a deleted user is reported and the remediation steps find out; Graph's own sample of a
high-risk user is flagged isDeleted). riskyUsers carry no alert id; riskDetections carry
their detection id.

alerts_v2
---------
* Ignored: ``status`` ``resolved``; ``classification`` ``falsePositive`` or
  ``informationalExpectedActivity``; alerts with no user evidence; severity below the
  threshold (severity map in _common: high/medium/low, informational→low, else unknown).
* What counts as a user (one request per user, all carrying the alert id):
  - ``#microsoft.graph.security.userEvidence``: ``userAccount.azureAdUserId`` (GUID) and/or
    ``userAccount.userPrincipalName``;
  - ``#microsoft.graph.security.mailboxEvidence``: ``userAccount`` as above, else
    ``primaryAddress`` used as the UPN (a mailbox's primary SMTP address normally equals
    the UPN; when it does not, the remediation's user lookup fails visibly);
  - skipped: evidence with ``verdict`` ``noThreatsFound``, or whose ``roles`` are all
    ``contextual``; accounts with neither an Entra id nor a UPN (``NT AUTHORITY\\SYSTEM``,
    on-premises-only accounts);
  - not counted at all: ``analyzedMessageEvidence`` (its ``recipientEmailAddress`` is the
    *recipient* of a malicious message: being sent phish is not being compromised; a
    compromise shows up as its own alert with user evidence), ``processEvidence``'s
    ``userAccount`` (the account a process ran as), device / file / ip / url / registry /
    cloud-app evidence.
  - a user evidence entry with a malformed id or UPN is rejected on its own
    (``Rejected.reason`` starts ``evidence[i]``); the alert's other users still count.
* detected_at: ``createdDateTime``, then ``firstActivityDateTime``, then
  ``lastUpdateDateTime``, then ``now``.
* Reason: ``Security alert 'Title' (high, microsoftDefenderForEndpoint)``.
* Graph alert objects may legitimately exceed 64 KiB (long evidence lists); they are
  accepted up to 1 MiB.
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
    map_severity,
    meets_threshold,
    user_identity,
)
from .entra import identity_protection_signal

__all__ = ["parse_riskyuser", "parse_riskdetection", "parse_alert"]

_IGNORED_CLASSIFICATIONS = {"falsepositive", "informationalexpectedactivity"}


def parse_riskyuser(index: int | None, record: dict[str, Any], ctx: Context, out: Collector) -> None:
    identity_protection_signal(index, record, record, "user", "graph-riskyusers", ctx, out)


def parse_riskdetection(index: int | None, record: dict[str, Any], ctx: Context, out: Collector) -> None:
    identity_protection_signal(index, record, record, "detection", "graph-riskyusers", ctx, out)


def _lower(value: object) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def parse_alert(index: int | None, record: dict[str, Any], ctx: Context, out: Collector) -> None:
    alert_id = alert_id_of(record.get("id"), "alert id")
    status = _lower(record.get("status"))
    if status == "resolved":
        raise RecordIgnored("alert is resolved")
    classification = _lower(record.get("classification"))
    if classification in _IGNORED_CLASSIFICATIONS:
        raise RecordIgnored(f"alert is classified {clean_text(record.get('classification'), 40)}")
    evidence = record.get("evidence")
    if evidence is None:
        evidence = []
    if not isinstance(evidence, list):
        raise RecordRejected(f"alert evidence must be a JSON array, got {json_type(evidence)}")

    users: list[tuple[str | None, str | None]] = []
    kinds: list[str] = []
    for position, item in enumerate(evidence):
        if not isinstance(item, dict):
            continue
        odata = _lower(item.get("@odata.type"))
        short = odata.rsplit(".", 1)[-1] if odata else "untyped"
        kinds.append(clean_text(short.removesuffix("evidence") or short, 30))
        if short not in ("userevidence", "mailboxevidence"):
            continue
        if _lower(item.get("verdict")) == "nothreatsfound":
            continue
        roles = item.get("roles")
        if isinstance(roles, list) and roles and all(_lower(r) == "contextual" for r in roles):
            continue
        account = item.get("userAccount")
        if account is not None and not isinstance(account, dict):
            out.reject(index, f"evidence[{position}]: userAccount must be an object, got {json_type(account)}", record)
            continue
        account = account or {}
        raw_id = account.get("azureAdUserId")
        raw_upn = account.get("userPrincipalName")
        upn_field = f"evidence[{position}].userAccount.userPrincipalName"
        if short == "mailboxevidence" and raw_upn in (None, ""):
            raw_upn, upn_field = item.get("primaryAddress"), f"evidence[{position}].primaryAddress"
        try:
            user_id, upn = user_identity(raw_id, raw_upn, f"evidence[{position}].userAccount.azureAdUserId", upn_field)
        except RecordRejected as exc:
            out.reject(index, str(exc), record)
            continue
        if user_id is None and upn is None:
            continue  # NT AUTHORITY\SYSTEM and other accounts with no Entra identity
        users.append((user_id, upn))
    if not users:
        listed = ", ".join(dict.fromkeys(kinds)) or "none"
        raise RecordIgnored(f"alert has no user evidence with an Entra id or UPN (evidence: {clean_text(listed, 120)})")

    raw_severity = record.get("severity")
    level = map_severity(raw_severity)
    shown = clean_text(raw_severity, 20) or "severity unknown"
    if not meets_threshold(level, ctx.min_risk_level):
        raise RecordIgnored(f"alert severity {shown} ({level}) does not meet the threshold {ctx.min_risk_level}")
    title = clean_text(record.get("title"), 120) or "untitled"
    service = clean_text(record.get("serviceSource"), 60)
    reason = f"Security alert '{title}' ({shown}{', ' + service if service else ''})"
    detected = first_time(ctx, record.get("createdDateTime"), record.get("firstActivityDateTime"),
                          record.get("lastUpdateDateTime"))
    for user_id, upn in users:
        out.add(index, record, user_id=user_id, user_principal_name=upn, source="graph-alerts", risk_level=level,
                alert_ids=(alert_id,), detected_at=detected, reason=reason)
