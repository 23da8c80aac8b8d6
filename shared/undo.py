"""Undo for a false positive: put back what the responder changed, where that can be done safely.

``responder undo INCIDENT`` / ``POST /api/incidents/{id}/undo`` / the console's button (Incident.Approve,
never the incident's submitter) call ``request_undo``: it checks the incident is finished, records who
asked (ETag-conditional: one undo per incident) and puts an ``OperatorTask`` (action ``undo``, with the
forwarding addresses the operator confirmed one by one) on the ``operator-actions`` queue. The worker,
which holds the managed identity, runs ``run_undo``: every reversal is a ledger row of its own
(``undo-<what>`` in the incident's step ledger), claimed, checkpointed before the call, verified
against the tenant before repeating (a redelivered message never reverses twice) and finished with
its outcome.

What is reversed, from the values the steps recorded:
- inbox rules the responder disabled are enabled again (the Graph PATCH, or ``Enable-InboxRule`` for the
  rules it disabled through Exchange, which again removes Outlook's client-side rules);
- mailbox forwarding, only to the addresses the operator confirmed (an attacker's forwarding address
  restored by a click would hand the mailbox back), with DeliverToMailboxAndForward as it was;
- the user leaves the MFA group, if the responder added them (not if they were a member before);
- the user's risk is dismissed (the responder confirmed it compromised);
- sign-in is enabled again, if the responder blocked it and nobody has re-enabled it.

What is not: the password (random, never shown: the user gets a new one or a recovery pass from the
help desk), revoked sessions (the user signs in again), deleted authentication methods (the user
registers them again), mailbox auditing turned on, per-user MFA left enforced, the restricted-senders
removal (it only lifted a restriction), a recovery pass (it expires), and the footholds issue 17
removed (delegates, SendAs, SendOnBehalf, consent grants, app role assignments, trusted senders): each
is listed with the exact call recorded to restore it, for an administrator to run with their own
rights after checking it. Granting access back is a privilege the responder's identity deliberately
does not hold (it can take access away, never give it): least privilege.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from . import footholds
from .deps import Deps
from .errors import ConflictError, PermanentError, TransientError, safe_reason
from .ledger_protocol import ClaimStatus, load_json
from .logs import incident_log
from .model import OperatorTask, new_correlation_id
from .principal import Principal
from .signin import BLOCKED, OPERATOR_QUEUE
from .states import IncidentState, StepState
from .timestamps import iso

logger = logging.getLogger(__name__)

__all__ = ["Reversal", "UndoResult", "plan_reversals", "request_undo", "run_undo", "undo_offer", "UNDO_PREFIX",
           "NOT_UNDONE"]

UNDO_PREFIX = "undo-"
UNDOABLE_STATES = (IncidentState.SUCCEEDED, IncidentState.FAILED)
NOT_UNDONE = (
    "the password reset: the new password is random and was never shown; the user gets a new one (or a recovery pass) "
    "from the help desk",
    "revoked sessions: the user signs in again",
    "deleted authentication methods: the user registers them again",
    "mailbox auditing turned on, and per-user MFA left enforced (harmless; change them by hand if needed)",
    "the removal from the restricted-senders list (it only lifted a restriction)",
)


@dataclass(frozen=True)
class Reversal:
    """One change to put back: its ledger row key, what it does, and how (kind + parameters)."""

    key: str
    kind: str  # graph-rule | exo-rule | forwarding | mfa-group | risk | sign-in
    description: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UndoResult:
    outcome: str  # queued | not-found | forbidden | not-possible | already | bad-request | done | partial
    incident_id: str
    reason: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def forwarding_candidates(details: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The forwarding addresses clean-mailbox cleared (the operator confirms each one)."""
    forwarding = (details.get("clean-mailbox") or {}).get("forwarding") or {}
    before = forwarding.get("before") or {}
    if not forwarding.get("cleared"):
        return []
    return [str(v) for v in (before.get("ForwardingSmtpAddress"), before.get("ForwardingAddress")) if v]


