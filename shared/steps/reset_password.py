"""reset-password: reset the password (force change at next sign-in) and revoke every sign-in
session and refresh token — containment — and nothing before them that could make them wait.

Identity Protection (1 request per second per tenant, for every app together) is not called
before the two effects: containment never waits on it. Right after them, the step records the
Identity Protection part of the evidence (snapshot.record_risk_evidence: the risk as it was
before the change, the detections, the cut-off), read in bulk with the other incidents of the
moment. The user is confirmed compromised (and, once remediated, the risk dismissed) by the close
step, in batches: "dismiss after remediation".

With BLOCK_SIGN_IN=until-close|until-approved, sign-in is blocked first (``accountEnabled`` false,
steps/signin_block.py): the quickest cut, before anything else. Never for a synced user (the
incident says so); a refused block is recorded and containment goes on.

- Revoking sessions is its own effect and is never skipped because the reset failed: when the
  reset fails for good, the sessions are revoked first and then the failure is reported.
- Entra refuses a cloud reset of a user mastered elsewhere: on-premises synced users and users
  of a federated domain (400 ``Request_BadRequest``). That is not a failure of the incident:
  the step records "on-premises password reset required", sets ``action_required`` on the
  incident (the SOC mail and ``responder status`` show it first) and, when ONPREM_RESET_QUEUE
  is set, hands the reset to a hybrid worker through that queue. The playbook goes on.
- Identity Protection failing (no P2 licence, a missing permission) is recorded as an unavailable
  evidence section, never a reason to delay or undo containment.

The password is generated inside the effect, sent once in the PATCH body and dropped: it
is in no log, ledger row, queue body, mail or exception. Idempotency: every effect is
checkpointed; if a worker dies between the PATCH and the checkpoint, the retry reads the user's
``lastPasswordChangeDateTime`` and does not reset a second time when the change landed after the
recorded issue time; the revoke is verified the same way through ``signInSessionsValidFromDateTime``.
"""
from __future__ import annotations

from typing import Any

from ..errors import PermanentError
from ..model import OnPremResetRequest
from ..passwords import generate_password
from ..states import StepState
from ..timestamps import parse_timestamp
from .base import Call, Step, StepContext, StepResult
from .signin_block import block_sign_in
from .snapshot import record_risk_evidence

SYNCED_WARNING = (
    "user is synced from on-premises AD: the cloud password reset is not written back "
    "unless password writeback is enabled; reset the on-premises password too"
)
ONPREM_REQUIRED = "on-premises password reset required"
# What Entra answers when it refuses a cloud password reset of a user it does not master.
_REFUSALS = ("on-premises mastered", "originated within an external service", "federated")


def directory_refused(exc: PermanentError, user: dict[str, Any]) -> bool:
    """Is this the refusal of a cloud reset for a synced or federated user (not a real failure)?"""
    if exc.status != 400:
        return False
    text = str(exc).lower()
    if "complexity" in text:
        return False  # our password was refused, not the user's master
    return any(marker in text for marker in _REFUSALS) or bool(user.get("on_prem_synced"))


def action_text(incident: dict[str, Any]) -> str:
    """The sentence the SOC sees first for a refused reset."""
    sam, domain = incident.get("on_prem_sam_account_name"), incident.get("on_prem_domain_name")
    upn = incident.get("user_principal_name") or incident.get("user_id")
    if incident.get("on_prem_synced"):
        who = f"{domain}\\{sam}" if sam and domain else upn
        where = "in on-premises Active Directory (password hash sync then remediates the user's risk)"
    else:
        who = upn
        where = "at the identity provider that federates this domain"
    return (f"ON-PREMISES PASSWORD RESET REQUIRED: Entra refused the cloud reset; reset the password of {who} "
            f"{where}. Sessions were revoked; until then the user stays confirmed compromised.")


def _with_block(summary: str, detail: dict[str, Any]) -> str:
    block = detail.get("sign_in")
    if not block:
        return summary
    if block.get("blocked") is True:
        return f"sign-in blocked ({block.get('policy')}); {summary}"
    if block.get("blocked") == "planned":
        return f"would block sign-in; {summary}"
    return f"sign-in not blocked; {summary}"


