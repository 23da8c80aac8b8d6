"""Defender XDR streaming API → Event Hub: ``AdvancedHunting-AlertInfo`` and ``-AlertEvidence``.

Shape: ``{"records": [{"time", "tenantId", "category", "operationName", "properties": {...}}]}``
with PascalCase properties (AlertId, EntityType, EvidenceRole, AccountUpn, AccountObjectId,
AccountSid, AccountName, AccountDomain, Severity, Title, ServiceSource, DetectionSource,
Timestamp; ``AdditionalFields`` / ``Categories`` are JSON *strings*).

AlertInfo says what the alert is (Title, Severity); AlertEvidence rows say what it touched,
one row per entity. Both share ``AlertId`` and may arrive in different batches.

Mapping decisions
-----------------
* What counts as a user: an AlertEvidence row with ``EntityType`` ``User`` or ``Mailbox``
  (case-insensitive) whose ``EvidenceRole`` is ``Impacted``. ``Related`` users, and rows with
  no role at all, are context (e.g. who was logged on to a device), not necessarily
  compromised: ignored.
  ``MailMessage`` rows name *recipients* and are not counted (a phishing recipient is not
  necessarily compromised). Ip, Url, File, Process, Machine, Registry*, CloudApplication,
  OAuthApplication, ... rows name no user: ignored.
* User identity: ``AccountObjectId`` when it is a GUID and ``AccountUpn``; for rows without
  them, ``AdditionalFields`` keys ``AadId`` / ``AadUserId`` / ``ExternalDirectoryObjectId``
  and ``Upn`` / ``UserPrincipalName`` / ``MailboxPrimaryAddress`` are tried. An
  ``AccountObjectId`` that is a SID (``S-1-5-...``, seen in the streaming samples) is an
  on-premises identifier and is treated as absent; any other non-GUID value, or a present
  but invalid UPN, rejects the row. A row left with neither id nor UPN is ignored when it is
  a system / on-premises account (NT AUTHORITY, well-known SIDs, AccountName/AccountSid
  only) and rejected when it names nobody at all.
* Severity: the matching AlertInfo's ``Severity`` when the batch (or ``join_defender``) has
  it, else the evidence row's own ``Severity`` column when present, else unknown. Mapping:
  High→high, Medium→medium, Low→low, Informational→low, anything else → unknown.
* Pending: a user row whose severity is unknown and would not pass the threshold (any
  threshold above ``none``) becomes ``PendingDefender(kind="evidence")``; an AlertInfo whose
  batch has no User/Mailbox row for its AlertId becomes ``PendingDefender(kind="info")``.
  The caller persists them keyed by AlertId and later calls
  ``join_defender(infos, evidence)`` with both halves; that returns the requests and
  whatever is still pending.
* Alert id: ``AlertId``. detected_at: AlertInfo ``Timestamp``, then the evidence
  ``Timestamp``, then the record ``time``, then ``now``.
* Reason: ``Defender alert 'Title' (High)`` (severity as Defender wrote it; "severity
  unknown" when not known).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from ..validation import excerpt, is_guid
from ._common import (
    Collector,
    Context,
    ParseResult,
    PendingDefender,
    RecordIgnored,
    RecordRejected,
    alert_id_of,
    clean_text,
    first_time,
    is_sid,
    json_type,
    make_context,
    map_severity,
    meets_threshold,
    user_identity,
)

__all__ = ["DefenderBatch", "join_defender", "slim_pending_record"]

_USER_ENTITIES = {"user", "mailbox"}
_SYSTEM_DOMAINS = {"nt authority", "nt service", "window manager", "font driver host", "nt-autorität", "autorite nt"}
_SYSTEM_NAMES = {"system", "local service", "network service", "localsystem", "anonymous logon"}
_ID_KEYS = ("AadId", "AadUserId", "ExternalDirectoryObjectId", "AccountObjectId")
_UPN_KEYS = ("Upn", "UserPrincipalName", "AccountUpn", "MailboxPrimaryAddress")


@dataclass
class _Info:
    index: int | None
    record: dict[str, Any]
    props: dict[str, Any]
    alert_id: str


@dataclass
class _Evidence:
    index: int | None
    record: dict[str, Any]
    props: dict[str, Any]
    alert_id: str
    user_id: str | None
    upn: str | None


def _props(record: dict[str, Any]) -> dict[str, Any]:
    props = record.get("properties")
    if not isinstance(props, dict):
        raise RecordRejected(f"Defender record has no properties object (got {json_type(props)})")
    return props


class DefenderBatch:
    """Collects one batch's Defender records, then joins them (``finish``)."""

    def __init__(self, ctx: Context, out: Collector) -> None:
        self.ctx = ctx
        self.out = out
        self.infos: dict[str, _Info] = {}
        self.evidence: list[_Evidence] = []

    def add(self, index: int | None, record: dict[str, Any], kind: str) -> None:
        """Classify one record. Raises RecordRejected / RecordIgnored for the caller to file."""
        if kind == "defender-other":
            category = clean_text(record.get("category"), 60)
            raise RecordIgnored(f"Defender table {category} is not AlertInfo or AlertEvidence")
        props = _props(record)
        alert_id = alert_id_of(props.get("AlertId"), "AlertId")
        if kind == "defender-info":
            known = self.infos.get(alert_id)
            if known is None or _rank(props) > _rank(known.props):
                self.infos[alert_id] = _Info(index, record, props, alert_id)
            return
        entity = props.get("EntityType")
        entity_text = clean_text(entity, 40) if isinstance(entity, str) else json_type(entity)
        if not isinstance(entity, str) or entity.strip().lower() not in _USER_ENTITIES:
            raise RecordIgnored(f"evidence entity {entity_text} is not a user")
        role = props.get("EvidenceRole")
        if not isinstance(role, str) or role.strip().lower() != "impacted":
            shown = clean_text(role, 20) if isinstance(role, str) and role.strip() else "no role"
            raise RecordIgnored(f"{entity_text} evidence is context ({shown}), not an Impacted user")
        user_id, upn = _identity(props)
        self.evidence.append(_Evidence(index, record, props, alert_id, user_id, upn))

    def finish(self) -> None:
        ctx, out = self.ctx, self.out
        matched: set[str] = set()
        for ev in self.evidence:
            matched.add(ev.alert_id)
            info = self.infos.get(ev.alert_id)
            raw_severity = info.props.get("Severity") if info else None
            if not isinstance(raw_severity, str) or not raw_severity.strip():
                raw_severity = ev.props.get("Severity")
            level = map_severity(raw_severity)
            if level == "unknown" and info is None and not meets_threshold(level, ctx.min_risk_level):
                out.pending.append(PendingDefender(ev.alert_id, "evidence", ev.record))
                continue
            title = clean_text(info.props.get("Title") if info else None, 120) or clean_text(ev.props.get("Title"), 120)
            shown = clean_text(raw_severity, 20) or "severity unknown"
            if not meets_threshold(level, ctx.min_risk_level):
                out.ignore(ev.index, f"Defender alert severity {shown} ({level}) does not meet the threshold "
                                     f"{ctx.min_risk_level}", ev.record)
                continue
            detected = first_time(ctx, info.props.get("Timestamp") if info else None, ev.props.get("Timestamp"),
                                  info.record.get("time") if info else None, ev.record.get("time"))
            reason = f"Defender alert '{title or 'untitled'}' ({shown})"
            out.add(ev.index, ev.record, user_id=ev.user_id, user_principal_name=ev.upn, source="defender-stream",
                    risk_level=level, alert_ids=(ev.alert_id,), detected_at=detected, reason=reason)
        for alert_id, info in self.infos.items():
            if alert_id not in matched:
                out.pending.append(PendingDefender(alert_id, "info", info.record))