def plan_reversals(incident: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]], *, mfa_group_id: str,
                   confirmed: tuple[str, ...] | list[str] = ()) -> list[Reversal]:
    """The reversals for this incident from its steps' recorded details (pure)."""
    out: list[Reversal] = []
    for rule in (details.get("clean-mailbox") or {}).get("disabled_rules") or []:
        name = str(rule.get("name") or rule.get("id"))
        if rule.get("via") == "graph":
            out.append(Reversal(f"{UNDO_PREFIX}rule-{_digest(str(rule.get('id')))}", "graph-rule",
                                f"enable inbox rule '{name}' again", {"rule_id": rule.get("id")}))
        else:
            out.append(Reversal(f"{UNDO_PREFIX}rule-{_digest(str(rule.get('rule_identity') or rule.get('id')))}", "exo-rule",
                                f"enable inbox rule '{name}' again (Enable-InboxRule; Outlook client-side rules are "
                                "removed again by Exchange)", {"identity": rule.get("id"),
                                                               "rule_identity": str(rule.get("rule_identity") or "")}))
    forwarding = (details.get("clean-mailbox") or {}).get("forwarding") or {}
    before = forwarding.get("before") or {}
    wanted = {c.strip().lower() for c in confirmed}
    restore = {}
    for key in ("ForwardingSmtpAddress", "ForwardingAddress"):
        value = before.get(key)
        if forwarding.get("cleared") and value and str(value).strip().lower() in wanted:
            restore[key] = value
    if restore:
        out.append(Reversal(f"{UNDO_PREFIX}forwarding", "forwarding",
                            f"restore mailbox forwarding to {', '.join(str(v) for v in restore.values())} (confirmed)",
                            {**restore, "DeliverToMailboxAndForward": bool(before.get("DeliverToMailboxAndForward"))}))
    if (details.get("enforce-mfa") or {}).get("mfa") == "added to group" and mfa_group_id:
        out.append(Reversal(f"{UNDO_PREFIX}mfa-group", "mfa-group", f"remove the user from the MFA group {mfa_group_id}",
                            {"group_id": mfa_group_id}))
    reset = details.get("reset-password") or {}
    if reset.get("risk_confirmed") in ("done", "already done") or reset.get("password_reset"):
        out.append(Reversal(f"{UNDO_PREFIX}risk", "risk", "dismiss the user's risk in Identity Protection"))
    if incident.get("sign_in") == BLOCKED:
        out.append(Reversal(f"{UNDO_PREFIX}sign-in", "sign-in", "enable sign-in again (accountEnabled true)"))
    return out


