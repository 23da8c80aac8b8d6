"""enforce-mfa: require MFA, then remove authentication methods registered after the
compromise began (the attacker's own authenticator, SMS phone, TOTP app).

Mode ``ca-group`` adds the user to the group a Conditional Access policy requiring MFA
targets ("already a member" is success), in one request with the worker's other incidents that
reach this step together (``PATCH /groups/{id}`` binds up to 20 members: one directory write, not
one per user, beside the containment's writes; tenant_calls.py); ``per-user`` sets the beta
per-user MFA state to enforced.

"After the compromise began" is the cut-off AUTH_METHOD_CUTOFF: ``first-risk-detection``
(default: the earliest Identity Protection detection the snapshot found, else the alert's
time), ``first-risky-sign-in`` (the earliest detection of a sign-in), or ``lookback`` (the
alert's time minus AUTH_METHOD_LOOKBACK_HOURS). Methods with a ``createdDateTime``
(authenticator, FIDO2, Windows Hello, TAP) are dated by it. Phone, email and software OATH
methods carry none in v1.0: they are dated by their registration in the directory audit log
(``auditLogs/directoryAudits``, "User/Admin registered|updated security info", service
Authentication Methods), read once per incident and shared with revoke-app-consent
(steps/audit_reads.py). What still cannot be dated, and a phone Graph refuses to delete
because it is the user's default sign-in method (400), is kept and listed with its id for
review (``kept_for_review``: the incident and the SOC mail). Each removed method is recorded
(type, id, name, registration time). The password method is never touched.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..cutoff import cutoff
from ..errors import ConfigError, PermanentError
from ..states import StepState
from ..timestamps import parse_timestamp
from .audit_reads import AUDIT_CALL, SHARED_AUDIT_CALLS, directory_audits
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


def method_kind(method: dict[str, Any]) -> str:
    """phone:<phoneType> for phones, else the short type (softwareOath, email, ...)."""
    short = method_type(method).rsplit(".", 1)[-1].removesuffix("AuthenticationMethod")
    if short == "phone":
        return f"phone:{method.get('phoneType') or method.get('authenticationPhoneType') or 'mobile'}"
    return short


# Words of an audit event's resultReason -> the method kind it registered (most specific first).
_AUDIT_KINDS = (("alternate mobile phone", "phone:alternateMobile"), ("office phone", "phone:office"),
                ("mobile phone", "phone:mobile"), ("phone", "phone:mobile"), ("email", "email"),
                ("oath", "softwareOath"), ("verification code", "softwareOath"))
_REGISTRATIONS = ("registered security info", "updated security info")


def _targets(event: dict[str, Any], user_id: str) -> bool:
    return any(str(t.get("id") or "").lower() == user_id.lower() for t in event.get("targetResources") or [])


def registration_times(audits: list[dict[str, Any]], user_id: str | None = None) -> dict[str, datetime]:
    """The latest registration (or update) time of each method kind, from security-info audit events
    (with ``user_id``: only the events about that user; the shared read also holds what the user did)."""
    latest: dict[str, datetime] = {}
    for event in audits:
        activity = str(event.get("activityDisplayName") or "").lower()
        if event.get("result", "success") != "success" or not any(r in activity for r in _REGISTRATIONS):
            continue
        if user_id is not None and not _targets(event, user_id):
            continue
        reason = str(event.get("resultReason") or "").lower()
        kind = next((k for words, k in _AUDIT_KINDS if words in reason), None)
        try:
            when = parse_timestamp(event.get("activityDateTime") or "")
        except ValueError:
            continue
        if kind and (kind not in latest or when > latest[kind]):
            latest[kind] = when
    return latest


def plan_methods(methods: list[dict[str, Any]], since: str, audits: list[dict[str, Any]] | None,
                 audit_error: str = "", user_id: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(methods to remove, methods kept for review) — pure.

    Dated by createdDateTime, else by their registration event; registered at or after ``since``
    means removed. Undatable methods are kept for review. ``audits`` None: the log was not read.
    """
    threshold = parse_timestamp(since)
    registered = registration_times(audits or [], user_id)
    doomed, review = [], []
    for method in methods:
        collection = COLLECTIONS.get(method_type(method))
        if not collection:
            continue  # the password, or a type we do not remove
        entry = {"type": method_type(method).rsplit(".", 1)[-1], "collection": collection, "id": method.get("id"),
                 "displayName": method.get("displayName") or method.get("deviceTag") or method.get("phoneNumber")
                 or method.get("emailAddress") or ""}
        created = created_at(method)
        when: datetime | None = None
        if created:
            try:
                when = parse_timestamp(created)
            except ValueError:
                when = None
        else:
            when = registered.get(method_kind(method))
            if when is not None:
                entry["dated_by"] = "directory audit"
        if when is None:
            why = (f"no creation time and the directory audit log could not be read ({audit_error})" if audits is None
                   else "no creation time and no registration event in the directory audit log: it cannot be dated")
            review.append({**entry, "name": entry["displayName"], "reason": why})
            continue
        entry["createdDateTime"] = when.isoformat().replace("+00:00", "Z")
        if when >= threshold:
            doomed.append(entry)
    return doomed, review


