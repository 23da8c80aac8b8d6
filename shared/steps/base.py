"""The shape every remediation step shares, and the runner that drives one StepTask.

A step subclasses ``Step``, names itself, declares the Graph/EXO calls it makes, and
implements ``act(ctx)``. Everything else lives here, once:
- logging with incident id, step and correlation id on every line;
- claiming the ledger row (ETag-conditional) before any side effect;
- ``ctx.effect(...)``: each side effect is checkpointed before and after it runs, so a
  redelivered message skips finished effects and verifies half-finished ones instead of
  repeating them; in dry-run mode an effect is recorded as "would do" and not run;
- timing, error mapping (TransientError → release + raise for the platform to retry;
  PermanentError → a final ``failed`` row and a stopped incident), the ledger write, and
  enqueuing the next step.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, ClassVar, Protocol

from ..deps import Deps
from ..errors import PermanentError, TransientError
from ..ledger_protocol import Claim, ClaimStatus, load_json
from ..logs import IncidentLog, incident_log
from ..model import StepTask
from ..notify import notify_action, notify_failed, notify_held
from ..playbook import CONTAINMENT_STEP, incident_order, next_step, on_containment_path, predecessors, queue_name
from ..policy import GateFacts
from ..ports import ExchangePort, GraphPort, LedgerPort
from ..priority import Priority, priority
from ..retry import EFFECT_POLICY, Retrier, RetryKind, kind_of_status
from ..settings import Settings
from ..states import COMPLETED_STEP_STATES, TERMINAL_INCIDENT_STATES, IncidentState, RunOutcome, StepState
from ..timestamps import iso, parse_timestamp
from ..userindex import index_user_keys, resolved_user_fields

logger = logging.getLogger(__name__)

class Gate(Protocol):
    """The protection gate the runner asks before the first step and before every step that
    changes the tenant (shared/gate.py ``ProtectionGate``; tests pass their own)."""

    async def lookup(self, graph: GraphPort, settings: Settings, now: datetime, user_key: str) -> GateFacts:
        """What makes the user protected (group, roles): needs only a key for the user."""

    async def check(self, ctx: StepContext, facts: GateFacts) -> str | None:
        """Why the step must wait for (more) approvals, or None; records the verdict."""


@dataclass(frozen=True)
class Call:
    """A call a step makes: service (graph|exo), what, and the permission it needs."""

    service: str
    what: str
    permission: str


@dataclass
class StepResult:
    state: StepState = StepState.SUCCEEDED  # succeeded | skipped
    summary: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    # Incident fields the step sets; written with the runner's own update of the incident (one round trip).
    incident_updates: dict[str, Any] = field(default_factory=dict)


class StepContext:
    def __init__(self, deps: Deps, task: StepTask, incident: dict[str, Any], claim: Claim, log: IncidentLog) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.task = task
        self.incident = incident
        self.claim = claim
        self.log = log
        self.dry_run = incident.get("mode") == IncidentState.DRY_RUN
        self.would: list[str] = []
        # The user object the runner read when it resolved the incident in this attempt
        # (None when an earlier step resolved it): steps may reuse it instead of reading again.
        self.resolved_user: dict[str, Any] | None = None
        # Incident fields learnt during the step (the resolved user): written with the runner's own
        # update of the incident at the end of the step, not in a round trip of their own.
        self.incident_updates: dict[str, Any] = {}
        self._staged = False  # stage() left updates that the next start mark must write

    @property
    def graph(self) -> GraphPort:
        return self.deps.require_graph()

    @property
    def exchange(self) -> ExchangePort:
        return self.deps.require_exchange()

    @property
    def user_id(self) -> str:
        return self.incident["user_id"]

    @property
    def upn(self) -> str:
        return self.incident.get("user_principal_name") or ""

    @property
    def checkpoint(self) -> dict[str, Any]:
        return self.claim.checkpoint

    async def save(self, **updates: Any) -> None:
        self._staged = False
        await self.deps.ledger.checkpoint(self.task.incident_id, self.task.step, self.claim, updates)

    def stage(self, **updates: Any) -> None:
        """Progress that must be stored before the step's next change, not now (a plan of removals): it goes
        with the next effect's start mark, which is then always written. If no change follows, it is never
        written: a retry decides again from a tenant nothing changed in."""
        self.claim.checkpoint.update(updates)
        self._staged = True

    async def effect(
        self,
        name: str,
        action: Callable[[], Awaitable[Any]],
        *,
        description: str,
        verify: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
        idempotent: bool = False,
        state_verified: bool = False,
    ) -> bool:
        """Run one side effect at most once per incident.

        Returns True if the effect ran now, False if it was already done (or dry-run).
        ``verify(record)`` is asked when a previous attempt started the effect but crashed
        before recording its end: if it proves the effect landed, it is not repeated.
        ``idempotent``: the service itself makes a repeat a no-op and says so (a member already
        added, a method already gone): no checkpoint is written; a redelivery repeats the call and
        the action reports that nothing was left to do.
        ``state_verified``: ``verify`` reads only the tenant's state (a rule off, a sender absent),
        never ``record["issued_at"]``: no start mark is written (unless stage() left something to
        write), and a later attempt asks ``verify`` before running the effect. A verify that compares
        the tenant's timestamps with the issue time (the password reset's) keeps its start mark.
        Without ``verify`` the effect's end is written at once and no start mark before it (a retry
        that finds no end runs it again either way: a second SOC mail rather than none).
        """
        record = dict(self.checkpoint.get("effects", {}).get(name, {}))
        if record.get("done_at"):
            self.log.info("effect %s already done at %s; skipping", name, record["done_at"])
            return False
        if self.dry_run:
            self.would.append(description)
            self.log.info("dry-run: would %s", description)
            return False
        if idempotent and not record:
            await action()
            self.log.info("effect %s done: %s", name, description)
            return True
        state_verified = state_verified and verify is not None
        # The start mark is stored (before the call) only where a retry needs it: a verify that compares
        # the tenant's timestamps with the issue time. A state-verified effect is verified on any later
        # attempt; an unverifiable one is run again unless its end was recorded, mark or not.
        mark_start = (verify is not None and not state_verified) or self._staged
        maybe_issued = bool(record.get("issued_at")) or (state_verified and self.claim.attempts > 1)
        if maybe_issued and verify is not None and await verify(record):
            self.log.info("effect %s of an earlier attempt is confirmed in the tenant; not repeating it", name)
            await self._mark(name, {**record, "done_at": iso(self.deps.clock()), "verified": True}, write=mark_start)
            return False
        await self._mark(name, {"issued_at": iso(self.deps.clock()), "attempt": self.claim.attempts}, write=mark_start)
        retrier = Retrier(EFFECT_POLICY)
        while True:
            try:
                await action()
                break
            except TransientError as exc:
                # A write that failed transiently may or may not have landed. Without a way to
                # tell, the step gives up and the platform retries the message; with verify(),
                # wait as the retry policy says, check the tenant, and repeat the write only if
                # it did not land.
                kind = kind_of_status(exc.status) or RetryKind.TRANSIENT
                delay = retrier.next_delay(kind, exc.retry_after, safe=verify is not None)
                if verify is None or delay is None:
                    raise
                await asyncio.sleep(delay)
                if await verify(record | {"issued_at": self.checkpoint["effects"][name]["issued_at"]}):
                    self.log.info("effect %s landed despite %s; not repeating it", name, exc)
                    break
                self.log.info("effect %s did not land (%s); repeating it", name, exc)
        # An effect that can be verified records its end with the step's next write (the next
        # effect's start, or the step's end): if the worker dies first, the retry verifies it in the
        # tenant instead of repeating it. One that cannot be verified records its end now.
        await self._mark(name, {**self.checkpoint["effects"][name], "done_at": iso(self.deps.clock())},
                         write=verify is None)
        self.log.info("effect %s done: %s", name, description)
        return True

    async def _mark(self, name: str, record: dict[str, Any], write: bool = True) -> None:
        effects = dict(self.checkpoint.get("effects", {}))
        effects[name] = record
        if write:
            await self.save(effects=effects)
        else:
            self.claim.checkpoint["effects"] = effects


class Step(ABC):
    """One remediation step. Subclasses set ``name`` and ``calls`` and implement ``act``."""

    name: ClassVar[str]
    calls: ClassVar[tuple[Call, ...]] = ()
    # Whether the step changes the tenant (reads-only steps run the same in dry-run).
    mutates: ClassVar[bool] = True

    @abstractmethod
    async def act(self, ctx: StepContext) -> StepResult:
        """Do the step's work through ctx (ctx.effect for every change); return the result."""


