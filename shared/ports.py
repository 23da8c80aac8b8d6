"""The ports: what the domain needs from storage, queues, Graph and Exchange, as
``typing.Protocol`` classes.

The adapters in ``shared/adapters`` implement them against Azure (Table storage, Storage
queues, msgraph-sdk, the Exchange admin API); the hand-written fakes in ``tests/helpers``
implement the same protocols in memory (mypy checks both, and tests/test_ports.py checks
the signatures at run time). Domain code only ever sees these names: it never reaches into
an adapter's clients or tables.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: the domain's records, no adapter code
    from .ledger_protocol import Claim
    from .securescore.model import DayRecord, Finding
    from .storm import Reservation, StormState

__all__ = [
    "ExchangePort",
    "GraphPort",
    "LedgerPort",
    "QueuePort",
    "QueuedMessage",
    "ScoreStorePort",
]


# -- queues -------------------------------------------------------------------------------------


@dataclass
class QueuedMessage:
    """A message read from a queue. ``content`` is the text as stored (base64 for everything
    the app and the host write); ``text`` is the body a function sees."""

    id: str
    content: str
    text: str
    dequeue_count: int = 0
    inserted_on: datetime | None = None
    pop_receipt: str | None = None


class QueuePort(Protocol):
    async def ensure(self, queues: Iterable[str]) -> None:
        """Create the queues that do not exist yet."""

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        """Enqueue ``body`` (encoded as host.json's messageEncoding says); returns the message id."""

    async def send_stored(self, queue: str, content: str) -> str:
        """Enqueue text that is already in the stored form (a poison message put back as it was)."""

    async def peek(self, queue: str, max_messages: int) -> list[QueuedMessage]:
        """Up to ``max_messages`` visible messages, oldest first, without hiding them ([] if no queue)."""

    async def receive(self, queue: str, max_messages: int, visibility_timeout: int) -> list[QueuedMessage]:
        """Up to ``max_messages`` messages, hidden for ``visibility_timeout`` s ([] if no queue)."""

    async def delete(self, queue: str, message: QueuedMessage) -> None:
        """Delete a received message."""

    async def make_visible(self, queue: str, message: QueuedMessage) -> bool:
        """Show a received message again now; False when it is gone."""

    async def approximate_count(self, queue: str) -> int:
        """Messages on the queue, visible or not (0 if no queue)."""


# -- tables -------------------------------------------------------------------------------------


class LedgerPort(Protocol):
    """Incidents, the per-step ledger and the app's other small tables."""

    async def ensure(self) -> None: ...

    # incidents
    async def create_incident(self, incident: dict[str, Any]) -> None: ...
    async def get_incident(self, incident_id: str) -> dict[str, Any] | None: ...
    async def update_incident(self, incident_id: str, fields: dict[str, Any], etag: str | None = None) -> None:
        """Merge ``fields``; with ``etag``, only if the row is unchanged (else ConflictError)."""

    async def list_incidents(self, limit: int = 1000, state: str | None = None) -> list[dict[str, Any]]:
        """Incidents oldest first; with ``state``, only those in it (a parameterised query)."""

    # one open incident per user
    async def get_open(self, user_key: str) -> tuple[dict[str, Any], str] | None: ...
    async def claim_open(self, user_key: str, incident_id: str, created_at: str, replace_etag: str | None) -> bool: ...

    # storm breaker (shared/storm.py decides; the write is ETag-conditional, so reservations are atomic)
    async def reserve_incident(self, at: datetime, *, window_minutes: int, threshold: int, source: str,
                               source_quota: int) -> Reservation:
        """Take one slot of the storm window for a new running incident, or say why not (and trip
        the breaker when the window is full)."""

    async def storm_state(self) -> StormState: ...
    async def reset_storm(self, by: dict[str, str], at: datetime) -> StormState:
        """Untrip the breaker and empty its window, recording who did it."""

    # the step ledger
    async def get_step(self, incident_id: str, step: str) -> dict[str, Any] | None: ...
    async def list_steps(self, incident_id: str) -> list[dict[str, Any]]: ...
    async def put_step(self, incident_id: str, step: str, fields: dict[str, Any]) -> None: ...
    async def claim_step(self, incident_id: str, step: str, lease_s: int, correlation_id: str) -> Claim: ...
    async def checkpoint(self, incident_id: str, step: str, claim: Claim, updates: dict[str, Any]) -> None: ...
    async def release(self, incident_id: str, step: str, claim: Claim, error: str) -> None: ...
    async def finish(self, incident_id: str, step: str, claim: Claim, state: str, detail: Any,
                     error: str = "", duration_ms: int = 0) -> None: ...

    # evidence (the snapshot)
    async def put_evidence(self, incident_id: str, section: str, data: Any) -> int: ...
    async def put_evidence_many(self, incident_id: str, sections: dict[str, Any]) -> dict[str, int]: ...
    async def list_evidence(self, incident_id: str) -> dict[str, Any]: ...
    async def get_evidence(self, incident_id: str, section: str) -> Any | None:
        """One section written on its own (put_evidence), or None: a point read, not the whole snapshot."""

    # errors
    async def record_error(self, where: str, reason: str, *, message_id: str = "", excerpt: str = "",
                           **extra: Any) -> str: ...
    async def list_errors(self, where: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...

    # Defender halves waiting for their other half
    async def add_pending_half(self, alert_id: str, row: str, kind: str, record: str) -> None: ...
    async def pending_halves(self, alert_id: str) -> tuple[list[str], list[str]]:
        """(AlertInfo records, AlertEvidence records) stored for ``alert_id``."""

    # polling watermarks
    async def get_watermark(self, feed: str) -> str | None: ...
    async def set_watermark(self, feed: str, since: str) -> None: ...

    # poison redrive counters
    async def get_redrive(self, queue: str, digest: str) -> dict[str, Any]:
        """``{"count": n, "gave_up": bool}`` for a poison message body ({} when never redriven)."""

    async def put_redrive(self, queue: str, digest: str, count: int, gave_up: bool = False) -> None: ...


class ScoreStorePort(Protocol):
    """Secure Score days and regression findings (see shared/adapters/scores.py)."""

    async def ensure(self) -> None: ...
    async def put_day(self, day: DayRecord) -> bool: ...
    async def get_day(self, day: str) -> DayRecord | None: ...
    async def stored_dates(self) -> list[str]: ...
    async def list_days(self, since: str | None = None, until: str | None = None) -> list[DayRecord]: ...
    async def put_finding(self, finding: Finding, notify_state: str = "pending") -> bool: ...
    async def list_findings(self, since: str | None = None) -> list[Finding]: ...
    async def claim_notification(self, finding: Finding) -> bool: ...
    async def set_notify_state(self, finding: Finding, state: str, note: str = "") -> None: ...


# -- Microsoft 365 ------------------------------------------------------------------------------


# group-post-members: "When using the API to add multiple members in one request, you can add up to
# only 20 members" (GraphPort.add_group_members).
GROUP_MEMBERS_PER_REQUEST = 20


class GraphPort(Protocol):
    """Microsoft Graph, as the steps, the poller and Secure Score use it (adapters/graph.py)."""

    async def request(self, method: str, path: str, *, permission: str, body: Any = None,
                      query: dict[str, str] | None = None, beta: bool = False,
                      headers: dict[str, str] | None = None, idempotent: bool = False) -> Any: ...
    async def list_all(self, path: str, *, permission: str, query: dict[str, str] | None = None,
                       max_items: int = 1000, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink, at most ``max_items``;
        ``headers`` go with every page (e.g. ``ConsistencyLevel: eventual`` for an advanced query)."""

    async def follow(self, link: str, permission: str, headers: dict[str, str] | None = None) -> Any:
        """The page an @odata.nextLink points at (same host only)."""

    async def get_user(self, user_key: str, select: str | None = None) -> dict[str, Any]:
        """The user by object id or UPN (``select``: the properties; None = the adapter's default set)."""

    async def reset_password(self, user_id: str, password: str, force_change: bool = True) -> None: ...
    async def revoke_sessions(self, user_id: str) -> bool: ...
    async def set_account_enabled(self, user_id: str, enabled: bool) -> None:
        """``accountEnabled``: False blocks sign-in, True allows it again."""

    async def check_member_groups(self, user_id: str, group_ids: list[str]) -> list[str]: ...
    async def list_directory_roles(self, user_id: str) -> list[dict[str, Any]]:
        """The directory roles the user holds now, directly or through a role-assignable group."""

    async def list_eligible_roles(self, user_id: str) -> list[dict[str, Any]]:
        """The user's PIM-eligible directory role assignments (``roleDefinitionId``, ``endDateTime``)."""

    async def list_user_audits(self, user_id: str, since: str, max_items: int = 500) -> list[dict[str, Any]]:
        """Directory audit events about the user or initiated by the user since ``since``, newest first
        (security-info registrations, consents): one read shared by the steps that date things."""

    async def add_group_member(self, group_id: str, user_id: str) -> bool: ...
    async def add_group_members(self, group_id: str, user_ids: list[str]) -> dict[str, bool]:
        """Add up to GROUP_MEMBERS_PER_REQUEST users in one request; per user: True added, False already
        a member."""
    async def remove_group_member(self, group_id: str, user_id: str) -> bool:
        """Remove the user from the group; False when the user was not a member (404)."""

    async def get_mfa_state(self, user_id: str) -> str | None: ...
    async def enforce_per_user_mfa(self, user_id: str) -> None: ...
    async def list_auth_methods(self, user_id: str) -> list[dict[str, Any]]: ...
    async def delete_auth_method(self, user_id: str, collection: str, method_id: str) -> bool: ...
    async def list_message_rules(self, user_id: str) -> list[dict[str, Any]]: ...
    async def get_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any] | None: ...
    async def disable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]: ...
    async def enable_message_rule(self, user_id: str, rule_id: str) -> dict[str, Any]:
        """``isEnabled: true`` on an inbox rule (undo of disable_message_rule)."""

    async def get_tap_policy(self) -> dict[str, Any]:
        """The tenant's Temporary Access Pass policy (authenticationMethodConfigurations/temporaryAccessPass)."""

    async def create_tap(self, user_id: str, lifetime_minutes: int, usable_once: bool = True) -> dict[str, Any]:
        """A new Temporary Access Pass; the answer holds the pass (``temporaryAccessPass``) once: the
        caller hands it on and never stores or logs it."""

    async def delete_tap(self, user_id: str, method_id: str) -> bool:
        """Delete a Temporary Access Pass; False when it was already gone."""

    async def get_manager(self, user_id: str) -> dict[str, Any] | None:
        """The user's manager (a user or an organizational contact), or None when there is none (404)."""

    async def confirm_compromised(self, user_ids: list[str]) -> None: ...
    async def dismiss_risk(self, user_ids: list[str]) -> None: ...
    async def get_risky_user(self, user_id: str) -> dict[str, Any] | None: ...
    async def list_risk_detections(self, user_id: str, top: int = 50) -> list[dict[str, Any]]: ...
    async def list_at_risk_users(self, max_items: int = 10_000) -> list[dict[str, Any]]:
        """Every riskyUser at risk or confirmed compromised now (paged, 500 a page)."""

    async def list_risky_users_changed_since(self, since: datetime, max_items: int = 10_000) -> list[dict[str, Any]]:
        """Every riskyUser whose risk changed after ``since``."""

    async def list_risky_user_history(self, user_id: str) -> list[dict[str, Any]]:
        """Identity Protection's record of each change of the user's risk ([] for a user never at risk)."""

    async def list_risk_detections_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        """Every risk detection of the tenant detected at or after ``since``."""

    async def list_dating_audits_since(self, since: datetime, max_items: int = 50_000) -> list[dict[str, Any]]:
        """Every directory audit event the steps date footholds by, tenant-wide, at or after ``since``:
        security-info changes (service Authentication Methods) and "Consent to application"."""

    async def send_mail(self, sender: str, to: str, subject: str, text: str) -> None: ...
    async def list_user_grants(self, user_id: str) -> list[dict[str, Any]]:
        """The user's own delegated permission grants (consentType Principal)."""

    async def list_admin_grants(self, client_id: str) -> list[dict[str, Any]]:
        """Tenant-wide (AllPrincipals) delegated permission grants of one client service principal."""

    async def get_grant(self, grant_id: str) -> dict[str, Any] | None: ...
    async def delete_grant(self, grant_id: str) -> bool:
        """Delete a delegated permission grant; False when it was already gone."""

    async def list_app_role_assignments(self, user_id: str) -> list[dict[str, Any]]: ...
    async def delete_app_role_assignment(self, user_id: str, assignment_id: str) -> bool:
        """Delete one of the user's app role assignments; False when it was already gone."""

    async def get_service_principal(self, sp_id: str) -> dict[str, Any] | None: ...


class ExchangePort(Protocol):
    """Exchange Online's admin API (InvokeCommand), for what Graph cannot do."""

    async def invoke(self, cmdlet: str, parameters: dict[str, Any] | None = None,
                     anchor: str | None = None, warnings: list[str] | None = None) -> list[dict[str, Any]]:
        """Run one cmdlet and return its rows. Every call is anchored (``X-AnchorMailbox``): to
        ``anchor`` (a UPN) when given, else to the mailbox the parameters name, else to the
        organisation's system mailbox. ``warnings``, when given, receives ``@adminapi.warnings``."""

