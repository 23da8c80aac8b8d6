"""The shape the foothold steps share: decide first, save the plan, then carry it out.

remove-delegates and revoke-app-consent both read what the user has, decide for each entry
(remove / keep / review, with the before-values and the call that would undo it), save that
plan in the step's checkpoint before the first change (with that change's start mark: a plan
with nothing to remove is not written), and then run one verified effect per entry to remove. A redelivered task finds the saved plan and carries out the same decisions
(it never re-decides after changes began). What the step reports about the plan is built here
too, so both steps say it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..errors import PermanentError
from ..mailbox_rights import KEEP, REMOVE, REVIEW
from .base import StepContext

Entry = dict[str, Any]


async def saved_plan(ctx: StepContext, make: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The plan an earlier attempt saved, or a new one, saved before anything is changed."""
    plan = ctx.checkpoint.get("plan")
    if plan is None:
        plan = await make()
        ctx.stage(plan=plan)  # the decisions and before-values: stored with the first change's start mark
    return plan


@dataclass
class Removals:
    """What happened to the entries the plan said to remove."""

    removed: list[Entry] = field(default_factory=list)
    gone: list[Entry] = field(default_factory=list)
    not_removed: list[Entry] = field(default_factory=list)


async def carry_out(entries: list[Entry], remove: Callable[[Entry], Awaitable[str]]) -> Removals:
    """Run ``remove`` for every entry decided REMOVE; it answers removed | gone | planned | an error text."""
    done = Removals()
    for entry in entries:
        if entry["decision"] != REMOVE:
            continue
        outcome = await remove(entry)
        if outcome == "removed":
            done.removed.append(entry)
        elif outcome == "gone":
            done.gone.append(entry)
        elif outcome != "planned":
            done.not_removed.append({**entry, "error": outcome})
    return done


def plan_detail(ctx: StepContext, cut: dict[str, Any], entries: list[Entry], done: Removals) -> dict[str, Any]:
    """The detail fields every plan-driven step reports (the step adds its own)."""
    detail: dict[str, Any] = {
        "cutoff": cut,
        "removed": done.removed,
        "already_gone": done.gone,
        "not_removed": done.not_removed,
        "kept": [e for e in entries if e["decision"] == KEEP],
        "review": [e for e in entries if e["decision"] == REVIEW],
        "open_paths": len(done.not_removed),
    }
    if ctx.dry_run:
        detail["would_remove"] = [e for e in entries if e["decision"] == REMOVE]
    return detail


def plan_summary(ctx: StepContext, detail: dict[str, Any], what: str, unavailable: dict[str, str],
                 notes: tuple[str, ...] = ()) -> str:
    """"removed N <what>; K kept, R for review[; notes...][; M NOT removed][; unreadable: ...]"."""
    count = len(detail["would_remove"]) if ctx.dry_run else len(detail["removed"])
    summary = (f"{'would remove' if ctx.dry_run else 'removed'} {count} {what}; "
               f"{len(detail['kept'])} kept, {len(detail['review'])} for review")
    for note in notes:
        summary += f"; {note}"
    if detail["not_removed"]:
        summary += f"; {len(detail['not_removed'])} NOT removed"
    if unavailable:
        summary += f"; unreadable: {', '.join(sorted(unavailable))}"
    return summary


class SectionReader:
    """Reads one section for a plan; a refused read (403, 404...) makes the section unavailable
    (recorded with its reason) instead of failing the step. Transient errors propagate."""

    def __init__(self, ctx: StepContext, step: str) -> None:
        self.ctx = ctx
        self.step = step
        self.unavailable: dict[str, str] = {}

    async def __call__(self, section: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except PermanentError as exc:
            self.unavailable[section] = str(exc)[:300]
            self.ctx.log.warning("%s: %s unavailable: %s", self.step, section, exc)
            return None
