"""The remediation playbook: which steps exist, their order, and what comes next (pure).

Step names are part of the contract: they name the queues (``step-<name>``), the ledger
rows and the entries of ``responder demo --json``.

The order, and why (docs/architecture.md, "The playbook's order"): the "before" picture first;
then take the account itself back (reset-password, with the optional sign-in block as its first
effect; enforce-mfa), because every foothold a user can create (inbox rules, consents, safe
senders, Outlook delegation) would be re-created through a live account; then what keeps
mail flowing out without a sign-in (clean-mailbox: rules, forwarding, trusted senders), then
the other identities' access to the mailbox (remove-delegates) and the apps the user consented
to (revoke-app-consent); unblock-sender only once every access path is closed.
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError

STEP_NAMES: tuple[str, ...] = (
    "snapshot",
    "reset-password",
    "enforce-mfa",
    "clean-mailbox",
    "remove-delegates",
    "revoke-app-consent",
    "unblock-sender",
    "mailbox-audit",
    "recovery-pass",
    "close",
)
# What PLAYBOOK_STEPS defaults to: every step but recovery-pass, which RECOVERY=tap adds before close
# (settings.effective_playbook).
DEFAULT_PLAYBOOK: tuple[str, ...] = tuple(s for s in STEP_NAMES if s != "recovery-pass")
QUEUE_PREFIX = "step-"
# The step that contains the account (password reset + sessions revoked): it and every step before
# it are the containment path, whose calls go first at a throttled service (shared/priority.py).
CONTAINMENT_STEP = "reset-password"

# Ordering constraints a configured playbook must respect: (earlier, later).
_MUST_PRECEDE = (
    ("snapshot", "reset-password"),  # the "before" picture comes before any change
    ("snapshot", "clean-mailbox"),
    ("snapshot", "remove-delegates"),
    ("snapshot", "revoke-app-consent"),
    ("reset-password", "unblock-sender"),  # never unblock a sender whose account is not secured
    ("enforce-mfa", "unblock-sender"),
    # Take the account back before removing what it could re-create (consents, delegation).
    ("reset-password", "remove-delegates"),
    ("reset-password", "revoke-app-consent"),
    # Unblock the sender only after every access path is closed.
    ("clean-mailbox", "unblock-sender"),
    ("remove-delegates", "unblock-sender"),
    ("revoke-app-consent", "unblock-sender"),
    # The user's way back in (a Temporary Access Pass) only once containment is over: after the reset,
    # after enforce-mfa (which removes methods registered since the cut-off: a pass issued before it
    # would be deleted) and after every other access path was closed.
    ("reset-password", "recovery-pass"),
    ("enforce-mfa", "recovery-pass"),
    ("clean-mailbox", "recovery-pass"),
    ("remove-delegates", "recovery-pass"),
    ("revoke-app-consent", "recovery-pass"),
    ("unblock-sender", "recovery-pass"),
)


def queue_name(step: str) -> str:
    if step not in STEP_NAMES:
        raise ValueError(f"unknown step {step!r}")
    return QUEUE_PREFIX + step


def validate_order(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a configured order; raise ConfigError naming the problem."""
    steps = tuple(steps)
    if not steps:
        raise ConfigError("PLAYBOOK_STEPS is empty")
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown:
        raise ConfigError(f"PLAYBOOK_STEPS has unknown step(s) {unknown}; known: {', '.join(STEP_NAMES)}")
    if len(set(steps)) != len(steps):
        raise ConfigError("PLAYBOOK_STEPS lists a step twice")
    if "reset-password" not in steps:
        raise ConfigError("PLAYBOOK_STEPS must include reset-password: containment is the point")
    for earlier, later in _MUST_PRECEDE:
        if earlier in steps and later in steps and steps.index(earlier) > steps.index(later):
            raise ConfigError(f"PLAYBOOK_STEPS: {earlier} must come before {later}")
    if later_missing := [s for s in ("reset-password", "enforce-mfa") if "unblock-sender" in steps and s not in steps]:
        raise ConfigError(f"PLAYBOOK_STEPS: unblock-sender needs {', '.join(later_missing)} in the playbook")
    if "close" in steps and steps[-1] != "close":
        raise ConfigError("PLAYBOOK_STEPS: close must be the last step")
    return steps


def incident_order(incident: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """The playbook an incident was opened with (recorded on its row), else ``default``."""
    recorded = incident.get("playbook")
    return tuple(recorded.split(",")) if recorded else default


def first_step(order: tuple[str, ...]) -> str:
    return order[0]


def next_step(order: tuple[str, ...], current: str) -> str | None:
    """The step after ``current``, or None when the playbook is done."""
    index = order.index(current)
    return order[index + 1] if index + 1 < len(order) else None


def predecessors(order: tuple[str, ...], step: str) -> tuple[str, ...]:
    return order[: order.index(step)]


def on_containment_path(order: tuple[str, ...], step: str) -> bool:
    """Is ``step`` the containment step or one before it (validate_order guarantees it is present)?"""
    return CONTAINMENT_STEP in order and order.index(step) <= order.index(CONTAINMENT_STEP)