# enforce-mfa finishes taking the account back, and its writes are few (one group add for up to 20
# users): they go with the resets, oldest incident first. Behind them they would wait for the whole
# storm's containment (the write quota is the resets' until the last one) and hold every later step,
# and the Exchange work, back with them (docs/benchmarks.md).
TAKE_BACK_STEPS = frozenset({CONTAINMENT_STEP, "enforce-mfa"})


def step_priority(order: tuple[str, ...], step: str) -> Priority:
    """CONTAINMENT for the steps that take the account back (reset-password, enforce-mfa), APPROACH for
    those before them, NORMAL after (priority.py)."""
    if step in TAKE_BACK_STEPS:
        return Priority.CONTAINMENT
    return Priority.APPROACH if on_containment_path(order, step) else Priority.NORMAL


def place_in_line(incident: dict[str, Any]) -> float:
    """The incident's creation time (epoch seconds): its calls' place among the same stage's (priority.py)."""
    try:
        return parse_timestamp(str(incident.get("created_at") or "")).timestamp()
    except ValueError:
        return time.time()


async def enqueue_step(deps: Deps, incident_id: str, step: str, user_key: str, correlation_id: str, delay_s: int | None = None) -> None:
    task = StepTask(incident_id=incident_id, step=step, user_key=user_key, correlation_id=correlation_id)
    await deps.queues.send(queue_name(step), task.to_json(), visibility_timeout=delay_s)