def not_undone(details: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What stays as the responder left it, footholds with the recorded call that would restore each."""
    lines = list(NOT_UNDONE)
    for step in ("clean-mailbox", "remove-delegates", "revoke-app-consent"):
        detail = details.get(step) or {}
        entries = (detail.get("trusted_senders") or {}).get("removed") if step == "clean-mailbox" else detail.get("removed")
        for entry in entries or []:
            undo = entry.get("undo") or {}
            call = undo.get("cmdlet") or f"{undo.get('method', '')} {undo.get('path', '')}".strip()
            lines.append(f"removed {footholds.describe(entry)}: not restored automatically (an administrator may run "
                         f"{call} {json.dumps(undo.get('parameters') or undo.get('body') or {}, default=str)[:300]})")
    recovery = details.get("recovery-pass") or {}
    if recovery.get("recovery") == "issued":
        lines.append(f"the recovery pass mailed to {recovery.get('to')}: it expires at {recovery.get('expires_at')}")
    return lines


def _details_from_view(view: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s["name"]): dict(s.get("detail") or {}) for s in view.get("steps") or []}


def undo_offer(view: Mapping[str, Any]) -> dict[str, Any]:
    """What the console and the CLI show before an undo (pure, from the read model)."""
    if view.get("undo_state"):
        return {"possible": False, "reason": f"undo {view['undo_state']} (asked by {view.get('undo_requested_by')} at "
                                             f"{view.get('undo_requested_at')})"}
    if view.get("state") not in UNDOABLE_STATES:
        return {"possible": False, "reason": f"the incident is {view.get('state')}: only a finished incident that changed "
                                             "the tenant can be undone"}
    details = _details_from_view(view)
    reversals = plan_reversals(view, details, mfa_group_id="(the MFA group)")
    forwarding = forwarding_candidates(details)
    return {"possible": bool(reversals or forwarding), "reversals": [r.description for r in reversals],
            "forwarding": forwarding, "not_undone": not_undone(details),
            "reason": "" if reversals or forwarding else "nothing the responder changed can be reversed"}


async def request_undo(deps: Deps, incident_id: str, by: Principal, confirmed: list[str]) -> UndoResult:
    """Record the request (once) and queue it for the worker."""
    from .status import build_view  # the read model; status does not import this module

    for _ in range(6):
        incident = await deps.ledger.get_incident(incident_id)
        if incident is None:
            return UndoResult("not-found", incident_id, "no such incident")
        if incident.get("submitted_by_oid") and incident["submitted_by_oid"] == by.object_id:
            return UndoResult("forbidden", incident_id, "the submitter of an incident cannot undo it")
        view = build_view(incident, await deps.ledger.list_steps(incident_id))
        offer = undo_offer(view)
        if not offer["possible"]:
            return UndoResult("already" if incident.get("undo_state") else "not-possible", incident_id, offer["reason"])
        candidates = {c.lower() for c in offer["forwarding"]}
        clean = [c.strip() for c in confirmed if c.strip()]
        unknown = [c for c in clean if c.lower() not in candidates]
        if unknown or len(clean) > 10:
            return UndoResult("bad-request", incident_id, "confirm only forwarding addresses the incident cleared")
        try:
            await deps.ledger.update_incident(incident_id, {
                "undo_state": "requested", "undo_requested_by": by.name[:256], "undo_requested_by_oid": by.object_id,
                "undo_requested_at": iso(deps.clock()), "undo_confirmed": json.dumps(clean)}, etag=incident.get("_etag"))
        except ConflictError:
            continue
        correlation_id = incident.get("correlation_id") or new_correlation_id()
        task = OperatorTask(incident_id=incident_id, action="undo", requested_by=by.name[:100] or "operator",
                            correlation_id=correlation_id, confirmed=tuple(clean))
        await deps.queues.send(OPERATOR_QUEUE, task.to_json())
        incident_log(logger, incident_id, "undo", correlation_id).warning(
            "undo requested by %s (%d forwarding address(es) confirmed)", by.object_id, len(clean))
        return UndoResult("queued", incident_id)
    raise TransientError(f"incident {incident_id} kept changing; try again")


# -- the worker's half ------------------------------------------------------------------------------------

async def run_undo(deps: Deps, task: OperatorTask) -> UndoResult:
    """Run every reversal of the incident, each a ledger row; transient failures raise (the queue retries)."""
    log = incident_log(logger, task.incident_id, "undo", task.correlation_id)
    incident = await deps.ledger.get_incident(task.incident_id)
    if incident is None or incident.get("undo_state") not in ("requested", "running"):
        log.warning("undo task without a recorded request (%s); dropped", (incident or {}).get("undo_state"))
        await deps.ledger.record_error(OPERATOR_QUEUE, "undo task without a recorded request", message_id=task.incident_id)
        return UndoResult("not-possible", task.incident_id, "no undo was requested")
    rows = await deps.ledger.list_steps(task.incident_id)
    details = {str(r["RowKey"]): load_json(r.get("detail"), {}) or {} for r in rows}
    reversals = plan_reversals(incident, details, mfa_group_id=deps.settings.mfa_group_id, confirmed=task.confirmed)
    await deps.ledger.update_incident(task.incident_id, {"undo_state": "running"})
    results = []
    for reversal in reversals:
        results.append(await _reverse(deps, incident, reversal, task.correlation_id))
    failed = [r for r in results if r.get("state") == StepState.FAILED]
    state = "partial" if failed else "done"
    await deps.ledger.update_incident(task.incident_id, {"undo_state": state, "undone_at": iso(deps.clock())})
    log.warning("undo %s: %d reversal(s), %d failed (asked by %s)", state, len(results), len(failed), task.requested_by)
    return UndoResult(state, task.incident_id, rows=results)


async def _reverse(deps: Deps, incident: dict[str, Any], reversal: Reversal, correlation_id: str) -> dict[str, Any]:
    ledger = deps.ledger
    incident_id = incident["incident_id"]
    claim = await ledger.claim_step(incident_id, reversal.key, deps.settings.step_lease_s, correlation_id)
    if claim.status is ClaimStatus.BUSY:
        raise TransientError(f"{reversal.key} is being reversed by another worker")
    if claim.status is ClaimStatus.DONE:
        return dict(claim.row)
    act, verify = _calls(deps, incident, reversal)
    started = time.monotonic()
    try:
        if claim.checkpoint.get("issued_at") and await verify():
            outcome = "already in place (verified)"
        else:
            await ledger.checkpoint(incident_id, reversal.key, claim, {"issued_at": iso(deps.clock())})
            await act()
            if not await verify():
                raise TransientError(f"{reversal.key}: the change does not read back yet")
            outcome = "done"
    except PermanentError as exc:
        error = f"{reversal.description}: {safe_reason(exc)[:300]}"
        await ledger.finish(incident_id, reversal.key, claim, StepState.FAILED, {"summary": reversal.description},
                            error, int((time.monotonic() - started) * 1000))
        return {"name": reversal.key, "state": StepState.FAILED, "error": error}
    except TransientError as exc:
        await ledger.release(incident_id, reversal.key, claim, str(exc)[:300])
        raise
    summary = f"{reversal.description}: {outcome}"
    await ledger.finish(incident_id, reversal.key, claim, StepState.SUCCEEDED, {"summary": summary, "kind": reversal.kind},
                        "", int((time.monotonic() - started) * 1000))
    return {"name": reversal.key, "state": StepState.SUCCEEDED, "summary": summary}


def _calls(deps: Deps, incident: dict[str, Any], reversal: Reversal) -> tuple[Callable[[], Awaitable[Any]],
                                                                               Callable[[], Awaitable[bool]]]:
    """(the call that reverses, the read that proves it)."""
    uid, upn, p = incident["user_id"], incident.get("user_principal_name") or "", reversal.params
    if reversal.kind == "graph-rule":
        graph = deps.require_graph()

        async def rule_on() -> bool:
            rule = await graph.get_message_rule(uid, p["rule_id"])
            if rule is None:
                raise PermanentError("the rule no longer exists")
            return rule.get("isEnabled") is True

        return (lambda: graph.enable_message_rule(uid, p["rule_id"])), rule_on
    if reversal.kind == "exo-rule":
        exo = deps.require_exchange()

        async def exo_rule_on() -> bool:
            rows = await exo.invoke("Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}, anchor=upn)
            mine = [r for r in rows if str(r.get("RuleIdentity")) == p["rule_identity"]]
            if not mine:
                raise PermanentError("the rule no longer exists")
            return all(r.get("Enabled") is True for r in mine)

        return (lambda: exo.invoke("Enable-InboxRule", {"Identity": p["identity"], "Confirm": False}, anchor=upn)), exo_rule_on
    if reversal.kind == "forwarding":
        exo = deps.require_exchange()
        wanted = {k: v for k, v in p.items() if k in ("ForwardingSmtpAddress", "ForwardingAddress")}

        async def forwarding_on() -> bool:
            row = (await exo.invoke("Get-Mailbox", {"Identity": upn}) or [{}])[0]
            return all(str(row.get(k) or "").lower() == str(v).lower() for k, v in wanted.items())

        return (lambda: exo.invoke("Set-Mailbox", {"Identity": upn, **wanted,
                                                   "DeliverToMailboxAndForward": p["DeliverToMailboxAndForward"]})), forwarding_on
    graph = deps.require_graph()
    if reversal.kind == "mfa-group":
        async def left() -> bool:
            return p["group_id"] not in await graph.check_member_groups(uid, [p["group_id"]])

        return (lambda: graph.remove_group_member(p["group_id"], uid)), left
    if reversal.kind == "risk":
        async def dismissed() -> bool:
            risky = await graph.get_risky_user(uid)
            return (risky or {}).get("riskState") not in ("atRisk", "confirmedCompromised")

        return (lambda: graph.dismiss_risk([uid])), dismissed

    async def enabled() -> bool:
        return (await graph.get_user(uid, select="id,accountEnabled")).get("accountEnabled") is True

    async def enable() -> None:
        await graph.set_account_enabled(uid, True)
        await deps.ledger.update_incident(incident["incident_id"], {"sign_in": "restored", "sign_in_restored_at":
                                                                     iso(deps.clock()), "sign_in_restored_by": "undo"})

    return enable, enabled
