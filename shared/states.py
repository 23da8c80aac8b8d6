"""The states an incident and a step go through, and what the runner reports: defined once.

They are ``StrEnum`` members, so a member *is* its string: it is stored in Table storage,
written to JSON and compared with rows read back exactly as the plain strings were
(``IncidentState.DRY_RUN == "dry-run"``). Adding a state here is a storage-format change.

Incident: ``new`` → ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``dry-run``;
``held`` (approval, storm breaker, protected account) until enough operators approve it, one
rejects it (``rejected``) or HOLD_TTL_HOURS pass without a decision (``expired``); both end the
incident without a change in the tenant.
Step (one ledger row): ``running`` (leased) → ``succeeded`` | ``skipped`` | ``planned``
(dry-run) | ``failed``; ``retrying`` after a transient failure; ``held`` when the gate
stopped the first step (not terminal: approval claims the row again).
"""
from __future__ import annotations

from enum import StrEnum


class IncidentState(StrEnum):
    NEW = "new"  # row written, first step not enqueued yet
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DRY_RUN = "dry-run"
    REJECTED = "rejected"  # an operator ended the held incident: nothing was changed
    EXPIRED = "expired"  # held past HOLD_TTL_HOURS without a decision: nothing was changed


class StepState(StrEnum):
    RUNNING = "running"
    RETRYING = "retrying"
    HELD = "held"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    PLANNED = "planned"  # dry-run: what would have been done is in the detail
    FAILED = "failed"
    PENDING = "pending"  # read models only: the step has no ledger row yet (never stored)


class RunOutcome(StrEnum):
    """What StepRunner.run did with one step task (logs and tests; never stored)."""

    RAN = "ran"
    DONE = "done"  # the step had already finished: advanced only
    BUSY = "busy"  # another worker holds the lease: re-checked later
    HELD = "held"
    STOPPED = "stopped"  # the incident is over (or the step failed)
    IGNORED = "ignored"  # no such incident, not in its playbook, or out of order


#: An incident in one of these states never changes again.
TERMINAL_INCIDENT_STATES: frozenset[IncidentState] = frozenset(
    {IncidentState.SUCCEEDED, IncidentState.FAILED, IncidentState.DRY_RUN, IncidentState.REJECTED,
     IncidentState.EXPIRED}
)
#: Nothing moves an incident in these states without an operator (terminal, or held).
SETTLED_INCIDENT_STATES: frozenset[IncidentState] = TERMINAL_INCIDENT_STATES | {IncidentState.HELD}
#: A step row in one of these states is finished: a redelivery never runs it again.
TERMINAL_STEP_STATES: frozenset[StepState] = frozenset(
    {StepState.SUCCEEDED, StepState.SKIPPED, StepState.FAILED, StepState.PLANNED}
)
#: Finished without stopping the incident: the next step may run.
COMPLETED_STEP_STATES: frozenset[StepState] = TERMINAL_STEP_STATES - {StepState.FAILED}

__all__ = [
    "COMPLETED_STEP_STATES",
    "SETTLED_INCIDENT_STATES",
    "TERMINAL_INCIDENT_STATES",
    "TERMINAL_STEP_STATES",
    "IncidentState",
    "RunOutcome",
    "StepState",
]
