"""recovery-pass: the user's way back in: a one-time Temporary Access Pass for a person to hand over.

reset-password leaves the user with a random password nobody saw. With RECOVERY=tap this step, after
containment (the last step before close; shared/playbook.py), issues a **one-time** Temporary Access
Pass (``isUsableOnce``, lifetime RECOVERY_TAP_LIFETIME_MINUTES) and mails it **only** to the help desk
mailbox (RECOVERY_HELPDESK_MAILBOX) or, with RECOVERY_DELIVER_TO=manager, to the user's manager from
Graph when the manager is a user, enabled, has a mailbox, is not the user and has no open incident of
their own (else the help desk). Never to the user's own mailbox (the attacker may still read it), and
never for a protected or privileged account (a person issues that one, after verifying who asks).

Before anything changes the tenant's TAP policy is read: disabled, or a lifetime outside the policy's
range, is reported as such on the incident ("ACTION REQUIRED"), and nothing is issued.

The pass exists in this process's memory only, between Graph's answer and the mail: it is never
logged, never written to the ledger, the checkpoint or a queue, and cannot be read back from Graph.
So this step does not use ``ctx.effect`` (which repeats or verifies a change); it keeps its own
phases in the checkpoint, written before and after each call:

- ``planned`` (recipient, lifetime, policy): nothing issued yet.
- ``creating``: the POST may or may not have landed. A redelivery issues a new pass: a user has one
  Temporary Access Pass at a time, so the new one replaces a pass that was never mailed.
- ``mailing`` (written after Graph answered, before the mail is sent): the mail may or may not have
  left. A redelivery does NOT issue another pass (the first may be in the help desk's inbox): it records
  "delivery uncertain" with the expiry, for a person to check.
- ``delivered`` / ``not-delivered`` (Graph refused the mail: the pass is deleted again).

So a pass that was delivered is never followed by a second one, and a pass that was never mailed is
replaced, not orphaned. (A later incident for the same user removes this pass in its enforce-mfa, like
any method registered after the compromise began, and issues its own.) What the incident records: issued or not (and why), to whom, when it expires.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..errors import PermanentError, TransientError, safe_reason
from ..states import TERMINAL_INCIDENT_STATES, StepState
from ..timestamps import iso, parse_timestamp
from ..validation import clean_text
from .base import Call, Step, StepContext, StepResult

PLANNED, CREATING, MAILING, DELIVERED, NOT_DELIVERED = "planned", "creating", "mailing", "delivered", "not-delivered"
TAP_POLICY = "GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass (RECOVERY=tap)"


def tap_policy_problem(policy: dict[str, Any], lifetime: int) -> str:
    """Why no pass can be issued under this policy ('' when one can). Pure."""
    if str(policy.get("state") or "").lower() != "enabled":
        return ("the tenant's Temporary Access Pass policy is disabled (Entra admin center: Protection > Authentication "
                "methods > Temporary Access Pass): no pass can be issued")
    low, high = policy.get("minimumLifetimeInMinutes"), policy.get("maximumLifetimeInMinutes")
    if isinstance(low, int) and isinstance(high, int) and not low <= lifetime <= high:
        return (f"RECOVERY_TAP_LIFETIME_MINUTES={lifetime} is out of the tenant's Temporary Access Pass policy range "
                f"({low}-{high} minutes): change one or the other")
    return ""


def manager_problem(manager: dict[str, Any] | None, user: dict[str, Any], manager_has_open_incident: bool) -> str:
    """Why the manager cannot receive the pass ('' when they can). Pure."""
    if manager is None:
        return "the user has no manager in the directory"
    if str(manager.get("@odata.type") or "#microsoft.graph.user") != "#microsoft.graph.user":
        return "the manager is not a user (an organizational contact)"
    if manager.get("accountEnabled") is False:
        return "the manager's account is disabled"
    mail = str(manager.get("mail") or "").strip().lower()
    if not mail:
        return "the manager has no mailbox"
    own = {str(user.get(k) or "").lower() for k in ("mail", "user_principal_name", "userPrincipalName")} - {""}
    if str(manager.get("id") or "").lower() == str(user.get("user_id") or user.get("id") or "").lower() or mail in own:
        return "the manager is the user"
    if manager_has_open_incident:
        return "the manager has an open incident of their own (their mailbox may be compromised too)"
    return ""


class RecoveryPass(Step):
    name = "recovery-pass"
    calls = (
        Call("graph", TAP_POLICY, "Policy.Read.AuthenticationMethod"),
        Call("graph", "GET /users/{id}/manager (RECOVERY=tap)", "User.Read.All"),
        Call("graph", "POST /users/{id}/authentication/temporaryAccessPassMethods (RECOVERY=tap)",
             "UserAuthMethod-TAP.ReadWrite.All"),
        Call("graph", "DELETE /users/{id}/authentication/temporaryAccessPassMethods/{id}, a pass not delivered (RECOVERY=tap)",
             "UserAuthMethod-TAP.ReadWrite.All"),
        Call("graph", "POST /users/{sender}/sendMail, the pass to the help desk or the manager (RECOVERY=tap)", "Mail.Send"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        settings = ctx.settings
        if settings.recovery != "tap":
            return StepResult(StepState.SKIPPED, "RECOVERY=none: no recovery pass", {"recovery": "off"})
        state = dict(ctx.checkpoint.get("tap") or {})
        phase = state.get("phase")
        if phase in (DELIVERED, NOT_DELIVERED, "uncertain", "refused"):
            return self._result(state)
        if phase == MAILING:
            # The worker stopped after Graph issued the pass and before the mail was recorded: it may be in
            # the recipient's inbox. Issuing another would silently replace a pass a person may be holding.
            state.update(phase="uncertain", note=(
                f"delivery UNCERTAIN: the worker stopped while mailing the pass to {state.get('to')}; ask them whether "
                f"it arrived (it expires at {state.get('expires_at')}); if not, issue one by hand"))
            await ctx.save(tap=state)
            return self._result(state)
        if phase is None:
            state = await self._plan(ctx)
            await ctx.save(tap=state)
            if state["phase"] == "refused":
                return self._result(state)
        if ctx.dry_run:
            return StepResult(StepState.SUCCEEDED, f"would issue a one-time pass and mail it to {state['to']}",
                              {"recovery": "planned", "to": state["to"], "via": state["via"]})
        return self._result(await self._issue_and_mail(ctx, state))

    # -- deciding ---------------------------------------------------------------------------------

    async def _plan(self, ctx: StepContext) -> dict[str, Any]:
        settings, incident = ctx.settings, ctx.incident
        lifetime = settings.recovery_tap_lifetime_minutes
        if incident.get("protected") != "no" or incident.get("privileged_roles"):
            why = clean_text(incident.get("protection"), 300) or "protection not assessed"
            return {"phase": "refused", "reason": f"not issued automatically for a protected or privileged account ({why}): "
                                                  "a person issues one after verifying who asks"}
        if not settings.notify_sender:
            return {"phase": "refused", "reason": "NOTIFY_SENDER is not set: there is no mailbox to send the pass from"}
        try:
            policy = await ctx.graph.get_tap_policy()
        except PermanentError as exc:
            return {"phase": "refused", "reason": f"the Temporary Access Pass policy could not be read: {safe_reason(exc)[:300]}"}
        problem = tap_policy_problem(policy, lifetime)
        policy_view = {k: policy.get(k) for k in ("state", "minimumLifetimeInMinutes", "maximumLifetimeInMinutes",
                                                  "isUsableOnce", "defaultLength")}
        if problem:
            return {"phase": "refused", "reason": problem, "policy": policy_view}
        to, via, fallback = settings.recovery_helpdesk_mailbox, "helpdesk", ""
        if settings.recovery_deliver_to == "manager":
            manager = None
            try:
                manager = await ctx.graph.get_manager(ctx.user_id)
                open_incident = await self._has_open_incident(ctx, manager) if manager else False
                fallback = manager_problem(manager, incident, open_incident)
            except PermanentError as exc:
                fallback = f"the manager could not be read: {safe_reason(exc)[:200]}"
            if not fallback and manager is not None:
                to, via = str(manager["mail"]), "manager"
        own = {str(incident.get(k) or "").lower() for k in ("user_principal_name", "mail")} - {""}
        if to and to.lower() in own:
            to = ""  # never the user's own mailbox, whatever the configuration says
        if not to:
            reason = "no recipient: " + (fallback or "RECOVERY_HELPDESK_MAILBOX is not set") + \
                     ("; RECOVERY_HELPDESK_MAILBOX is not set either" if fallback else "")
            return {"phase": "refused", "reason": reason, "policy": policy_view}
        plan = {"phase": PLANNED, "to": to, "via": via, "lifetime_minutes": lifetime, "policy": policy_view}
        if fallback:
            plan["fallback"] = f"sent to the help desk because {fallback}"
        return plan

    @staticmethod
    async def _has_open_incident(ctx: StepContext, manager: dict[str, Any]) -> bool:
        for key in (manager.get("id"), manager.get("userPrincipalName")):
            if not key:
                continue
            found = await ctx.deps.ledger.get_open(str(key).lower())
            if found is None:
                continue
            other = await ctx.deps.ledger.get_incident(found[0]["incident_id"])
            if other is not None and other.get("state") not in TERMINAL_INCIDENT_STATES:
                return True
        return False

    # -- issuing ----------------------------------------------------------------------------------

    async def _issue_and_mail(self, ctx: StepContext, state: dict[str, Any]) -> dict[str, Any]:
        graph, settings, uid = ctx.graph, ctx.settings, ctx.user_id
        await ctx.save(tap={**state, "phase": CREATING, "creating_at": iso(ctx.deps.clock())})
        try:
            created = await graph.create_tap(uid, int(state["lifetime_minutes"]), usable_once=True)
        except PermanentError as exc:
            refused = {**state, "phase": "refused", "reason": f"Graph refused to issue the pass: {safe_reason(exc)[:300]}"}
            await ctx.save(tap=refused)
            return refused
        secret = str(created.pop("temporaryAccessPass", "") or "")
        start = str(created.get("startDateTime") or created.get("createdDateTime") or iso(ctx.deps.clock()))
        lifetime = int(created.get("lifetimeInMinutes") or state["lifetime_minutes"])
        try:
            expires = iso(parse_timestamp(start) + timedelta(minutes=lifetime))
        except ValueError:
            expires = iso(ctx.deps.clock() + timedelta(minutes=lifetime))
        issued = {**state, "method_id": str(created.get("id") or ""), "issued_at": str(created.get("createdDateTime") or start),
                  "starts_at": start, "expires_at": expires, "usable_once": bool(created.get("isUsableOnce", True))}
        if not secret:
            issued.update(phase="refused", reason="Graph answered without a pass")
            await ctx.save(tap=issued)
            return issued
        # From here the pass may reach a mailbox: a redelivery must not issue another one.
        await ctx.save(tap={**issued, "phase": MAILING, "mailing_at": iso(ctx.deps.clock())})
        subject, text = self._mail(ctx, issued, secret)
        del secret
        try:
            await graph.send_mail(settings.notify_sender, issued["to"], subject, text)
        except (PermanentError, TransientError) as exc:
            if isinstance(exc, TransientError) and exc.status != 429:
                # 5xx or a timeout: the mail may have left. Do not delete or re-issue: a person checks.
                done = {**issued, "phase": "uncertain", "note": (
                    f"delivery UNCERTAIN: the mail to {issued['to']} failed with {safe_reason(exc)[:120]}; ask whether it "
                    f"arrived (the pass expires at {expires}); if not, issue one by hand")}
                await ctx.save(tap=done)
                return done
            # Refused (or throttled: not sent): take the undelivered pass away again.
            deleted = False
            try:
                deleted = await graph.delete_tap(uid, issued["method_id"]) if issued["method_id"] else False
            except (PermanentError, TransientError) as delete_error:
                ctx.log.warning("undelivered pass could not be deleted: %s", delete_error)
            done = {**issued, "phase": NOT_DELIVERED, "reason": (
                f"the mail to {issued['to']} was refused ({safe_reason(exc)[:200]}); the pass was "
                + ("deleted" if deleted else "NOT deleted: delete it by hand") + "; issue one by hand")}
            await ctx.save(tap=done)
            return done
        done = {**issued, "phase": DELIVERED, "delivered_at": iso(ctx.deps.clock())}
        await ctx.save(tap=done)
        ctx.log.info("one-time recovery pass issued (expires %s) and mailed to the %s", expires, issued["via"])
        return done

    @staticmethod
    def _mail(ctx: StepContext, state: dict[str, Any], secret: str) -> tuple[str, str]:
        who = ctx.incident.get("user_principal_name") or ctx.user_id
        name = clean_text(ctx.incident.get("display_name"), 120) or who
        subject = f"[Breach Responder] Recovery pass for {who} ({ctx.task.incident_id})"
        text = "\n".join([
            f"{name} ({who}) was signed out and their password was reset by Breach Responder (incident "
            f"{ctx.task.incident_id}). This one-time Temporary Access Pass lets them sign in and set up their methods again:",
            "",
            f"    {secret}",
            "",
            f"Usable once, from {state['starts_at']} until {state['expires_at']} ({state['lifetime_minutes']} minutes).",
            "Before handing it over, verify the person (in person, or call them back on a number you already know).",
            "Do NOT send it to their own mailbox or forward this mail: the attacker may still read it.",
            "A one-time pass used to register a passwordless method must be used within 10 minutes of signing in.",
        ])
        return subject, text

    # -- recording --------------------------------------------------------------------------------

    @staticmethod
    def _result(state: dict[str, Any]) -> StepResult:
        phase = state.get("phase")
        keep = ("to", "via", "fallback", "method_id", "issued_at", "starts_at", "expires_at", "usable_once",
                "delivered_at", "policy", "lifetime_minutes")
        detail: dict[str, Any] = {"recovery": {DELIVERED: "issued", NOT_DELIVERED: "not-delivered"}.get(str(phase), str(phase)),
                                  **{k: state[k] for k in keep if state.get(k) not in (None, "")}}
        if phase == DELIVERED:
            summary = f"one-time pass mailed to {state['to']} ({state['via']}); expires {state['expires_at']}"
            return StepResult(StepState.SUCCEEDED, summary, detail)
        why = str(state.get("note") or state.get("reason") or "not issued")
        headline = "RECOVERY PASS DELIVERY UNCERTAIN" if phase == "uncertain" else "RECOVERY PASS NOT DELIVERED"
        detail["action_required"] = f"{headline}: {why}"
        return StepResult(StepState.SUCCEEDED, f"no recovery pass delivered: {why}", detail)