def _rank(props: dict[str, Any]) -> int:
    return {"unknown": 0, "none": 0, "low": 1, "medium": 2, "high": 3}[map_severity(props.get("Severity"))]


def _additional(props: dict[str, Any]) -> dict[str, Any]:
    raw = props.get("AdditionalFields")
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or len(raw) > 16384:
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _identity(props: dict[str, Any]) -> tuple[str | None, str | None]:
    raw_id = props.get("AccountObjectId")
    if isinstance(raw_id, str) and is_sid(raw_id):
        raw_id = None  # an on-premises SID, not an Entra object id
    elif raw_id not in (None, "") and not (isinstance(raw_id, str) and is_guid(raw_id.strip())):
        raise RecordRejected(f"AccountObjectId is not a GUID: {excerpt(raw_id)}")
    raw_upn = props.get("AccountUpn")
    if raw_id in (None, "") or raw_upn in (None, ""):
        extra = _additional(props)
        if raw_id in (None, ""):
            raw_id = next((extra[k] for k in _ID_KEYS if isinstance(extra.get(k), str) and is_guid(extra[k].strip())), None)
        if raw_upn in (None, ""):
            raw_upn = next((extra[k] for k in _UPN_KEYS if isinstance(extra.get(k), str) and extra[k].strip()), None)
    user_id, upn = user_identity(raw_id, raw_upn, "AccountObjectId", "AccountUpn")
    if user_id or upn:
        return user_id, upn
    domain = props.get("AccountDomain")
    name = props.get("AccountName")
    sid = props.get("AccountSid")
    if (isinstance(domain, str) and domain.strip().lower() in _SYSTEM_DOMAINS) or (
        isinstance(name, str) and name.strip().lower() in _SYSTEM_NAMES) or _well_known_sid(sid):
        raise RecordIgnored("system account without an Entra object id or UPN")
    if any(isinstance(v, str) and v.strip() for v in (domain, name, sid)):
        raise RecordIgnored("on-premises account without an Entra object id or UPN")
    raise RecordRejected("evidence row names no user (no AccountObjectId or AccountUpn)")


