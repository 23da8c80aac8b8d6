"""Shift the timestamps of a captured payload so it reads as if it arrived now.

The samples in localdev/samples/ and tests/fixtures/ are captures with the times they had. Intake
refuses a signal older than LOOKBACK_DAYS (shared/policy.py), so the demo and tests that replay a
capture as a live alert move every ISO 8601 timestamp in it by one offset: the newest becomes
``now - lag``, the order and spacing of the rest stay as captured. Text only: nothing is parsed
beyond the timestamps themselves.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from shared.timestamps import parse_timestamp

__all__ = ["restamp"]

_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?(?:Z|[+-]\d{2}:\d{2})?")


def restamp(payload: bytes, now: datetime | None = None, lag: timedelta = timedelta(minutes=2)) -> bytes:
    text = payload.decode("utf-8")
    found = []
    for match in _STAMP.finditer(text):
        try:
            found.append(parse_timestamp(match.group()))
        except ValueError:
            continue
    if not found:
        return payload
    shift = ((now or datetime.now(timezone.utc)) - lag) - max(found)

    def moved(match: re.Match[str]) -> str:
        try:
            when = parse_timestamp(match.group()) + shift
        except ValueError:
            return match.group()
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return _STAMP.sub(moved, text).encode("utf-8")
