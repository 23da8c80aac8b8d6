"""The storm breaker's reservation rule (pure): may one more incident run, or must it be held?

A burst of alerts (a mass phishing wave, a misfiring detection, a compromised producer with
``Incident.Submit``) must not reset hundreds of passwords before a person looks. Before intake
creates an incident that would run on its own (auto or dry-run mode), it reserves a slot:

- the breaker keeps every reservation of the last STORM_WINDOW_MINUTES in ONE table row, and a
  reservation is an ETag-conditional write of that row (shared/adapters/ledger.py), so no two
  intakes can take the last slot: 50 concurrent intakes against a threshold of 10 get exactly
  10 slots;
- when a reservation finds the window full, the breaker **trips** and stays tripped (the row
  says so) until an operator resets it (``responder storm reset`` / ``POST /api/storm/reset``,
  recorded with who did it): every new incident is held meanwhile;
- a per-source quota (STORM_SOURCE_QUOTA, 0 = none): one source (``http``, ``defender-stream``,
  ...) may take at most that many slots of a window; past it the incident is held, the breaker
  does not trip.

The row format is compact so a large threshold fits one table property: reservations are
``<epoch seconds base 36><source code>`` joined by ``;``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

from .model import SOURCES
from .timestamps import iso

__all__ = ["Reservation", "StormState", "decide_reservation", "reset_state"]

_CODES = {source: str(index) for index, source in enumerate(SOURCES)}
_SOURCES = {code: source for source, code in _CODES.items()}


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


@dataclass(frozen=True)
class StormState:
    """The breaker row: recent reservations (epoch seconds, source) and the latch."""

    reservations: tuple[tuple[int, str], ...] = ()
    tripped: bool = False
    tripped_at: str = ""
    reason: str = ""
    reset_by: dict[str, str] = field(default_factory=dict)
    reset_at: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> "StormState":
        if not row:
            return cls()
        reservations = []
        for item in str(row.get("reservations") or "").split(";"):
            if len(item) >= 2 and item[-1] in _SOURCES:
                try:
                    reservations.append((int(item[:-1], 36), _SOURCES[item[-1]]))
                except ValueError:
                    continue
        return cls(reservations=tuple(reservations), tripped=bool(row.get("tripped")),
                   tripped_at=str(row.get("tripped_at") or ""), reason=str(row.get("trip_reason") or ""),
                   reset_by={"object_id": str(row.get("reset_by_oid") or ""), "upn": str(row.get("reset_by_upn") or "")}
                   if row.get("reset_by_oid") else {},
                   reset_at=str(row.get("reset_at") or ""))

    def to_row(self) -> dict[str, Any]:
        return {
            "reservations": ";".join(f"{_b36(t)}{_CODES.get(s, _CODES['manual'])}" for t, s in self.reservations),
            "tripped": self.tripped,
            "tripped_at": self.tripped_at,
            "trip_reason": self.reason[:500],
            "reset_by_oid": self.reset_by.get("object_id", ""),
            "reset_by_upn": self.reset_by.get("upn", ""),
            "reset_at": self.reset_at,
        }

    def view(self, now: datetime, window_minutes: int, threshold: int) -> dict[str, Any]:
        """What ``responder storm status`` and ``GET /api/storm`` show."""
        recent = _recent(self.reservations, now, window_minutes)
        by_source: dict[str, int] = {}
        for _, source in recent:
            by_source[source] = by_source.get(source, 0) + 1
        out: dict[str, Any] = {"tripped": self.tripped, "window_minutes": window_minutes, "threshold": threshold,
                               "incidents_in_window": len(recent), "by_source": by_source}
        if self.tripped:
            out.update(tripped_at=self.tripped_at, reason=self.reason)
        if self.reset_by:
            out.update(last_reset_by=self.reset_by, last_reset_at=self.reset_at)
        return out


@dataclass(frozen=True)
class Reservation:
    """The answer for one intake: ``granted``, or why not; ``state`` is the row to write
    (None: nothing to write); ``tripped_now`` for the one reservation that tripped the breaker."""

    granted: bool
    reason: str = ""
    state: StormState | None = None
    tripped_now: bool = False


def _recent(reservations: tuple[tuple[int, str], ...], now: datetime, window_minutes: int) -> list[tuple[int, str]]:
    cutoff = int(now.timestamp()) - window_minutes * 60
    return [r for r in reservations if r[0] > cutoff]


def decide_reservation(state: StormState, now: datetime, *, window_minutes: int, threshold: int, source: str,
                       source_quota: int) -> Reservation:
    """May one more incident from ``source`` run now?"""
    if state.tripped:
        return Reservation(False, f"storm breaker tripped at {state.tripped_at} ({state.reason}); it stays tripped "
                                  "until an operator resets it (responder storm reset)")
    recent = tuple(_recent(state.reservations, now, window_minutes))
    if len(recent) >= threshold:
        reason = (f"storm breaker: {len(recent)} new incidents within {window_minutes} min "
                  f"(threshold {threshold})")
        return Reservation(False, reason, replace(state, reservations=recent, tripped=True, tripped_at=iso(now),
                                                   reason=reason), tripped_now=True)
    from_source = sum(1 for _, s in recent if s == source)
    if source_quota and from_source >= source_quota:
        return Reservation(False, f"per-source quota: {from_source} new incidents from {source} within "
                                  f"{window_minutes} min (STORM_SOURCE_QUOTA {source_quota})")
    return Reservation(True, state=replace(state, reservations=recent + ((int(now.timestamp()), source),)))


def reset_state(state: StormState, by: dict[str, str], now: datetime) -> StormState:
    """The breaker reset by an operator: untripped, the window emptied, who and when kept."""
    return StormState(reservations=(), tripped=False, reset_by=dict(by), reset_at=iso(now))