def _well_known_sid(sid: object) -> bool:
    if not isinstance(sid, str) or not is_sid(sid):
        return False
    parts = sid.strip().split("-")
    # S-1-5-18/19/20 (SYSTEM, LOCAL/NETWORK SERVICE), S-1-5-<n> well-known, S-1-5-32-* builtin, S-1-5-80-* services
    return len(parts) <= 4 or (len(parts) >= 4 and parts[2] == "5" and parts[3] in {"32", "80", "90", "96"})


def join_defender(
    info_records: Iterable[Any],
    evidence_records: Iterable[Any],
    *,
    min_risk_level: str = "medium",
    now: datetime | None = None,
) -> ParseResult:
    """Join Defender AlertInfo and AlertEvidence halves (pure; typically stored halves + new ones).

    Each record is a streaming record (``{"category", "properties": {...}, ...}``), its bare
    ``properties`` dict, a ``PendingDefender``, or the JSON text of any of those.
    ``Rejected.index`` counts the info records first, then the evidence records. Returns the
    requests for User/Mailbox evidence rows (severity from the matching info), the halves
    that are still waiting (``pending``), and ignored / rejected rows, as parse_payload does.
    """
    ctx = make_context(min_risk_level, now)
    out = Collector()
    batch = DefenderBatch(ctx, out)
    index = 0
    for kind, records in (("defender-info", info_records), ("defender-evidence", evidence_records)):
        for raw in records:
            record = _as_record(raw, kind)
            try:
                if record is None:
                    raise RecordRejected(f"{kind.split('-')[1]} record is not a JSON object")
                batch.add(index, record, _own_kind(record, kind))
            except RecordRejected as exc:
                out.reject(index, str(exc), raw if record is None else record)
            except RecordIgnored as exc:
                out.ignore(index, str(exc), record)
            index += 1
    batch.finish()
    return out.result()


def _own_kind(record: dict[str, Any], default: str) -> str:
    category = record.get("category")
    if isinstance(category, str):
        return {"advancedhunting-alertinfo": "defender-info",
                "advancedhunting-alertevidence": "defender-evidence"}.get(category.strip().lower(), default)
    return default


def _as_record(raw: Any, kind: str) -> dict[str, Any] | None:
    if isinstance(raw, PendingDefender):
        raw = raw.record
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            return None
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("properties"), dict):
        return raw
    category = "AdvancedHunting-AlertInfo" if kind == "defender-info" else "AdvancedHunting-AlertEvidence"
    return {"category": category, "properties": raw}


# What join_defender reads from a stored half; everything else can go when a half is too
# big for one Table storage property (32K UTF-16 characters).
_KEPT_PROPERTIES = ("AlertId", "Severity", "Title", "Timestamp", "EntityType", "EvidenceRole", "AccountObjectId",
                    "AccountUpn", "AccountDomain", "AccountName", "AccountSid", "Category", "ServiceSource",
                    "DetectionSource", "AdditionalFields")


def slim_pending_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a streaming record with only what joining needs (pure).

    Keeps the category, time and the properties ``join_defender`` reads; the title is cut
    to what an incident keeps anyway and AdditionalFields to the identity keys in it.
    """
    nested = record.get("properties")
    props: dict[str, Any] = nested if isinstance(nested, dict) else record
    kept: dict[str, Any] = {}
    for name in _KEPT_PROPERTIES:
        value = props.get(name)
        if value is None:
            continue
        if name == "AdditionalFields":
            extra = _additional(props)
            value = {k: extra[k] for k in (*_ID_KEYS, *_UPN_KEYS) if isinstance(extra.get(k), str) and len(extra[k]) <= 1024}
            if not value:
                continue
        elif isinstance(value, str) and name != "AlertId":
            value = value[:1024]
        elif not isinstance(value, (str, int, float, bool)):
            continue
        kept[name] = value
    slim: dict[str, Any] = {"properties": kept}
    for name in ("category", "time"):
        if isinstance(record.get(name), str):
            slim[name] = record[name][:256]
    return slim
