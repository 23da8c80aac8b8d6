"""The two audit logs the steps date things from, each read at most once per incident.

- ``directory_audits``: ``GET /auditLogs/directoryAudits`` for events about the user or by the
  user in the last DIRECTORY_AUDIT_DAYS (Entra keeps 30 days): security-info registrations
  (enforce-mfa) and consents (revoke-app-consent) in one request. Identity and access reports
  are throttled at 5 requests per 10 s per app per tenant, so the second step never asks again,
  and the incidents contained together share one read (shared/tenant_calls.py ``user_audits``:
  a lone incident reads its own events, several read the tenant's dating events once).
- ``exchange_audit``: ``Search-UnifiedAuditLog`` (Exchange admin records) for the grants of
  mailbox rights and junk-mail entries in the last EXCHANGE_AUDIT_DAYS: clean-mailbox and
  remove-delegates.

The first step that needs a log reads it and stores what it found (or why it could not read it)
as a section of the incident's evidence; a later step, or a retry, takes it from there. Neither
log is read by the snapshot: in an alert storm the reports quota would delay containment.
A throttled or failed read raises (the platform retries); a refusal (403, 400) is stored and
makes every entry it would have dated "listed for review".
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..errors import PermanentError
from ..mailbox_rights import AUDIT_OPERATIONS, AuditState, parse_audit_rows, relevant_events
from ..timestamps import iso_seconds, parse_timestamp
from .base import StepContext

DIRECTORY_AUDIT_DAYS = 30
DIRECTORY_AUDIT_MAX = 500
EXCHANGE_AUDIT_DAYS = 90
EXCHANGE_AUDIT_RESULT_SIZE = 5000  # Search-UnifiedAuditLog's largest ResultSize
EXCHANGE_AUDIT_KEEP = 300  # newest relevant events kept in the evidence (it is size-bounded)
#: The one directory audit read (declared by enforce-mfa and revoke-app-consent, whichever runs it first).
AUDIT_CALL = ("GET /auditLogs/directoryAudits?$filter=(targetResources/any(t: t/id eq '{id}') or "
              "initiatedBy/user/id eq '{id}') and activityDateTime ge {since}")
#: The same log read once for the incidents contained together (shared/tenant_calls.py).
SHARED_AUDIT_CALLS = (
    "GET /auditLogs/directoryAudits?$filter=loggedByService eq 'Authentication Methods' and activityDateTime ge {t} (shared)",
    "GET /auditLogs/directoryAudits?$filter=activityDisplayName eq 'Consent to application' and activityDateTime ge {t} (shared)",
)
#: The one Exchange audit read (declared by clean-mailbox and remove-delegates).
UNIFIED_AUDIT_CALL = "Search-UnifiedAuditLog -RecordType ExchangeAdmin -Operations ... (dating grants)"
_CONSENT_PROPS = ("ConsentAction.Permissions", "ConsentContext.IsAdminConsent", "ConsentContext.OnBehalfOfAll")


def compact_directory_event(event: dict[str, Any]) -> dict[str, Any]:
    """What the steps need of a directoryAudit (the evidence table row is size-bounded)."""
    initiated = event.get("initiatedBy") or {}
    user = initiated.get("user") or {}
    app = initiated.get("app") or {}
    targets = []
    for target in event.get("targetResources") or []:
        props = [{"displayName": p.get("displayName"), "newValue": str(p.get("newValue") or "")[:2000]}
                 for p in target.get("modifiedProperties") or [] if p.get("displayName") in _CONSENT_PROPS]
        targets.append({"id": target.get("id"), "type": target.get("type") or target.get("Type"),
                        "displayName": target.get("displayName"), "modifiedProperties": props})
    return {
        "id": event.get("id"), "activityDisplayName": event.get("activityDisplayName"),
        "activityDateTime": event.get("activityDateTime"), "result": event.get("result"),
        "resultReason": event.get("resultReason"), "loggedByService": event.get("loggedByService"),
        "category": event.get("category"), "operationType": event.get("operationType"),
        "initiatedBy": {"user": {"id": user.get("id"), "userPrincipalName": user.get("userPrincipalName")} if user else None,
                        "app": {"appId": app.get("appId"), "displayName": app.get("displayName")} if app else None},
        "targetResources": targets,
    }


def contained_at(ctx: StepContext) -> datetime:
    """When the step before this one finished (its task was enqueued then), never in the future: the
    account was contained by then, so nothing the attacker did can be missing from a read after it."""
    now = ctx.deps.clock()
    try:
        return min(parse_timestamp(ctx.task.enqueued_at), now)
    except ValueError:
        return now


async def _stored(ctx: StepContext, section: str) -> dict[str, Any] | None:
    found = await ctx.deps.ledger.get_evidence(ctx.task.incident_id, section)  # written by put_evidence below
    if isinstance(found, dict) and not found.get("truncated") and ("events" in found or "error" in found):
        return found
    return None


def _state(stored: dict[str, Any], source: str) -> AuditState:
    events = stored.get("events")
    return AuditState(available=events is not None, complete=bool(stored.get("complete", True)),
                      since=stored.get("since") or "", error=stored.get("error") or "", source=source,
                      events=list(events or []))


async def directory_audits(ctx: StepContext) -> AuditState:
    """The user's directory audit events (from the evidence when an earlier step read them)."""
    source = "directory audit log"
    stored = await _stored(ctx, "directory_audits")
    if stored is not None:
        return _state(stored, source)
    since = iso_seconds(ctx.deps.clock() - timedelta(days=DIRECTORY_AUDIT_DAYS))
    try:
        # 5 requests per 10 s per app: the incidents contained together share one read of the log
        # (shared/tenant_calls.py), fresh as of this incident's containment.
        events = await ctx.deps.tenant_calls().user_audits(ctx.user_id, contained_at(ctx))
        record: dict[str, Any] = {"since": since, "complete": len(events) < DIRECTORY_AUDIT_MAX,
                                  "events": [compact_directory_event(e) for e in events]}
    except PermanentError as exc:
        ctx.log.warning("directory audit log not readable; what it would date is listed for review: %s", exc)
        record = {"since": since, "error": str(exc)[:300], "events": None}
    await ctx.deps.ledger.put_evidence(ctx.task.incident_id, "directory_audits", record)
    return _state(record, source)


