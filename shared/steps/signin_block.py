"""The sign-in block inside the playbook: reset-password blocks first, close re-enables (until-close).

Both are effects (checkpointed, verified through ``accountEnabled``), and each is recorded with
its before-value so it can be undone (``undo``: the Graph call that reverses it). The value
before the block is read once and kept in the step's checkpoint, so a retry after the block
landed never mistakes the blocked account for one that was disabled before the incident.
Neither ever stops containment: a refused block is recorded and the reset goes on.
"""
from __future__ import annotations

from typing import Any

from ..errors import PermanentError
from ..signin import BLOCKED, NOT_BLOCKED, RESTORED, SYNCED_NOTE, WAS_DISABLED, WAS_DISABLED_NOTE, release_hint
from ..timestamps import iso
from .base import StepContext


async def _enabled(ctx: StepContext) -> bool | None:
    return (await ctx.graph.get_user(ctx.user_id, select="id,accountEnabled")).get("accountEnabled")


async def _mark(ctx: StepContext, fields: dict[str, Any]) -> None:
    await ctx.deps.ledger.update_incident(ctx.task.incident_id, fields)
    ctx.incident.update(fields)


async def block_sign_in(ctx: StepContext) -> dict[str, Any]:
    """Block sign-in (``accountEnabled`` false) per BLOCK_SIGN_IN; the record for the step detail."""
    policy = ctx.settings.block_sign_in
    uid = ctx.user_id
    if ctx.incident.get("on_prem_synced"):
        await _mark(ctx, {"sign_in": NOT_BLOCKED, "sign_in_note": SYNCED_NOTE})
        ctx.log.warning("%s", SYNCED_NOTE)
        return {"policy": policy, "blocked": False, "reason": SYNCED_NOTE}
    before = ctx.checkpoint.get("sign_in_before")
    if before is None:
        before = await _enabled(ctx) is not False
        await ctx.save(sign_in_before=before)
    if before is False:
        await _mark(ctx, {"sign_in": WAS_DISABLED, "sign_in_note": WAS_DISABLED_NOTE})
        return {"policy": policy, "blocked": False, "reason": WAS_DISABLED_NOTE, "before": {"accountEnabled": False}}

    async def blocked(_record: dict[str, Any]) -> bool:
        return await _enabled(ctx) is False

    try:
        await ctx.effect("sign-in-blocked", lambda: ctx.graph.set_account_enabled(uid, False),
                         description=f"block sign-in (accountEnabled false) {policy}", verify=blocked)
    except PermanentError as exc:  # e.g. User.EnableDisableAccount.All not granted: containment goes on
        error = f"sign-in block refused: {exc}"[:400]
        ctx.log.warning("%s", error)
        await _mark(ctx, {"sign_in": NOT_BLOCKED, "sign_in_note": error})
        return {"policy": policy, "blocked": False, "error": error}
    record = {
        "kind": "account-enabled", "policy": policy, "user_id": uid,
        "blocked": "planned" if ctx.dry_run else True,
        "before": {"accountEnabled": True}, "after": {"accountEnabled": False},
        "undo": {"service": "graph", "method": "PATCH", "path": f"/users/{uid}", "body": {"accountEnabled": True},
                 "permission": "User.EnableDisableAccount.All"},
    }
    if not ctx.dry_run:
        at = ctx.checkpoint.get("effects", {}).get("sign-in-blocked", {}).get("done_at") or iso(ctx.deps.clock())
        record["blocked_at"] = at
        await _mark(ctx, {"sign_in": BLOCKED, "sign_in_policy": policy, "sign_in_blocked_at": at})
    return record


async def restore_sign_in(ctx: StepContext, block: dict[str, Any]) -> dict[str, Any] | None:
    """At close: re-enable what reset-password blocked (until-close), or say who must (until-approved)."""
    if block.get("blocked") is not True:
        return None
    if ctx.incident.get("sign_in") == RESTORED:
        return {"restored": True, "by": ctx.incident.get("sign_in_restored_by") or "operator",
                "at": ctx.incident.get("sign_in_restored_at")}
    if block.get("policy") != "until-close":
        hint = release_hint(ctx.task.incident_id)
        return {"restored": False, "reason": hint}
    uid = ctx.user_id

    async def enabled(_record: dict[str, Any]) -> bool:
        return await _enabled(ctx) is True

    try:
        await ctx.effect("sign-in-restored", lambda: ctx.graph.set_account_enabled(uid, True),
                         description="re-enable sign-in (accountEnabled true): BLOCK_SIGN_IN=until-close", verify=enabled)
    except PermanentError as exc:  # recorded and mailed; never a reason not to close
        error = f"re-enabling sign-in failed: {exc}"[:400]
        ctx.log.error("%s", error)
        await _mark(ctx, {"sign_in_error": error})
        return {"restored": False, "error": error, "reason": release_hint(ctx.task.incident_id)}
    if ctx.dry_run:
        return {"restored": "planned"}
    at = iso(ctx.deps.clock())
    await _mark(ctx, {"sign_in": RESTORED, "sign_in_restored_at": at, "sign_in_restored_by": "close (until-close)"})
    return {"restored": True, "at": at, "by": "close (until-close)",
            "undo": {"service": "graph", "method": "PATCH", "path": f"/users/{uid}", "body": {"accountEnabled": False},
                     "permission": "User.EnableDisableAccount.All"}}