def methods_to_remove(methods: list[dict[str, Any]], since: str) -> list[dict[str, Any]]:
    """Methods created at or after ``since`` that can be deleted, by createdDateTime only (pure)."""
    return [m for m in plan_methods(methods, since, [])[0] if "dated_by" not in m]


class EnforceMfa(Step):
    name = "enforce-mfa"
    calls = (
        Call("graph", "POST /groups/{id}/members/$ref (ca-group)", "GroupMember.ReadWrite.All"),
        Call("graph", "PATCH /groups/{id} members@odata.bind (ca-group, up to 20 users in one request)",
             "GroupMember.ReadWrite.All"),
        Call("graph", "GET beta /users/{id}/authentication/requirements (per-user)", "Policy.Read.All"),
        Call("graph", "PATCH beta /users/{id}/authentication/requirements (per-user)", "Policy.ReadWrite.AuthenticationMethod"),
        Call("graph", "GET /users/{id}/authentication/methods", "UserAuthenticationMethod.ReadWrite.All"),
        Call("graph", "DELETE /users/{id}/authentication/{type}Methods/{id}", "UserAuthenticationMethod.ReadWrite.All"),
        Call("graph", AUDIT_CALL, "AuditLog.Read.All"),
        *(Call("graph", shared, "AuditLog.Read.All") for shared in SHARED_AUDIT_CALLS),
        # undo (shared/undo.py, the worker): take the user out of the group again if this step added them
        Call("graph", "DELETE /groups/{id}/members/{id}/$ref (undo) (ca-group)", "GroupMember.ReadWrite.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        settings, uid = ctx.settings, ctx.user_id
        detail: dict[str, Any] = {"mode": settings.mfa_mode}
        calls = ctx.deps.tenant_calls()
        calls.mfa_reached(uid)  # the other incidents' group adds stop waiting for this one
        if settings.mfa_mode == "ca-group":
            if not settings.mfa_group_id:
                raise ConfigError("MFA_MODE=ca-group needs MFA_GROUP_ID (the Conditional Access policy's target group)")
            outcome: dict[str, bool] = {}

            async def add() -> None:  # with the other incidents' adds of the moment: one request for up to 20
                outcome["added"] = await calls.add_to_group(settings.mfa_group_id, uid)

            # Graph answers "already exist" for a member: a repeat is a no-op, no checkpoint needed.
            ran = await ctx.effect("mfa-group", add, description=f"add the user to MFA group {settings.mfa_group_id}",
                                   idempotent=True)
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
                                 description="set per-user MFA to enforced", verify=enforced, state_verified=True)
                detail["mfa"] = "planned" if ctx.dry_run else "enforced"

        if not settings.remove_new_auth_methods:
            detail["methods"] = "not checked (REMOVE_NEW_AUTH_METHODS=false)"
            return StepResult(StepState.SUCCEEDED, f"MFA {detail['mfa']}", detail)
        cut = cutoff(settings, ctx.incident, ctx.deps.clock())
        methods = await ctx.graph.list_auth_methods(uid)
        audits: list[dict[str, Any]] | None = None
        audit_error = ""
        if any(COLLECTIONS.get(method_type(m)) and not created_at(m) for m in methods):
            # One read of the directory audit log per incident, shared with revoke-app-consent
            # (steps/audit_reads.py); refused (e.g. AuditLog.Read.All not granted): listed for review.
            log = await directory_audits(ctx)
            audits, audit_error = (log.events if log.available else None), log.error[:200]
        doomed, review = plan_methods(methods, cut["at"], audits, audit_error, user_id=uid)
        removed, gone = [], []
        for method in doomed:
            result: dict[str, bool] = {}

            async def delete(m=method, r=result) -> None:
                r["deleted"] = await ctx.graph.delete_auth_method(uid, m["collection"], m["id"])

            try:
                ran = await ctx.effect(  # a method already gone answers 404: a repeat is a no-op
                    f"remove-method-{method['id']}", delete,
                    description=f"remove {method['type']} '{method['displayName']}' registered {method['createdDateTime']}",
                    idempotent=True,
                )
            except PermanentError as exc:
                if exc.status == 400 and "default" in str(exc).lower():
                    review.append({**method, "name": method["displayName"],
                                   "reason": "registered after the cut-off but it is the user's default sign-in method: "
                                             "Graph refused the delete (400); change the default method, then remove it"})
                    ctx.log.warning("method %s kept: it is the default sign-in method (%s)", method["id"], exc)
                    continue
                raise
            if ran and result["deleted"]:
                removed.append(method)
            elif not ctx.dry_run:
                gone.append(method)
        if ctx.dry_run:
            detail["would_remove"] = doomed
        detail.update(cutoff=cut, first_risk_at=cut["at"], methods_checked=len(methods), removed_methods=removed,
                      already_gone=gone, kept_for_review=review)
        summary = f"MFA {detail['mfa']}; {len(removed)} method(s) registered after {cut['at']} removed"
        if review:
            summary += f"; {len(review)} kept for review"
        return StepResult(StepState.SUCCEEDED, summary, detail)
