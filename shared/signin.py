"""The optional sign-in block (BLOCK_SIGN_IN) outside the playbook: an operator re-enables an account.

``never`` (default): containment does not touch ``accountEnabled``. ``until-close`` and
``until-approved``: reset-password blocks sign-in first (``accountEnabled`` false; never for a user
synced from on-premises AD, whose ``accountEnabled`` is mastered there: the incident says so instead).
``until-close``: the close step re-enables it. ``until-approved``: it stays blocked until an operator
runs ``responder enable-sign-in INCIDENT_ID`` or ``POST /api/incidents/{id}/enable-sign-in`` (the
CLI calls the API; the route needs Incident.Approve and records the principal). It puts
an ``OperatorTask`` on the ``operator-actions`` queue, because only the worker holds the managed
identity; the worker (``functions/operator.operator_actions``) re-enables the account, checks it, and
records who asked on the incident. The same command releases an account an ``until-close`` incident
left blocked because it stopped before its close.

The incident row carries the state: ``sign_in`` = ``blocked`` | ``restored`` | ``not-blocked``
(synced user, or the block was refused) | ``was-disabled`` (disabled before the incident: never
re-enabled by the responder).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .deps import Deps
from .errors import PermanentError, TransientError
from .logs import incident_log
from .model import OperatorTask, new_correlation_id
from .timestamps import iso

logger = logging.getLogger(__name__)

OPERATOR_QUEUE = "operator-actions"
BLOCKED, RESTORED, NOT_BLOCKED, WAS_DISABLED = "blocked", "restored", "not-blocked", "was-disabled"

SYNCED_NOTE = ("sign-in NOT blocked: the account is synced from on-premises AD, where accountEnabled is mastered "
               "(Entra refuses the change); disable the account in Active Directory if it must not sign in")
WAS_DISABLED_NOTE = "the account was already disabled before the incident: left as it was, and never re-enabled by the responder"


def release_hint(incident_id: str) -> str:
    return (f"sign-in stays BLOCKED until an operator re-enables it: `responder enable-sign-in {incident_id}` "
            f"(or POST /api/incidents/{incident_id}/enable-sign-in)")


@dataclass(frozen=True)
class SignInResult:
    outcome: str  # queued | not-found | not-blocked (request); enabled | already enabled | not-blocked | failed (worker)
    incident_id: str
    reason: str = ""


async def request_enable_sign_in(deps: Deps, incident_id: str, requested_by: str = "operator",
                                 requested_by_oid: str = "") -> SignInResult:
    """Ask the worker to re-enable the account an incident blocked (storage only: the API has no need
    for Graph). ``requested_by`` / ``requested_by_oid``: the validated principal's UPN and object id."""
    incident = await deps.ledger.get_incident(incident_id)
    if incident is None:
        return SignInResult("not-found", incident_id, "no such incident")
    if incident.get("sign_in") != BLOCKED:
        state = incident.get("sign_in") or "never blocked"
        return SignInResult("not-blocked", incident_id, f"this incident did not leave sign-in blocked ({state})")
    correlation_id = incident.get("correlation_id") or new_correlation_id()
    task = OperatorTask(incident_id=incident_id, action="enable-sign-in", requested_by=requested_by[:100] or "operator",
                        correlation_id=correlation_id)
    await deps.queues.send(OPERATOR_QUEUE, task.to_json())
    await deps.ledger.update_incident(incident_id, {"sign_in_release_requested_by": task.requested_by,
                                                    "sign_in_release_requested_by_oid": requested_by_oid,
                                                    "sign_in_release_requested_at": iso(deps.clock())})
    incident_log(logger, incident_id, "enable-sign-in", correlation_id).info("re-enabling sign-in requested by %s",
                                                                             task.requested_by)
    return SignInResult("queued", incident_id)


async def enable_sign_in(deps: Deps, task: OperatorTask) -> SignInResult:
    """The worker's half: re-enable the account if this incident blocked it; checked, then recorded.
    A refusal (e.g. the permission was taken away) is recorded on the incident; throttling raises."""
    log = incident_log(logger, task.incident_id, "enable-sign-in", task.correlation_id)
    incident = await deps.ledger.get_incident(task.incident_id)
    if incident is None:
        log.warning("operator task for an unknown incident; dropped")
        await deps.ledger.record_error(OPERATOR_QUEUE, "incident not found", message_id=task.incident_id)
        return SignInResult("not-found", task.incident_id, "no such incident")
    if incident.get("sign_in") != BLOCKED:
        log.info("sign-in is %s for this incident; nothing to do", incident.get("sign_in") or "not blocked")
        return SignInResult("not-blocked", task.incident_id, f"sign-in is {incident.get('sign_in') or 'not blocked'}")
    graph = deps.require_graph()
    user_id = incident["user_id"]
    try:
        user = await graph.get_user(user_id, select="id,accountEnabled")
        already = user.get("accountEnabled") is True
        if not already:
            await graph.set_account_enabled(user_id, True)
            if (await graph.get_user(user_id, select="id,accountEnabled")).get("accountEnabled") is not True:
                raise TransientError("accountEnabled did not read back true yet")
    except PermanentError as exc:
        error = f"re-enabling sign-in failed: {exc}"[:500]
        log.error("%s", error)
        await deps.ledger.update_incident(task.incident_id, {"sign_in_error": error})
        return SignInResult("failed", task.incident_id, error)
    await deps.ledger.update_incident(task.incident_id, {
        "sign_in": RESTORED, "sign_in_restored_at": iso(deps.clock()), "sign_in_restored_by": task.requested_by,
        "sign_in_error": ""})
    log.info("sign-in re-enabled (asked by %s)%s", task.requested_by, "; it was already enabled" if already else "")
    return SignInResult("already enabled" if already else "enabled", task.incident_id)