class ResetPassword(Step):
    name = "reset-password"
    calls = (
        Call("graph", "PATCH /users/{id} passwordProfile", "User-PasswordProfile.ReadWrite.All"),
        Call("graph", "POST /users/{id}/revokeSignInSessions", "User.RevokeSessions.All"),
        Call("graph", "GET /users/{id}?$select=lastPasswordChangeDateTime,signInSessionsValidFromDateTime,accountEnabled",
             "User.Read.All"),
        Call("graph", "PATCH /users/{id} accountEnabled=false (BLOCK_SIGN_IN=until-close/until-approved)",
             "User.EnableDisableAccount.All"),
        # after containment: the Identity Protection evidence (snapshot.record_risk_evidence)
        Call("graph", "GET /identityProtection/riskyUsers?$filter=riskState eq 'atRisk' or riskState eq 'confirmedCompromised' (shared)",
             "IdentityRiskyUser.Read.All"),
        Call("graph", "GET /identityProtection/riskyUsers/{id}/history", "IdentityRiskyUser.Read.All"),
        Call("graph", "GET /identityProtection/riskDetections?$filter=userId eq '{id}'", "IdentityRiskEvent.Read.All"),
        Call("graph", "GET /identityProtection/riskDetections?$filter=detectedDateTime ge {t} (shared)",
             "IdentityRiskEvent.Read.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        user_id = ctx.user_id
        detail: dict[str, Any] = {"force_change_next_sign_in": True}
        if ctx.settings.block_sign_in != "never":
            detail["sign_in"] = await block_sign_in(ctx)

        async def reset() -> None:
            await ctx.graph.reset_password(user_id, generate_password(), force_change=True)

        async def landed(record: dict[str, Any]) -> bool:
            user = await ctx.graph.get_user(user_id, select="id,lastPasswordChangeDateTime")
            changed = user.get("lastPasswordChangeDateTime")
            if not changed:
                return False
            # Graph reports whole seconds: compare at that precision.
            issued = parse_timestamp(record["issued_at"]).replace(microsecond=0)
            return parse_timestamp(changed) >= issued

        failure: PermanentError | None = None
        try:
            reset_now = await ctx.effect(
                "password-reset", reset, description="reset the password (force change at next sign-in)", verify=landed
            )
            detail["password_reset"] = "done" if reset_now else ("planned" if ctx.dry_run else "already done")
        except PermanentError as exc:
            failure = exc
            ctx.log.warning("password reset refused: %s", exc)

        async def revoked(record: dict[str, Any]) -> bool:
            user = await ctx.graph.get_user(user_id, select="id,signInSessionsValidFromDateTime")
            valid_from = user.get("signInSessionsValidFromDateTime")
            issued = parse_timestamp(record["issued_at"]).replace(microsecond=0)
            return bool(valid_from) and parse_timestamp(valid_from) >= issued

        # Never skipped because the reset failed: containment first, then report the failure.
        revoked_now = await ctx.effect(
            "sessions-revoked",
            lambda: ctx.graph.revoke_sessions(user_id),
            description="revoke all sign-in sessions and refresh tokens",
            verify=revoked,
        )
        detail["sessions_revoked"] = "done" if revoked_now else ("planned" if ctx.dry_run else "already done")

        if failure is not None and not directory_refused(failure, ctx.incident):
            raise failure
        # Contained: now the Identity Protection evidence (shared reads, off the containment path).
        detail["risk_evidence"], marks = await record_risk_evidence(ctx)
        if failure is not None:
            detail["password_reset"] = ONPREM_REQUIRED
            detail["refusal"] = str(failure)[:300]
            action = action_text(ctx.incident)
            detail["action_required"] = action
            marks["action_required"] = ctx.incident["action_required"] = action
            ctx.log.warning("%s", action)
            if ctx.settings.onprem_reset_queue:
                await self._hand_off(ctx, failure)
                detail["onprem_handoff"] = ctx.settings.onprem_reset_queue
            return StepResult(StepState.SUCCEEDED, _with_block(f"{ONPREM_REQUIRED}; sessions revoked", detail), detail,
                              marks)
        if ctx.incident.get("on_prem_synced"):
            detail["warning"] = SYNCED_WARNING
            ctx.log.warning("%s", SYNCED_WARNING)
        return StepResult(StepState.SUCCEEDED, _with_block("password reset and sessions revoked", detail), detail, marks)

    @staticmethod
    async def _hand_off(ctx: StepContext, failure: PermanentError) -> None:
        """Put the on-premises reset on ONPREM_RESET_QUEUE for a hybrid worker (no password in it)."""
        incident = ctx.incident
        message = OnPremResetRequest(
            incident_id=ctx.task.incident_id,
            user_id=ctx.user_id,
            user_principal_name=ctx.upn,
            on_premises_sam_account_name=incident.get("on_prem_sam_account_name") or "",
            on_premises_domain_name=incident.get("on_prem_domain_name") or "",
            reason="Entra refused the cloud password reset: " + str(failure)[:300],
        )
        queue = ctx.settings.onprem_reset_queue
        await ctx.effect("onprem-handoff", lambda: ctx.deps.queues.send(queue, message.to_json()),
                         description=f"hand the on-premises password reset to the {queue} queue")
