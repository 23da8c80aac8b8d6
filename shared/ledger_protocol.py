"""The idempotency protocol of the step ledger, written once: how a step's row is claimed,
leased, released and finished, and how its JSON properties are encoded.

Pure functions over a row (a dict) and a time: the Table-storage ledger
(shared/adapters/ledger.py) and the in-memory fake (tests/helpers/fakes.py) both call them
and only differ in how they write the result (ETag-conditional table writes vs. a dict).

One row per (incident, step):
- no row → create it ``running`` with ``attempts`` 1 and a lease (``lease_until``);
- a terminal row (succeeded, skipped, planned, failed) → ``done``: never run again;
- ``running`` with a lease in the future → ``busy``: another worker holds it; look again
  when the lease ends (``retry_in``);
- anything else (``retrying``, ``held``, an expired lease) → take it over: ``running``,
  ``attempts`` + 1, a new lease; the checkpoint of the earlier attempts is kept.
Every later write by the holder is conditional on the ETag it got, so a holder whose lease
was taken over can no longer write (it gets ConflictError / "lost the lease").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Mapping

from .states import TERMINAL_STEP_STATES, StepState
from .timestamps import iso, parse_timestamp

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_JSON_CHARS",
    "Claim",
    "ClaimDecision",
    "ClaimStatus",
    "checkpoint_fields",
    "decide_claim",
    "dump_json",
    "finish_fields",
    "load_json",
    "release_fields",
]

MAX_JSON_CHARS = 30_000  # a table string property holds 32K UTF-16 characters
MAX_ERROR_CHARS = 1000
MIN_RETRY_IN_S = 1.0


def dump_json(value: Any, limit: int = MAX_JSON_CHARS) -> str:
    """JSON for a table property, bounded: oversize values are replaced by a marker, not cut mid-token."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    if len(text) <= limit:
        return text
    return json.dumps({"truncated": True, "chars": len(text), "head": text[: limit - 200]})


def load_json(text: Any, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"  # this caller holds the lease and may act
    DONE = "done"  # the step finished earlier: advance only
    BUSY = "busy"  # another worker holds a live lease


@dataclass
class Claim:
    """The outcome of claiming a step's ledger row (and, once claimed, the holder's handle)."""

    status: ClaimStatus
    row: dict[str, Any]
    etag: str | None = None
    retry_in: float = 0.0
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return int(self.row.get("attempts", 0))


@dataclass(frozen=True)
class ClaimDecision:
    """What to do with the row as read: ``create`` it, ``take`` it over, or nothing."""

    status: ClaimStatus
    create: bool = False
    fields: dict[str, Any] = field(default_factory=dict)  # to write (create: the whole row; take: a merge)
    retry_in: float = 0.0
    checkpoint: dict[str, Any] = field(default_factory=dict)  # the earlier attempts' progress


def decide_claim(row: Mapping[str, Any] | None, now: datetime, lease_s: int, correlation_id: str) -> ClaimDecision:
    """The claim decision for ``row`` (None: no row yet) at time ``now``."""
    lease_until = iso(now + timedelta(seconds=lease_s))
    if row is None:
        return ClaimDecision(ClaimStatus.CLAIMED, create=True, fields={
            "state": StepState.RUNNING,
            "attempts": 1,
            "started_at": iso(now),
            "lease_until": lease_until,
            "correlation_id": correlation_id,
            "checkpoint": "{}",
        })
    checkpoint = load_json(row.get("checkpoint"), {}) or {}
    state = row.get("state")
    if state in TERMINAL_STEP_STATES:
        return ClaimDecision(ClaimStatus.DONE, checkpoint=checkpoint)
    held_until = str(row.get("lease_until") or "")
    if state == StepState.RUNNING and held_until > iso(now):
        try:
            remaining = (parse_timestamp(held_until) - now).total_seconds()
        except ValueError:
            remaining = float(lease_s)
        return ClaimDecision(ClaimStatus.BUSY, retry_in=max(MIN_RETRY_IN_S, remaining))
    return ClaimDecision(ClaimStatus.CLAIMED, fields={
        "state": StepState.RUNNING,
        "attempts": int(row.get("attempts", 0) or 0) + 1,
        "lease_until": lease_until,
        "correlation_id": correlation_id,
    }, checkpoint=checkpoint)


def checkpoint_fields(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    return {"checkpoint": dump_json(dict(checkpoint))}


def release_fields(now: datetime, error: str) -> dict[str, Any]:
    """Give the row back after a transient failure: claimable again at once."""
    return {"state": StepState.RETRYING, "lease_until": iso(now), "error": error[:MAX_ERROR_CHARS]}


def finish_fields(now: datetime, state: str, detail: Any, error: str = "", duration_ms: int = 0) -> dict[str, Any]:
    return {
        "state": state,
        "finished_at": iso(now),
        "duration_ms": duration_ms,
        "detail": dump_json(detail),
        "error": error[:MAX_ERROR_CHARS],
        "lease_until": "",
    }