async def exchange_audit(ctx: StepContext, mailbox: frozenset[str], user: frozenset[str]) -> AuditState:
    """The Exchange admin audit events about the user's mailbox or naming the user, newest first."""
    source = "unified audit log"
    stored = await _stored(ctx, "exchange_audit")
    if stored is not None:
        return _state(stored, source)
    now = ctx.deps.clock()
    since = iso_seconds(now - timedelta(days=EXCHANGE_AUDIT_DAYS))
    try:
        rows = await ctx.exchange.invoke("Search-UnifiedAuditLog", {
            "StartDate": since, "EndDate": iso_seconds(now), "RecordType": "ExchangeAdmin",
            "Operations": list(AUDIT_OPERATIONS), "ResultSize": EXCHANGE_AUDIT_RESULT_SIZE})
        events = relevant_events(parse_audit_rows(rows), mailbox, user)
        record: dict[str, Any] = {"since": since,
                                  "complete": len(rows) < EXCHANGE_AUDIT_RESULT_SIZE and len(events) <= EXCHANGE_AUDIT_KEEP,
                                  "events": events[:EXCHANGE_AUDIT_KEEP], "records_read": len(rows)}
    except PermanentError as exc:
        ctx.log.warning("unified audit log not readable; what it would date is listed for review: %s", exc)
        record = {"since": since, "error": str(exc)[:300], "events": None}
    await ctx.deps.ledger.put_evidence(ctx.task.incident_id, "exchange_audit", record)
    return _state(record, source)