async def successor_started(ledger: LedgerPort, incident_id: str, order: tuple[str, ...], step: str) -> bool:
    """Has the step after ``step`` (in this incident's order) got a ledger row yet?
    False for the last step. The runner's redelivery path and the poison sweeper both ask."""
    nxt = next_step(order, step)
    return nxt is not None and await ledger.get_step(incident_id, nxt) is not None


class StepRunner:
    """Drives one StepTask through its phases:

    1. ``_runnable``: the incident exists, the step is in its playbook, it is not over or held;
    2. ``_earlier_steps_finished``: steps run strictly in order;
    3. claim the ledger row: ``busy`` → look again later; ``done`` → ``_redelivered`` (advance only);
    4. ``_execute``: resolve the user, the gate (before the first step and before every step
       with ``mutates``: whatever approved the incident, a protected account still needs its two
       approvers), ``step.act``; errors become a released row (transient: the platform retries)
       or a failed row and a stopped incident;
    5. ``_record`` the outcome, then ``_advance`` the incident to the next step.
    """

    def __init__(self, deps: Deps, steps: dict[str, Step], gate: Gate | None = None) -> None:
        self.deps = deps
        self.steps = steps
        self.gate = gate

    async def run(self, task: StepTask) -> RunOutcome:
        """What happened, for logs and tests (see states.RunOutcome)."""
        log = incident_log(logger, task.incident_id, task.step, task.correlation_id)
        step = self.steps.get(task.step)
        if step is None:
            raise PermanentError(f"no step named {task.step!r} is registered")
        incident = await self.deps.ledger.get_incident(task.incident_id)
        if incident is None:
            log.warning("incident not found; dropping the step task")
            await self.deps.ledger.record_error(queue_name(task.step), "incident not found", message_id=task.incident_id)
            return RunOutcome.IGNORED
        order = incident_order(incident, self.deps.settings.playbook_steps)
        stop = self._runnable(task, incident, order, log)
        if stop is not None:
            return stop
        if not await self._earlier_steps_finished(task, incident, order, log):
            return RunOutcome.IGNORED
        claim = await self.deps.ledger.claim_step(task.incident_id, task.step, self.deps.settings.step_lease_s,
                                                  task.correlation_id)
        if claim.status is ClaimStatus.BUSY:
            log.info("step is being run by another worker; re-checking in %.0fs", claim.retry_in)
            await enqueue_step(self.deps, task.incident_id, task.step, task.user_key, task.correlation_id, int(claim.retry_in) + 1)
            return RunOutcome.BUSY
        if claim.status is ClaimStatus.DONE:
            return await self._redelivered(task, incident, order, claim, log)
        # Containment's calls wait ahead of every later step's at a throttled service (the reset's first),
        # and among incidents at the same stage the oldest incident's calls go first.
        with priority(step_priority(order, task.step), place_in_line(incident)):
            return await self._execute(step, task, incident, order, claim, log)

    # -- phases -------------------------------------------------------------------------------

    @staticmethod
    def _runnable(task: StepTask, incident: dict[str, Any], order: tuple[str, ...], log: IncidentLog) -> RunOutcome | None:
        """None when the step may run; else why not."""
        if task.step not in order:
            log.warning("step is not in this incident's playbook %s; ignoring", order)
            return RunOutcome.IGNORED
        state = incident.get("state")
        if state == IncidentState.HELD:
            log.info("incident is held; step not run")
            return RunOutcome.HELD
        if state in TERMINAL_INCIDENT_STATES:
            log.info("incident is %s; step not run", state)
            return RunOutcome.STOPPED
        return None

    async def _earlier_steps_finished(self, task: StepTask, incident: dict[str, Any], order: tuple[str, ...],
                                      log: IncidentLog) -> bool:
        earlier = predecessors(order, task.step)
        if not earlier or incident.get("current_step") == task.step:
            # (When the incident already points at this step, _advance put it there after
            # every earlier step finished: no need to read the ledger rows.)
            return True
        # Steps run strictly in order: a task for a later step (a stray or forged message)
        # does nothing until every earlier step has finished.
        rows = {r["RowKey"]: r for r in await self.deps.ledger.list_steps(task.incident_id)}
        unfinished = [s for s in earlier if rows.get(s, {}).get("state") not in COMPLETED_STEP_STATES]
        if not unfinished:
            return True
        log.warning("step task arrived before %s finished; ignored", ", ".join(unfinished))
        await self.deps.ledger.record_error(queue_name(task.step),
                                            f"out-of-order step task ignored: {', '.join(unfinished)} not finished",
                                            message_id=task.incident_id)
        return False

    async def _redelivered(self, task: StepTask, incident: dict[str, Any], order: tuple[str, ...], claim: Claim,
                           log: IncidentLog) -> RunOutcome:
        """The step finished earlier (a redelivery): advance the incident if nobody did."""
        log.info("step already %s (redelivery); advancing", claim.row.get("state"))
        if claim.row.get("state") == StepState.FAILED:
            return RunOutcome.STOPPED
        if await successor_started(self.deps.ledger, task.incident_id, order, task.step):
            log.info("the next step already has a ledger row; nothing to enqueue")
            return RunOutcome.DONE
        updates = (load_json(claim.row.get("detail"), {}) or {}).get("incident") or {}
        await self._advance(task, incident, order, log, updates if isinstance(updates, dict) else {})
        return RunOutcome.DONE

    async def _execute(self, step: Step, task: StepTask, incident: dict[str, Any], order: tuple[str, ...], claim: Claim,
                       log: IncidentLog) -> RunOutcome:
        ledger = self.deps.ledger
        started = time.monotonic()
        ctx = StepContext(self.deps, task, incident, claim, log)
        log.info("step started (attempt %d)", claim.attempts)
        try:
            held_reason = await self._prepare(ctx, order, step)
            if held_reason:
                # "held" is not a terminal step state: approval claims the row again.
                await ledger.finish(task.incident_id, task.step, claim, StepState.HELD, {"reason": held_reason}, held_reason)
                held = {"state": IncidentState.HELD, "held_reason": held_reason, "held_at": iso(self.deps.clock()),
                        "current_step": task.step}
                await ledger.update_incident(task.incident_id, {**ctx.incident_updates, **held})
                log.warning("incident held before any change: %s", held_reason)
                self._not_closing_now(ctx)
                await notify_held(self.deps, {**incident, **held})
                return RunOutcome.HELD
            result = await step.act(ctx)
        except TransientError as exc:
            log.warning("transient failure, will be retried: %s", exc)
            await ledger.release(task.incident_id, task.step, claim, str(exc))
            raise
        except PermanentError as exc:
            log.error("step failed permanently: %s", exc)
            await ledger.finish(task.incident_id, task.step, claim, StepState.FAILED, {"would": ctx.would}, str(exc),
                                _elapsed_ms(started))
            await ledger.update_incident(
                task.incident_id,
                {**ctx.incident_updates, "state": IncidentState.FAILED, "stopped_at": task.step,
                 "stop_reason": str(exc)[:1000]},
            )
            self._not_closing_now(ctx)
            await notify_failed(self.deps, task.incident_id)
            return RunOutcome.STOPPED
        except Exception as exc:  # a bug or an unexpected SDK error: retry, then poison
            log.exception("unexpected error; releasing the step for retry")
            await ledger.release(task.incident_id, task.step, claim, f"unexpected {exc.__class__.__name__}")
            raise
        result.incident_updates = {**ctx.incident_updates, **result.incident_updates}
        await self._record(step, ctx, result, started)
        incident.update(result.incident_updates)
        await self._advance(task, incident, order, log, result.incident_updates)
        return RunOutcome.RAN

    def _not_closing_now(self, ctx: StepContext) -> None:
        """A held or failed incident will not reach close soon: the worker's confirm batches stop waiting for it."""
        calls, user_id = self.deps.shared_calls, ctx.incident.get("user_id")
        if calls is not None and user_id:
            calls.closing(str(user_id))

    async def _prepare(self, ctx: StepContext, order: tuple[str, ...], step: Step) -> str | None:
        """Resolve the user (once per incident) and, before the first step and before every step
        that changes the tenant, ask the gate. Returns why the incident must be held, or None."""
        incident = ctx.incident
        gate = self.gate
        if gate is None or not (ctx.task.step == order[0] or step.mutates):
            if not incident.get("user_resolved"):
                await self._resolve_user(ctx)
            return None
        key = incident.get("user_id") or incident["user_principal_name"]
        lookup = gate.lookup(ctx.graph, ctx.settings, self.deps.clock(), key)
        if incident.get("user_resolved"):
            facts = await lookup
        else:
            # The group and role lookups need only the user's key: run them beside the resolution.
            resolved, found = await asyncio.gather(self._resolve_user(ctx), lookup, return_exceptions=True)
            for outcome in (resolved, found):
                if isinstance(outcome, BaseException):
                    raise outcome
            assert isinstance(found, GateFacts)
            facts = found
        return await gate.check(ctx, facts)

    async def _record(self, step: Step, ctx: StepContext, result: StepResult, started: float) -> None:
        elapsed = _elapsed_ms(started)
        final_state = StepState.PLANNED if ctx.dry_run and step.mutates and result.state == StepState.SUCCEEDED else result.state
        detail = dict(result.detail)
        if result.incident_updates:
            detail["incident"] = result.incident_updates  # re-applied if the worker dies before _advance
        if ctx.would:
            detail["would"] = ctx.would
        if result.summary:
            detail["summary"] = result.summary
        await self.deps.ledger.finish(ctx.task.incident_id, ctx.task.step, ctx.claim, final_state, detail, "", elapsed)
        ctx.log.info("step %s in %d ms: %s", final_state, elapsed, result.summary)
        if detail.get("action_required") and not ctx.dry_run:
            # Something only a person can do (an on-premises reset, a recovery pass not delivered): tell
            # the SOC now, not only in the close mail (shared/notify.py: once per step).
            await notify_action(self.deps, ctx.task.incident_id, ctx.task.step, str(detail["action_required"]))

    async def _resolve_user(self, ctx: StepContext) -> None:
        """Look the user up once per incident: canonical object id, UPN and sync state (intake
        usually did it already; recorded on the incident with the step's end). A request that named
        one user by id and another by UPN stops. Indexes the user under any key intake did not know."""
        incident = ctx.incident
        known = {str(incident.get(k) or "").lower() for k in ("user_key", "user_id", "user_principal_name")}
        named_upn = (incident.get("user_principal_name") or "").lower()
        user = await ctx.graph.get_user(incident.get("user_id") or incident["user_principal_name"])
        fields = resolved_user_fields(user)
        if incident.get("user_id") and named_upn and fields["user_principal_name"] != named_upn:
            raise PermanentError("user_id and user_principal_name name different users "
                                 f"({incident['user_id']} is not {named_upn})")
        ctx.incident_updates.update(fields)
        incident.update(fields)
        ctx.resolved_user = user
        # Index the user under the object id (and UPN) too: a later signal keyed either way finds this
        # incident. Intake indexed every key the alert carried already.
        new_keys = [k for k in (fields["user_id"], fields["user_principal_name"]) if k and k.lower() not in known]
        if new_keys:
            await index_user_keys(self.deps.ledger, new_keys, ctx.task.incident_id,
                                  incident.get("created_at") or iso(self.deps.clock()))
        ctx.log.info("user resolved to %s (synced=%s)", fields["user_id"], fields["on_prem_synced"])

    async def _advance(self, task: StepTask, incident: dict[str, Any], order: tuple[str, ...], log: IncidentLog,
                       updates: dict[str, Any] | None = None) -> None:
        nxt = next_step(order, task.step)
        if nxt is None:
            final = IncidentState.DRY_RUN if incident.get("mode") == IncidentState.DRY_RUN else IncidentState.SUCCEEDED
            await self.deps.ledger.update_incident(task.incident_id, {**(updates or {}), "state": final, "current_step": "",
                                                                      "finished_at": iso(self.deps.clock())})
            log.info("playbook complete; incident %s", final)
            return
        await self.deps.ledger.update_incident(task.incident_id, {**(updates or {}), "state": IncidentState.RUNNING,
                                                                  "current_step": nxt})
        await enqueue_step(self.deps, task.incident_id, nxt, task.user_key, task.correlation_id)
        log.info("enqueued next step %s", nxt)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
