"""reset-password: a new strong random password (force change at next sign-in), then
revoke every sign-in session and refresh token.

The password is generated inside the effect, sent once in the PATCH body and dropped: it
is in no log, ledger row, queue body, mail or exception. Idempotency: the effect is
checkpointed before the PATCH; if a worker dies between the PATCH and the checkpoint, the
retry reads the user's ``lastPasswordChangeDateTime`` and does not reset a second time
when the tenant shows the change landed after the recorded issue time; the revoke is
verified the same way through ``signInSessionsValidFromDateTime``.
"""
from __future__ import annotations

from typing import Any

from ..passwords import generate_password
from ..states import StepState
from ..timestamps import parse_timestamp
from .base import Call, Step, StepContext, StepResult

SYNCED_WARNING = (
    "user is synced from on-premises AD: the cloud password reset is not written back "
    "unless password writeback is enabled; reset the on-premises password too"
)


class ResetPassword(Step):
    name = "reset-password"
    calls = (
        Call("graph", "PATCH /users/{id} passwordProfile", "User-PasswordProfile.ReadWrite.All"),
        Call("graph", "POST /users/{id}/revokeSignInSessions", "User.RevokeSessions.All"),
        Call("graph", "GET /users/{id}?$select=lastPasswordChangeDateTime,signInSessionsValidFromDateTime", "User.Read.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        user_id = ctx.user_id

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

        reset_now = await ctx.effect(
            "password-reset", reset, description="reset the password (force change at next sign-in)", verify=landed
        )
        async def revoked(record: dict[str, Any]) -> bool:
            user = await ctx.graph.get_user(user_id, select="id,signInSessionsValidFromDateTime")
            valid_from = user.get("signInSessionsValidFromDateTime")
            issued = parse_timestamp(record["issued_at"]).replace(microsecond=0)
            return bool(valid_from) and parse_timestamp(valid_from) >= issued

        revoked_now = await ctx.effect(
            "sessions-revoked",
            lambda: ctx.graph.revoke_sessions(user_id),
            description="revoke all sign-in sessions and refresh tokens",
            verify=revoked,
        )
        detail: dict[str, Any] = {
            "password_reset": "done" if reset_now else ("planned" if ctx.dry_run else "already done"),
            "sessions_revoked": "done" if revoked_now else ("planned" if ctx.dry_run else "already done"),
            "force_change_next_sign_in": True,
        }
        if ctx.incident.get("on_prem_synced"):
            detail["warning"] = SYNCED_WARNING
            ctx.log.warning("%s", SYNCED_WARNING)
        return StepResult(StepState.SUCCEEDED, "password reset and sessions revoked", detail)
