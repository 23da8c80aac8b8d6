"""Timer-trigger schedules: NCRONTAB expressions (and TimeSpan intervals) -> next fire time.

Azure Functions reads ``{second} {minute} {hour} {day} {month} {day-of-week}`` (six fields,
seconds first). croniter handles six-field expressions with ``second_at_beginning=True``.
Two details follow the NCrontab library the real host uses:

* day-of-month and day-of-week are AND-ed (``0 0 0 13 * FRI`` is "Friday the 13th"), unlike
  classic cron's OR; croniter does that with ``day_or=False``.
* a five-field expression is accepted as "second 0" of the classic cron form.

A schedule in TimeSpan form (``"00:05:00"``) means "every interval", as on App Service plans.
All times are UTC (``WEBSITE_TIME_ZONE`` is not supported by this local host).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Optional

from croniter import croniter

from .settings import SettingsError, parse_timespan

__all__ = ["ScheduleError", "Schedule", "parse_schedule", "next_occurrence"]

_TIMESPAN_LIKE = re.compile(r"^\s*-?(\d+\.)?\d{1,2}:\d{1,2}(:\d{1,2}(\.\d+)?)?\s*$")


class ScheduleError(ValueError):
    """The schedule is neither a valid NCRONTAB expression nor a TimeSpan."""


class Schedule:
    """A parsed timer schedule; ``next_after(dt)`` gives the next fire time strictly after dt."""

    def __init__(self, expression: str, *, interval: Optional[float] = None) -> None:
        self.expression = expression
        self.interval = interval
        self._cron: Optional[str] = None
        if interval is None:
            fields = expression.split()
            if len(fields) == 5:
                fields = ["0", *fields]
            if len(fields) != 6:
                raise ScheduleError(
                    f"invalid NCRONTAB expression {expression!r}: expected 6 fields "
                    "'{second} {minute} {hour} {day} {month} {day-of-week}'"
                )
            cron = " ".join(fields)
            try:
                # Constructing (not just is_valid) also catches out-of-range values.
                croniter(cron, datetime(2000, 1, 1, tzinfo=timezone.utc),
                         second_at_beginning=True, day_or=False)
                valid = croniter.is_valid(cron, second_at_beginning=True)
            except (ValueError, KeyError, TypeError) as exc:
                raise ScheduleError(f"invalid NCRONTAB expression {expression!r}: {exc}") from exc
            if not valid:
                raise ScheduleError(f"invalid NCRONTAB expression {expression!r}")
            self._cron = cron

    def next_after(self, moment: datetime) -> datetime:
        """Next occurrence strictly after ``moment`` (naive datetimes are taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        if self.interval is not None:
            return moment + timedelta(seconds=self.interval)
        itr = croniter(self._cron, moment, second_at_beginning=True, day_or=False)
        return itr.get_next(datetime)

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r})"


def parse_schedule(expression: str) -> Schedule:
    """Parse an already %SETTING%-resolved schedule string."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("timer schedule is empty")
    expression = expression.strip()
    if _TIMESPAN_LIKE.match(expression):
        try:
            seconds = parse_timespan(expression)
        except SettingsError as exc:
            raise ScheduleError(str(exc)) from exc
        if seconds <= 0:
            raise ScheduleError(f"timer interval {expression!r} must be positive")
        return Schedule(expression, interval=seconds)
    return Schedule(expression)


def next_occurrence(expression: str, after: datetime) -> datetime:
    """Convenience: the next fire time of ``expression`` strictly after ``after``."""
    return parse_schedule(expression).next_after(after)
