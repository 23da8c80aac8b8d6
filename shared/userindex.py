"""The per-user incident index (table ``userincidents``): one row per key a user is known by.

A source names a user by object id, by UPN, or both; the index holds a row for each key
pointing at the user's latest incident, so intake finds an open-or-recent incident whatever
key the next signal uses. Intake writes the keys the request carries; the runner adds the
object id (and the canonical UPN) once it has resolved the user.
"""
from __future__ import annotations

from typing import Any

from .ports import LedgerPort


def resolved_user_fields(user: dict[str, Any]) -> dict[str, Any]:
    """What an incident records about its user once Graph resolved them (intake or the runner)."""
    return {
        "user_id": user["id"],
        "user_principal_name": (user.get("userPrincipalName") or "").lower(),
        "display_name": user.get("displayName") or "",
        "on_prem_synced": bool(user.get("onPremisesSyncEnabled")),
        # Where the password is mastered when Entra refuses a cloud reset (reset-password's hand-off).
        "on_prem_immutable_id": bool(user.get("onPremisesImmutableId")),
        "on_prem_sam_account_name": user.get("onPremisesSamAccountName") or "",
        "on_prem_domain_name": user.get("onPremisesDomainName") or "",
        "user_resolved": True,
    }


async def index_user_keys(ledger: LedgerPort, keys: list[str], incident_id: str, created_at: str) -> None:
    """Point the user's other keys (object id, UPN) at this incident, unless they already point
    at it or at a newer one (a lost race is fine: the row then names the other incident). A key
    seen for the first time (the usual case) costs one write: the row is created, and read only
    when it exists already."""
    for key in keys:
        if not key or await ledger.claim_open(key, incident_id, created_at, None):
            continue
        found = await ledger.get_open(key)
        if found is not None and (found[0].get("incident_id") == incident_id or found[0].get("created_at", "") > created_at):
            continue
        await ledger.claim_open(key, incident_id, created_at, found[1] if found else None)
