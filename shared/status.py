"""Read models for operators: one incident with its ledger, and the incident list."""
from __future__ import annotations

from typing import Any

from . import footholds
from .ledger_protocol import load_json
from .playbook import incident_order
from .policy import approvals_of
from .ports import LedgerPort
from .signin import BLOCKED, release_hint
from .states import TERMINAL_INCIDENT_STATES, StepState

_INCIDENT_FIELDS = (
    "incident_id", "user_id", "user_principal_name", "source", "risk_level", "state", "mode",
    "held_reason", "stopped_at", "stop_reason", "current_step", "created_at", "updated_at",
    "finished_at", "correlation_id", "approved", "action_required", "held_containment",
    "privileged_roles", "roles_note", "risk_error", "final_risk_state", "protected", "protection",
    "approvals_required", "held_at", "submitted_via", "reject_reason", "rejected_at", "expired_at", "expiry_mail",
    "display_name",
    "sign_in", "sign_in_policy", "sign_in_note", "sign_in_error", "sign_in_restored_by", "sign_in_restored_at",
    "reason", "detected_at", "undo_state", "undo_requested_by", "undo_requested_at", "undone_at",
)
UNDO_PREFIX = "undo-"  # the reversal rows of an undo (shared/undo.py) share the incident's step ledger


def _step_view(name: str, row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"name": name, "state": StepState.PENDING}
    view = {
        "name": name,
        "state": row.get("state", StepState.PENDING),
        "attempts": int(row.get("attempts", 0) or 0),
        "started_at": row.get("started_at", ""),
        "finished_at": row.get("finished_at", ""),
        "duration_ms": int(row.get("duration_ms", 0) or 0),
    }
    if row.get("error"):
        view["error"] = row["error"]
    detail = load_json(row.get("detail"), None)
    if detail:
        view["detail"] = detail
    return view


def build_view(incident: dict[str, Any], step_rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {r["RowKey"]: r for r in step_rows}
    order = incident_order(incident, ())
    view = {k: incident.get(k) for k in _INCIDENT_FIELDS if incident.get(k) not in (None, "")}
    view["user"] = incident.get("user_principal_name") or incident.get("user_id") or incident.get("user_key")
    view["alert_ids"] = [a for a in (incident.get("alert_ids") or "").split(",") if a]
    # Who did what: the submitter, each approver, who rejected it.
    if incident.get("submitted_by_oid") or incident.get("submitted_by_upn"):
        view["submitted_by"] = {"object_id": incident.get("submitted_by_oid") or "",
                                "upn": incident.get("submitted_by_upn") or "", "kind": incident.get("submitted_by_kind") or ""}
    view["approvals"] = approvals_of(incident)
    if incident.get("rejected_by_oid"):
        view["rejected_by"] = {"object_id": incident["rejected_by_oid"], "upn": incident.get("rejected_by_upn") or ""}
    view["steps"] = [_step_view(name, rows.get(name)) for name in order]
    undo = [_step_view(key, row) for key, row in sorted(rows.items()) if key.startswith(UNDO_PREFIX)]
    if undo:
        view["undo"] = [{**u, "summary": (u.get("detail") or {}).get("summary", "")} for u in undo]
    notices = load_json(incident.get("notices"), None)
    if notices:
        view["notices"] = notices
    found = footholds.summary(rows)
    view["footholds"] = found
    if view.get("sign_in") == BLOCKED and incident.get("state") in TERMINAL_INCIDENT_STATES:
        view["sign_in_action"] = release_hint(incident["incident_id"])
    return view


async def incident_view(ledger: LedgerPort, incident_id: str) -> dict[str, Any] | None:
    incident = await ledger.get_incident(incident_id)
    if incident is None:
        return None
    return build_view(incident, await ledger.list_steps(incident_id))


async def list_views(ledger: LedgerPort, limit: int = 1000) -> list[dict[str, Any]]:
    views = []
    for incident in await ledger.list_incidents(limit):
        views.append(build_view(incident, await ledger.list_steps(incident["incident_id"])))
    return views
