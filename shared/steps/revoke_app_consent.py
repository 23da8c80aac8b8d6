"""revoke-app-consent: remove the OAuth consent the user gave an app during the compromise.

An illicit consent grant gives the attacker's app the user's data through Microsoft Graph with
no password at all; Microsoft's guidance ("Detect and remediate illicit consent grants") notes
that a password reset or MFA does not undo it. Where it sits (docs/architecture.md): after
reset-password (the attacker, still signed in as the user, could simply consent again) and before
unblock-sender. Its own step (queue ``step-revoke-app-consent``) so a playbook that must not hold
DelegatedPermissionGrant.ReadWrite.All can leave it out, and Bicep then grants neither it nor
Directory.Read.All.

- The user's delegated grants (``GET /users/{id}/oauth2PermissionGrants``: consentType Principal)
  are dated by the directory audit log's "Consent to application" events (shared/consents.py; the
  log is read once per incident and shared with enforce-mfa: steps/audit_reads.py). Consented
  after the cut-off: ``DELETE /oauth2PermissionGrants/{id}`` (DelegatedPermissionGrant.ReadWrite.All:
  no narrower permission deletes a grant), recorded with the client app, resource, scopes and
  consent time; undatable: listed for review. Tenant-wide grants (AllPrincipals, admin consent) are
  never touched; for each app whose user grant is removed or listed, one is reported if it exists
  ("the app keeps working for the user through the admin consent").
- The user's app role assignments (``principalType`` User) created after the cut-off are removed
  only with REMOVE_APP_ROLE_ASSIGNMENTS=true: the removal needs AppRoleAssignment.ReadWrite.All,
  with which an app can grant itself any application permission. Otherwise they are listed for review.
- Deleting a grant stops new tokens; "existing access tokens will continue to be valid for their
  lifetime" (up to about an hour), which reset-password's session revoke already shortens.

The plan (every before-value and the call that would undo each removal) is saved in the
checkpoint before the first change; each removal is a verified effect; a refused one is
recorded (``not_removed``) and keeps unblock-sender from running, like an unreadable list.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ..consents import plan_app_roles, plan_grants
from ..cutoff import cutoff
from ..errors import PermanentError
from ..mailbox_rights import KEEP, AuditState
from ..states import StepState
from .audit_reads import AUDIT_CALL, directory_audits
from .base import Call, Step, StepContext, StepResult
from .plans import SectionReader, carry_out, plan_detail, plan_summary, saved_plan

READ = "Directory.Read.All"
MAX_APP_LOOKUPS = 25


class RevokeAppConsent(Step):
    name = "revoke-app-consent"
    calls = (
        Call("graph", "GET /users/{id}/oauth2PermissionGrants", READ),
        Call("graph", "DELETE /oauth2PermissionGrants/{id}", "DelegatedPermissionGrant.ReadWrite.All"),
        Call("graph", "GET /oauth2PermissionGrants/{id} (verify)", READ),
        Call("graph", "GET /oauth2PermissionGrants?$filter=clientId eq '{id}' and consentType eq 'AllPrincipals'", READ),
        Call("graph", "GET /servicePrincipals/{id}?$select=id,appId,displayName,...", READ),
        Call("graph", "GET /users/{id}/appRoleAssignments", READ),
        Call("graph", "DELETE /users/{id}/appRoleAssignments/{id} (REMOVE_APP_ROLE_ASSIGNMENTS=true)",
             "AppRoleAssignment.ReadWrite.All"),
        Call("graph", AUDIT_CALL, "AuditLog.Read.All"),
    )

    async def act(self, ctx: StepContext) -> StepResult:
        cut = cutoff(ctx.settings, ctx.incident, ctx.deps.clock())
        plan = await saved_plan(ctx, lambda: self._plan(ctx, cut["at"]))
        everything = plan["grants"] + plan["app_roles"]
        done = await carry_out(everything, lambda entry: self._remove(ctx, entry))
        detail = plan_detail(ctx, cut, everything, done)
        detail.update({
            "admin_consents": plan["admin_consents"],
            "not_the_users": plan["others"],
            "group_app_roles_untouched": plan["group_app_roles"],
            "unavailable": plan["unavailable"],
            "unverified": sorted(plan["unavailable"]) + (["directory audit log"] if plan["grants"] and plan["audit"]["read"]
                                                          and not plan["audit"]["available"] else []),
            "audit": plan["audit"],
        })
        notes = (f"{len(plan['admin_consents'])} admin consent(s) reported, not touched",) if plan["admin_consents"] else ()
        summary = plan_summary(ctx, detail, "consent grant(s)/app role assignment(s)", plan["unavailable"], notes)
        return StepResult(StepState.SUCCEEDED, summary, detail)

    async def _plan(self, ctx: StepContext, cut: str) -> dict[str, Any]:
        graph, uid = ctx.graph, ctx.user_id
        read = SectionReader(ctx, self.name)

        grants, assignments = await asyncio.gather(read("consent_grants", lambda: graph.list_user_grants(uid)),
                                                   read("app_role_assignments", lambda: graph.list_app_role_assignments(uid)))
        grants = grants or []
        audit = AuditState(available=False, error="not needed: the user has no delegated grants", source="directory audit log")
        if grants:
            audit = await directory_audits(ctx)
        own, others = plan_grants(grants, audit, uid, cut)
        roles, group_roles = plan_app_roles(assignments or [], uid, cut, ctx.settings.remove_app_role_assignments)
        # Names of the apps involved (client and resource service principals), for the record and the mail.
        ids = list(dict.fromkeys([e["clientId"] for e in own + others if e.get("clientId")]
                                 + [e["resourceId"] for e in own + roles if e.get("resourceId")]))[:MAX_APP_LOOKUPS]
        apps = dict(zip(ids, await asyncio.gather(*(self._app(ctx, i) for i in ids))))
        for entry in own + others:
            client = apps.get(entry.get("clientId")) or {}
            entry["client_app"] = {"id": entry.get("clientId"), "appId": client.get("appId"),
                                   "displayName": client.get("displayName") or (entry.get("client_app") or {}).get("displayName")}
            resource = apps.get(entry.get("resourceId")) or {}
            entry["resource_app"] = {"id": entry.get("resourceId"), "displayName": resource.get("displayName")}
            entry["effect"] = f"grant-{entry['id']}"
            entry["undo"] = {"service": "graph", "method": "POST", "path": "/oauth2PermissionGrants",
                             "permission": "DelegatedPermissionGrant.ReadWrite.All",
                             "body": {"clientId": entry.get("clientId"), "consentType": "Principal", "principalId": uid,
                                      "resourceId": entry.get("resourceId"), "scope": entry.get("scope")}}
        for entry in roles:
            resource = apps.get(entry.get("resourceId")) or {}
            entry["resource_app"] = {"id": entry.get("resourceId"),
                                     "displayName": resource.get("displayName") or entry.get("resourceDisplayName")}
            entry["effect"] = f"app-role-{entry['id']}"
            entry["undo"] = {"service": "graph", "method": "POST", "path": f"/users/{uid}/appRoleAssignments",
                             "permission": "AppRoleAssignment.ReadWrite.All",
                             "body": {"principalId": uid, "resourceId": entry.get("resourceId"),
                                      "appRoleId": entry.get("appRoleId")}}
        # Admin consent (AllPrincipals) for the apps the user's doubtful grants are for: reported, never touched.
        suspects = list(dict.fromkeys(e["clientId"] for e in own if e["decision"] != KEEP and e.get("clientId")))
        def admin_grants(client: str) -> Callable[[], Awaitable[Any]]:
            return lambda: graph.list_admin_grants(client)

        admin = await asyncio.gather(*(read(f"admin_consent:{c}", admin_grants(c)) for c in suspects[:MAX_APP_LOOKUPS]))
        admin_consents = []
        for client, rows in zip(suspects, admin):
            for row in rows or []:
                admin_consents.append({"id": row.get("id"), "clientId": client, "consentType": row.get("consentType"),
                                       "scope": str(row.get("scope") or "").strip(),
                                       "client_app": (apps.get(client) or {}).get("displayName"),
                                       "note": "tenant-wide admin consent: never touched; the app keeps this access "
                                               "for every user, this one included"})
        audit_view = {"source": audit.source, "read": bool(grants), "available": audit.available,
                      "since": audit.since, "complete": audit.complete, "error": audit.error if grants else ""}
        return {"grants": own, "app_roles": roles, "others": others, "group_app_roles": group_roles,
                "admin_consents": admin_consents, "unavailable": read.unavailable, "audit": audit_view}

    @staticmethod
    async def _app(ctx: StepContext, sp_id: str) -> dict[str, Any]:
        try:
            return await ctx.graph.get_service_principal(sp_id) or {}
        except PermanentError:
            return {}

    async def _remove(self, ctx: StepContext, entry: dict[str, Any]) -> str:
        """removed | gone | planned | the error text."""
        graph, uid = ctx.graph, ctx.user_id
        result: dict[str, bool] = {}
        if entry["kind"] == "oauth2-grant":
            async def delete() -> None:
                result["deleted"] = await graph.delete_grant(entry["id"])

            async def landed(_record: dict[str, Any]) -> bool:
                return await graph.get_grant(entry["id"]) is None

            app = (entry.get("client_app") or {}).get("displayName") or entry.get("clientId")
            what = f"delete the consent grant of '{app}' ({entry.get('scope')}) consented {entry.get('consented_at')}"
        else:
            async def delete() -> None:
                result["deleted"] = await graph.delete_app_role_assignment(uid, entry["id"])

            async def landed(_record: dict[str, Any]) -> bool:
                return all(a.get("id") != entry["id"] for a in await graph.list_app_role_assignments(uid))

            what = (f"remove the app role assignment to '{(entry.get('resource_app') or {}).get('displayName')}' "
                    f"created {entry.get('createdDateTime')}")
        try:
            ran = await ctx.effect(entry["effect"], delete, description=what, verify=landed, state_verified=True)
        except PermanentError as exc:
            ctx.log.warning("could not %s: %s", what, exc)
            return str(exc)[:300]
        if ctx.dry_run:
            return "planned"
        return "gone" if ran and result.get("deleted") is False else "removed"
