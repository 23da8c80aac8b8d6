"""Microsoft Graph adapter: plain JSON over one pooled HTTP client (http.py, aiohttp).

Each call is one HTTP request built from validated ids (each path segment percent-encoded;
OData string literals through odata_quote()), sent with the worker's bearer token
(credentials.BearerToken: asked of azure-identity only when it is about to expire), and read
as raw JSON: no SDK models, no middleware chain. The msgraph-sdk request pipeline this adapter
used to go through (seven middlewares, each with its tracing span, per request) cost about half a
millisecond of CPU a request and half its import time; nothing here needs it (docs/benchmarks.md).

Every request first waits for its turn at its service's quota (pacing.py: identity reads in
resource units, identity writes, Identity Protection, directory audits, security, Outlook per
mailbox), so a storm runs just under Microsoft's published limits instead of probing them; a 429
still slows that bucket down, and only that bucket. An AdaptiveLimiter (throttle.py) bounds the
requests in flight (the connection pool); it is not told of 429s. Failed requests are retried
in-process under shared/retry.py's policy (429 always; 5xx, timeouts and transport errors only for
reads); Graph's fractional Retry-After is honoured. A write that fails with a 5xx goes back to the step, whose checkpoint and verify
decide whether to repeat it.

Every method names the app permission it needs, so a 403 becomes a PermanentError that tells
the operator exactly what to grant. Each request carries a fresh ``client-request-id`` (what
Microsoft support asks for).
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from ..errors import PermanentError, TransientError
from ..ports import GROUP_MEMBERS_PER_REQUEST
from ..retry import ADAPTER_POLICY, TRANSIENT_STATUS, Retrier, RetryKind, kind_of_status, parse_retry_after
from ..timestamps import iso_seconds
from ..validation import odata_quote
from .credentials import GRAPH_SCOPE, BearerToken
from .http import HttpClient, Reply, TransportFailure
from .pacing import Pacer, PacingLimits
from .throttle import AdaptiveLimiter

logger = logging.getLogger(__name__)

_SAFE_METHODS = {"GET", "HEAD"}
MAX_IN_FLIGHT = 64  # per service per worker: the adaptive limiter's ceiling and the connection pool

# Roles an operator must also assign for some calls (app permission alone is not enough).
ROLE_HINTS = {
    "User-PasswordProfile.ReadWrite.All": "and the User Administrator directory role "
    "(Privileged Authentication Administrator to reset administrators)",
}


def _seg(value: str) -> str:
    """One path segment, percent-encoded (ids are validated before they get here)."""
    return quote(value, safe="@")


def _graph_error(response: Reply) -> tuple[str, str]:
    """(code, message) of a Graph error body; empty strings for anything else (a gateway's HTML)."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), str(error.get("message") or "")


class GraphAdapter:
    """Thin async Graph client: one per worker, shared by every step."""

    def __init__(self, credential: Any, base_url: str, timeout_s: float = 30.0, pacer: Pacer | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._token = BearerToken(credential, GRAPH_SCOPE)
        self._http = HttpClient(timeout_s, MAX_IN_FLIGHT)
        self.limiter = AdaptiveLimiter(initial=16, maximum=MAX_IN_FLIGHT)
        self.pacer = pacer or Pacer(PacingLimits.unlimited())  # the worker passes its own (bootstrap)

    async def close(self) -> None:
        await self._http.close()

    # -- transport -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        permission: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        beta: bool = False,
        headers: dict[str, str] | None = None,
        idempotent: bool = False,
    ) -> Any:
        """Send one request; return parsed JSON (or None for an empty body).

        ``idempotent`` marks a POST that only reads (checkMemberGroups): like a GET, it is
        repeated in-process after a 5xx or a timeout."""
        url = f"{self._base}/{'beta' if beta else 'v1.0'}{path}"
        if query:
            url += "?" + urlencode(query, quote_via=quote, safe="$,'")
        content = json.dumps(body).encode("utf-8") if body is not None else None
        raw = await self._send(method.upper(), url, path, permission, headers, content, idempotent=idempotent,
                               query=query)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise TransientError(f"Graph {method} {path} returned a body that is not JSON") from None

    async def _send(self, method: str, url: str, path: str, permission: str, headers: dict[str, str] | None,
                    content: bytes | None, idempotent: bool = False, query: dict[str, str] | None = None) -> bytes:
        """Send at the pace of the request's quota, with bounded in-process retries
        (shared/retry.py): 429 always, honouring Retry-After; 5xx, timeouts and transport
        errors for reads only."""
        safe = idempotent or method in _SAFE_METHODS
        retrier = Retrier(ADAPTER_POLICY)
        while True:
            send_headers = {"Accept": "application/json", "client-request-id": str(uuid.uuid4()),
                            "Authorization": await self._token.header(), **(headers or {})}
            if content is not None:
                send_headers["Content-Type"] = "application/json"
            try:
                # A 429 slows and pauses only the bucket it is about (the pacer), never the limiter:
                # Microsoft throttles each service on its own, and a Graph-wide pause would hold the
                # containment writes back and then send them together, over the write quota.
                async with self.pacer.graph(method, path, query) as ticket, self.limiter.slot():
                    response = await self._http.request(method, url, send_headers, content)
                    if response.status == 429:
                        ticket.throttled(parse_retry_after(response.headers.get("Retry-After")),
                                         response.headers.get("x-ms-throttle-information"))
            except TransportFailure as exc:
                # A read that hung or lost its connection is safe to repeat; a write is not.
                delay = retrier.next_delay(RetryKind.TRANSIENT, safe=safe)
                if delay is None:
                    raise TransientError(f"Graph {method} {path} {exc}") from None
                logger.debug("Graph %s %s: %s, retrying in %.2fs", method, path, exc, delay)
                await asyncio.sleep(delay)
                continue
            status = response.status
            if status < 300:
                return response.content
            if status == 401:
                self._token.forget()
            kind = kind_of_status(status)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = retrier.next_delay(kind, retry_after, safe=safe) if kind is not None else None
            if delay is None:
                raise self._map_error(response, method, path, permission)
            logger.debug("Graph %s %s: %s, retrying in %.2fs", method, path, status, delay)
            await asyncio.sleep(delay)

    @staticmethod
    def _map_error(response: Reply, method: str, path: str, permission: str) -> Exception:
        status = response.status
        code, message = _graph_error(response)
        message = message[:300]
        where = f"Graph {method} {path}"
        if status in TRANSIENT_STATUS:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return TransientError(f"{where}: {status} {code}".strip(), status=status, retry_after=retry_after)
        if status == 403:
            hint = ROLE_HINTS.get(permission, "")
            return PermanentError(
                f"{where}: 403 {code or 'Forbidden'} - the app identity lacks permission; "
                f"grant {permission} {hint}".strip(),
                status=status,
                code=code,
            )
        if status == 401:
            return PermanentError(f"{where}: 401 {code} - token rejected ({message})", status=status, code=code)
        if status == 404:
            return PermanentError(f"{where}: 404 {code} - {message or 'not found'}", status=status, code=code)
        return PermanentError(f"{where}: {status} {code} - {message}", status=status, code=code)

    # -- users ---------------------------------------------------------------------------

    USER_SELECT = ("id,userPrincipalName,displayName,mail,accountEnabled,onPremisesSyncEnabled,onPremisesImmutableId,"
                   "onPremisesSamAccountName,onPremisesDomainName,lastPasswordChangeDateTime")

    async def get_user(self, user_key: str, select: str | None = None) -> dict[str, Any]:
        return await self.request(
            "GET", f"/users/{_seg(user_key)}", query={"$select": select or self.USER_SELECT}, permission="User.Read.All"
        )

    async def reset_password(self, user_id: str, password: str, force_change: bool = True) -> None:
        await self.request(
            "PATCH",
            f"/users/{_seg(user_id)}",
            body={"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": force_change}},
            permission="User-PasswordProfile.ReadWrite.All",
        )

    async def set_account_enabled(self, user_id: str, enabled: bool) -> None:
        """Block (False) or allow (True) sign-in. Least privilege: User.EnableDisableAccount.All
        (with User.Read.All, which the app has anyway)."""
        await self.request("PATCH", f"/users/{_seg(user_id)}", body={"accountEnabled": enabled},
                           permission="User.EnableDisableAccount.All")

    async def revoke_sessions(self, user_id: str) -> bool:
        result = await self.request(
            "POST", f"/users/{_seg(user_id)}/revokeSignInSessions", permission="User.RevokeSessions.All"
        )
        # Known service issue: 200 {"value": true}; any 2xx is success.
        return bool(result.get("value", True)) if isinstance(result, dict) else True

    async def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]:
        result = await self.request(
            "POST",
            f"/users/{_seg(user_id)}/checkMemberGroups",
            body={"groupIds": group_ids},
            permission="GroupMember.Read.All",
            idempotent=True,
        )
        return list((result or {}).get("value", []))

    async def list_directory_roles(self, user_id: str) -> list[dict[str, Any]]:
        """The directory roles the user holds now (directly or through a role-assignable group).
        An OData cast is an advanced query: ConsistencyLevel eventual and $count are required."""
        return await self.list_all(
            f"/users/{_seg(user_id)}/transitiveMemberOf/microsoft.graph.directoryRole",
            query={"$count": "true", "$select": "id,displayName,roleTemplateId"},
            headers={"ConsistencyLevel": "eventual"},
            permission="User.Read.All",
        )

    async def list_eligible_roles(self, user_id: str) -> list[dict[str, Any]]:
        """PIM-eligible directory role assignments of the user (their roleDefinitionId)."""
        return await self.list_all(
            "/roleManagement/directory/roleEligibilityScheduleInstances",
            query={"$filter": f"principalId eq {odata_quote(user_id)}"},
            permission="RoleEligibilitySchedule.Read.Directory",
        )

    async def list_user_audits(self, user_id: str, since: str, max_items: int = 500) -> list[dict[str, Any]]:
        """Directory audit events about the user or by the user since ``since`` (ISO 8601), newest
        first: one request (``targetResources/any(...) or initiatedBy/user/id eq ...``). The list page
        names both properties but shows no combined example; if Graph refuses the combination (400),
        the two halves are read separately and merged (docs/tenant-behaviours.md)."""
        quoted = odata_quote(user_id)
        target = f"targetResources/any(t: t/id eq {quoted})"
        actor = f"initiatedBy/user/id eq {quoted}"
        window = f"activityDateTime ge {since}"
        try:
            return await self.list_all("/auditLogs/directoryAudits",
                                       query={"$filter": f"({target} or {actor}) and {window}"},
                                       permission="AuditLog.Read.All", max_items=max_items)
        except PermanentError as exc:
            if exc.status != 400:
                raise
            logger.info("directoryAudits refused the combined filter (%s); reading target and actor separately",
                        exc.code or exc.status)
        halves = [await self.list_all("/auditLogs/directoryAudits", query={"$filter": f"{part} and {window}"},
                                      permission="AuditLog.Read.All", max_items=max_items) for part in (target, actor)]
        merged = {event.get("id"): event for half in halves for event in half}
        events = sorted(merged.values(), key=lambda e: str(e.get("activityDateTime") or ""), reverse=True)
        return events[:max_items]

    # -- groups / MFA ----------------------------------------------------------------------

    async def add_group_member(self, group_id: str, user_id: str) -> bool:
        """Add; return False when the user was already a member (400 'already exist')."""
        try:
            await self.request(
                "POST",
                f"/groups/{_seg(group_id)}/members/$ref",
                body={"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user_id}"},
                permission="GroupMember.ReadWrite.All",
            )
        except PermanentError as exc:
            if exc.status == 400 and "already exist" in str(exc):
                return False
            raise
        return True

    async def add_group_members(self, group_id: str, user_ids: list[str]) -> dict[str, bool]:
        """Add several users in one request (``PATCH /groups/{id}`` with ``members@odata.bind``: "you can add
        up to only 20 members" in one request; one directory write instead of one per user). When one of
        them is already a member Graph refuses the whole request (400 "already exist"): each is then
        added on its own, and says whether it was added or already there."""
        if len(user_ids) > GROUP_MEMBERS_PER_REQUEST:
            raise ValueError(f"at most {GROUP_MEMBERS_PER_REQUEST} members per request")
        if len(user_ids) == 1:
            return {user_ids[0]: await self.add_group_member(group_id, user_ids[0])}
        refs = [f"https://graph.microsoft.com/v1.0/directoryObjects/{_seg(u)}" for u in user_ids]
        try:
            await self.request("PATCH", f"/groups/{_seg(group_id)}", body={"members@odata.bind": refs},
                               permission="GroupMember.ReadWrite.All")
        except PermanentError as exc:
            if exc.status == 400 and "already exist" in str(exc):
                added = await asyncio.gather(*(self.add_group_member(group_id, u) for u in user_ids))
                return dict(zip(user_ids, added))
            raise
        return {u: True for u in user_ids}

    async def remove_group_member(self, group_id: str, user_id: str) -> bool:
        """Remove; return False when the user was not a member (404 'do not exist')."""
        try:
            await self.request("DELETE", f"/groups/{_seg(group_id)}/members/{_seg(user_id)}/$ref",
                               permission="GroupMember.ReadWrite.All")
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_mfa_state(self, user_id: str) -> str | None:
        result = await self.request(
            "GET", f"/users/{_seg(user_id)}/authentication/requirements", beta=True, permission="Policy.Read.All"
        )
        return (result or {}).get("perUserMfaState")

    async def enforce_per_user_mfa(self, user_id: str) -> None:
        await self.request(
            "PATCH",
            f"/users/{_seg(user_id)}/authentication/requirements",
            body={"perUserMfaState": "enforced"},
            beta=True,
            permission="Policy.ReadWrite.AuthenticationMethod",
        )

    async def list_auth_methods(self, user_id: str) -> list[dict[str, Any]]:
        return await self.list_all(
            f"/users/{_seg(user_id)}/authentication/methods", permission="UserAuthenticationMethod.ReadWrite.All"
        )

    async def delete_auth_method(self, user_id: str, collection: str, method_id: str) -> bool:
        """Delete one method; False when it was already gone (404)."""
        try:
            await self.request(
                "DELETE",
                f"/users/{_seg(user_id)}/authentication/{collection}/{_seg(method_id)}",
                permission="UserAuthenticationMethod.ReadWrite.All",
            )
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- mailbox rules -------------------------------------------------------------------

    async def list_message_rules(self, user_id: str) -> list[dict[str, Any]]:
        return await self.list_all(
            f"/users/{_seg(user_id)}/mailFolders/inbox/messageRules", permission="MailboxSettings.ReadWrite"
        )

    async def get_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET",
                f"/users/{_seg(user_id)}/mailFolders/inbox/messageRules/{_seg(rule_id)}",
                permission="MailboxSettings.ReadWrite",
            )
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    async def disable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            f"/users/{_seg(user_id)}/mailFolders/inbox/messageRules/{_seg(rule_id)}",
            body={"isEnabled": False},
            permission="MailboxSettings.ReadWrite",
        )

    async def enable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            f"/users/{_seg(user_id)}/mailFolders/inbox/messageRules/{_seg(rule_id)}",
            body={"isEnabled": True},
            permission="MailboxSettings.ReadWrite",
        )

    # -- Temporary Access Pass and the manager (the recovery hand-off) --------------------

    async def get_tap_policy(self) -> dict[str, Any]:
        return await self.request("GET", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/"
                                         "temporaryAccessPass", permission="Policy.Read.AuthenticationMethod") or {}

    async def create_tap(self, user_id: str, lifetime_minutes: int, usable_once: bool = True) -> dict[str, Any]:
        # A write: never repeated in-process after a 5xx (one pass per user; the step decides).
        return await self.request(
            "POST", f"/users/{_seg(user_id)}/authentication/temporaryAccessPassMethods",
            body={"lifetimeInMinutes": lifetime_minutes, "isUsableOnce": usable_once},
            permission="UserAuthMethod-TAP.ReadWrite.All",
        ) or {}

    async def delete_tap(self, user_id: str, method_id: str) -> bool:
        try:
            await self.request("DELETE", f"/users/{_seg(user_id)}/authentication/temporaryAccessPassMethods/{_seg(method_id)}",
                               permission="UserAuthMethod-TAP.ReadWrite.All")
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_manager(self, user_id: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/users/{_seg(user_id)}/manager",
                                      query={"$select": "id,userPrincipalName,mail,accountEnabled,displayName"},
                                      permission="User.Read.All")
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    # -- consent grants and app role assignments ------------------------------------------

    async def list_user_grants(self, user_id: str) -> list[dict[str, Any]]:
        """The user's own delegated permission grants (consentType Principal); Graph leaves out the
        tenant-wide (AllPrincipals) ones."""
        return await self.list_all(f"/users/{_seg(user_id)}/oauth2PermissionGrants", permission="Directory.Read.All")

    async def list_admin_grants(self, client_id: str) -> list[dict[str, Any]]:
        """Tenant-wide (AllPrincipals) delegated permission grants of one client app (its service principal id)."""
        return await self.list_all(
            "/oauth2PermissionGrants",
            query={"$filter": f"clientId eq {odata_quote(client_id)} and consentType eq 'AllPrincipals'"},
            permission="Directory.Read.All",
        )

    async def get_grant(self, grant_id: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/oauth2PermissionGrants/{_seg(grant_id)}", permission="Directory.Read.All")
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_grant(self, grant_id: str) -> bool:
        """Delete one delegated permission grant; False when it was already gone (404).
        Least privilege: DelegatedPermissionGrant.ReadWrite.All (the only narrower-than-directory one)."""
        try:
            await self.request("DELETE", f"/oauth2PermissionGrants/{_seg(grant_id)}",
                               permission="DelegatedPermissionGrant.ReadWrite.All")
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_app_role_assignments(self, user_id: str) -> list[dict[str, Any]]:
        """App role assignments of the user, and of the groups the user is a direct member of."""
        return await self.list_all(f"/users/{_seg(user_id)}/appRoleAssignments", permission="Directory.Read.All")

    async def delete_app_role_assignment(self, user_id: str, assignment_id: str) -> bool:
        """Delete one of the user's app role assignments; False when it was already gone (404)."""
        try:
            await self.request("DELETE", f"/users/{_seg(user_id)}/appRoleAssignments/{_seg(assignment_id)}",
                               permission="AppRoleAssignment.ReadWrite.All")
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_service_principal(self, sp_id: str) -> dict[str, Any] | None:
        """A service principal's id, appId and names (None when it does not exist)."""
        try:
            return await self.request("GET", f"/servicePrincipals/{_seg(sp_id)}",
                                      query={"$select": "id,appId,displayName,appOwnerOrganizationId,publisherName"},
                                      permission="Directory.Read.All")
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    # -- identity protection / security --------------------------------------------------

    async def confirm_compromised(self, user_ids: list[str]) -> None:
        await self.request(
            "POST",
            "/identityProtection/riskyUsers/confirmCompromised",
            body={"userIds": user_ids},
            permission="IdentityRiskyUser.ReadWrite.All",
        )

    async def dismiss_risk(self, user_ids: list[str]) -> None:
        await self.request(
            "POST",
            "/identityProtection/riskyUsers/dismiss",
            body={"userIds": user_ids},
            permission="IdentityRiskyUser.ReadWrite.All",
        )

    async def get_risky_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET", f"/identityProtection/riskyUsers/{_seg(user_id)}", permission="IdentityRiskyUser.Read.All"
            )
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_risk_detections(self, user_id: str, top: int = 50) -> list[dict[str, Any]]:
        return await self.list_all(
            "/identityProtection/riskDetections",
            query={"$filter": f"userId eq {odata_quote(user_id)}", "$top": str(top)},
            permission="IdentityRiskEvent.Read.All",
            max_items=top,
        )

    OPEN_RISK = "(riskState eq 'atRisk' or riskState eq 'confirmedCompromised')"

    async def list_at_risk_users(self, max_items: int = 10_000) -> list[dict[str, Any]]:
        return await self.list_all(
            "/identityProtection/riskyUsers",
            query={"$filter": self.OPEN_RISK, "$top": "500"},
            permission="IdentityRiskyUser.Read.All",
            max_items=max_items,
        )

    async def list_risky_users_changed_since(self, since: datetime, max_items: int = 10_000) -> list[dict[str, Any]]:
        return await self.list_all(
            "/identityProtection/riskyUsers",
            query={"$filter": f"riskLastUpdatedDateTime gt {iso_seconds(since)}", "$top": "500"},
            permission="IdentityRiskyUser.Read.All",
            max_items=max_items,
        )

    async def list_risky_user_history(self, user_id: str) -> list[dict[str, Any]]:
        try:
            return await self.list_all(
                f"/identityProtection/riskyUsers/{_seg(user_id)}/history", permission="IdentityRiskyUser.Read.All"
            )
        except PermanentError as exc:
            if exc.status == 404:
                return []
            raise

    async def list_risk_detections_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        return await self.list_all(
            "/identityProtection/riskDetections",
            query={"$filter": f"detectedDateTime ge {iso_seconds(since)}", "$top": "500"},
            permission="IdentityRiskEvent.Read.All",
            max_items=max_items,
        )

    async def list_dating_audits_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        window = f"activityDateTime ge {iso_seconds(since)}"
        events: list[dict[str, Any]] = []
        for which in ("loggedByService eq 'Authentication Methods'", "activityDisplayName eq 'Consent to application'"):
            events += await self.list_all(
                "/auditLogs/directoryAudits", query={"$filter": f"{which} and {window}"},
                permission="AuditLog.Read.All", max_items=max_items,
            )
        return events

    async def send_mail(self, sender: str, to: str, subject: str, text: str) -> None:
        await self.request(
            "POST",
            f"/users/{_seg(sender)}/sendMail",
            body={
                "message": {
                    "subject": subject,
                    "body": {"contentType": "Text", "content": text},
                    "toRecipients": [{"emailAddress": {"address": to}}],
                },
                "saveToSentItems": False,
            },
            permission="Mail.Send",
        )

    # -- paging --------------------------------------------------------------------------

    async def list_all(
        self, path: str, *, permission: str, query: dict[str, str] | None = None, max_items: int = 1000,
        headers: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = await self.request("GET", path, query=query, permission=permission, headers=headers)
        while True:
            items.extend((page or {}).get("value", []))
            link = (page or {}).get("@odata.nextLink")
            if not link or len(items) >= max_items:
                return items[:max_items]
            page = await self.follow(link, permission, headers)

    async def follow(self, link: str, permission: str, headers: dict[str, str] | None = None) -> Any:
        parts = urlsplit(link)
        base = urlsplit(self._base)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise PermanentError(f"Graph nextLink points at another host ({parts.netloc}); refused")
        path = parts.path
        for prefix in ("/v1.0", "/beta"):
            if path.startswith(prefix + "/"):
                path = path[len(prefix):]
        raw = await self._send("GET", link, path, permission, headers, None, query=dict(parse_qsl(parts.query)))
        return json.loads(raw) if raw else None
