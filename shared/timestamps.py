"""Timestamps, written and read one way everywhere: aware UTC datetimes in, ISO 8601 with a
``Z`` out.

- ``iso(dt)``          milliseconds, e.g. ``2024-05-01T10:00:00.123Z``: every ledger/table
  timestamp (lease expiry, started/finished, recorded_at). Fixed width, so two of them
  compare correctly as strings (leases are compared that way).
- ``iso_seconds(dt)``  whole seconds, e.g. ``2024-05-01T10:00:00Z``: message fields
  (``detected_at`` default, ``enqueued_at``) and OData ``DateTimeOffset`` literals.
- ``iso_exact(dt)``    full precision (microseconds when present): normalised timestamps
  taken from alert payloads, which keep what the source gave.
- ``parse_timestamp(text)`` any ISO 8601 form (``Z`` or an offset, 0-7 fractional digits as
  Graph sends) → aware UTC datetime; ValueError otherwise.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["iso", "iso_exact", "iso_seconds", "parse_timestamp", "utcnow"]

# Python 3.11's fromisoformat reads any number of fractional digits; more than 6 are cut
# to microseconds. It refuses a lowercase "z", which some producers write.
_LOWER_Z = re.compile(r"z$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc)


def iso(dt: datetime) -> str:
    return _utc(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_seconds(dt: datetime) -> str:
    return _utc(dt).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_exact(dt: datetime) -> str:
    return _utc(dt).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from ISO 8601 text; a naive timestamp is taken as UTC.

    Raises ValueError (with no part of the value in the message) when it is not one, or
    when it is out of the representable range once converted to UTC."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("timestamp must be a non-empty string")
    try:
        parsed = datetime.fromisoformat(_LOWER_Z.sub("Z", value.strip()))
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise ValueError("timestamp out of range") from None
