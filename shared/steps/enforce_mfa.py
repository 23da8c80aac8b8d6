"""enforce-mfa: require MFA, then remove authentication methods registered after the first
risk signal (likely the attacker's own authenticator).

Mode ``ca-group`` adds the user to the group a Conditional Access policy requiring MFA
targets ("already a member" is success); ``per-user`` sets the beta per-user MFA state to
enforced. Each removed method is recorded (type, id, name, created time) so an operator
can tell the user what to re-register. The password method is never touched; methods
without a creation time are kept (their age is unknown).
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..states import StepState
from ..timestamps import parse_timestamp
from .base import Call, Step, StepContext, StepResult

# @odata.type → the collection its DELETE lives under.
COLLECTIONS = {
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
    "#microsoft.graph.emailAuthenticationMethod": "emailMethods",
    "#microsoft.graph.softwareOathAuthenticationMethod": "softwareOathMethods",
    "#microsoft.graph.fido2AuthenticationMethod": "fido2Methods",
    "#microsoft.graph.temporaryAccessPassAuthenticationMethod": "temporaryAccessPassMethods",
    "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod": "windowsHelloForBusinessMethods",
}


def method_type(method: dict[str, Any]) -> str:
    return method.get("@odata.type") or method.get("odata.type") or ""


def created_at(method: dict[str, Any]) -> str | None:
    return method.get("createdDateTime") or method.get("creationDateTime")


def methods_to_remove(methods: list[dict[str, Any]], since: str) -> list[dict[str, Any]]:
    """Methods created at or after ``since`` that can be deleted (pure)."""
    threshold = parse_timestamp(since)
    doomed = []
    for method in methods:
        collection = COLLECTIONS.get(method_type(method))
        created = created_at(method)
        if not collection or not created:
            continue
        try:
            if parse_timestamp(created) >= threshold:
                doomed.append({
                    "type": method_type(method).rsplit(".", 1)[-1],
                    "collection": collection,
                    "id": method.get("id"),
                    "displayName": method.get("displayName") or method.get("deviceTag") or "",
                    "createdDateTime": created,
                })
        except ValueError:
            continue
    return doomed


class EnforceMfa(Step):
    name = "enforce-mfa"
    calls = (
        Call("graph", "POST /groups/{id}/members/$ref (ca-group)", "GroupMember.ReadWrite.All"),
        Call("graph", "GET beta /users/{id}/authentication/requirements (per-user)", "Policy.Read.All"),
        Call("graph", "PATCH beta /users/{id}/authentication/requirements (per-user)", "Policy.ReadWrite.AuthenticationMethod"),
        Call("graph", "GET /users/{id}/authentication/methods", "UserAuthenticationMethod.ReadWrite.All"),
        Call("graph", "DELETE /users/{id}/authentication/{type}Methods/{id}", "UserAuthenticationMethod.ReadWrite.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        settings, uid = ctx.settings, ctx.user_id
        detail: dict[str, Any] = {"mode": settings.mfa_mode}
        if settings.mfa_mode == "ca-group":
            if not settings.mfa_group_id:
                raise ConfigError("MFA_MODE=ca-group needs MFA_GROUP_ID (the Conditional Access policy's target group)")
            outcome: dict[str, bool] = {}

            async def add() -> None:
                outcome["added"] = await ctx.graph.add_group_member(settings.mfa_group_id, uid)

            ran = await ctx.effect("mfa-group", add, description=f"add the user to MFA group {settings.mfa_group_id}")
            if ctx.dry_run:
                detail["mfa"] = "planned"
            elif not ran:
                detail["mfa"] = "already done"
            else:
                detail["mfa"] = "added to group" if outcome["added"] else "already a member"
        else:
            state = await ctx.graph.get_mfa_state(uid)
            detail["per_user_mfa_before"] = state
            if state == "enforced":
                detail["mfa"] = "already enforced"
            else:
                async def enforced(_record: dict[str, Any]) -> bool:
                    return await ctx.graph.get_mfa_state(uid) == "enforced"

                await ctx.effect("per-user-mfa", lambda: ctx.graph.enforce_per_user_mfa(uid),
                                 description="set per-user MFA to enforced", verify=enforced)
                detail["mfa"] = "planned" if ctx.dry_run else "enforced"

        if not settings.remove_new_auth_methods:
            detail["methods"] = "not checked (REMOVE_NEW_AUTH_METHODS=false)"
            return StepResult(StepState.SUCCEEDED, f"MFA {detail['mfa']}", detail)
        since = str(ctx.incident.get("first_risk_at") or ctx.incident.get("detected_at") or "")
        methods = await ctx.graph.list_auth_methods(uid)
        doomed = methods_to_remove(methods, since)
        removed, gone = [], []
        for method in doomed:
            result: dict[str, bool] = {}

            async def delete(m=method, r=result) -> None:
                r["deleted"] = await ctx.graph.delete_auth_method(uid, m["collection"], m["id"])

            ran = await ctx.effect(
                f"remove-method-{method['id']}", delete,
                description=f"remove {method['type']} '{method['displayName']}' registered {method['createdDateTime']}",
            )
            if ran and result["deleted"]:
                removed.append(method)
            elif not ctx.dry_run:
                gone.append(method)
        if ctx.dry_run:
            detail["would_remove"] = doomed
        detail.update(first_risk_at=since, methods_checked=len(methods), removed_methods=removed, already_gone=gone)
        summary = f"MFA {detail['mfa']}; {len(removed)} method(s) registered after {since} removed"
        return StepResult(StepState.SUCCEEDED, summary, detail)
