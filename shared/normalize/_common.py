"""Building blocks shared by every alert normaliser.

Result types (``ParseResult``, ``Rejected``, ``PendingDefender``), the risk ladder and the
threshold rule, the severity map, tolerant timestamp parsing, payload loading (envelope /
page / array / single object / JSON Lines) and the per-payload de-duplication of requests.

Pure: no I/O, no clock except the ``now`` the caller passes in (or ``datetime.now`` when it
does not), no logging. Every reason and excerpt built here is safe to log: values from the
payload only ever appear through ``shared.validation.excerpt`` (a short ``repr``) or after
control characters have been stripped and the text truncated.

Risk ladder and threshold (one rule for every automated source)
-------------------------------------------------------------
* Levels are ordered ``none < low < medium < high``. ``unknown`` sits outside the ladder.
* A signal passes ``min_risk_level`` when its level is at or above it. A level of ``none``
  never passes (no risk is no compromise, whatever the threshold). ``unknown`` (Entra
  ``hidden`` / ``unknownFutureValue``, a missing or unrecognised severity) passes only when
  the threshold is ``none``, i.e. when the caller explicitly asked for "any risk at all".
* Entra ``confirmedCompromised`` always counts as ``high`` (so it passes every threshold),
  whatever riskLevel the record carries (``hidden`` included).
* Manual / HTTP requests are an operator's explicit decision and are not thresholded.

Severity map (Defender XDR streaming and Graph alerts_v2, case-insensitive)
---------------------------------------------------------------------------
``High``→high, ``Medium``→medium, ``Low``→low, ``Informational``→low (an informational
alert is at most a weak signal: it only triggers remediation when the caller lowers the
threshold to ``low``), ``Unknown`` / ``unknownFutureValue`` / missing / anything else →
unknown.

De-duplication
--------------
Within one payload a user appears once. Requests with an object id are grouped by it;
a UPN-only request joins the group whose requests carry that UPN (when exactly one object
id is known for it), otherwise UPN-only requests group by UPN. A merged request keeps the
highest risk (``none < unknown < low < medium < high``), the source and reason of the
strongest signal (plus "(+N more signals)"), every alert id (first 100, in order) and the
earliest ``detected_at``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ..model import IncidentRequest
from ..timestamps import iso_exact, parse_timestamp
from ..validation import ValidationError, excerpt, normalize_guid, normalize_upn

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
"""A whole payload larger than this is refused with PayloadError (Event Hub batches are far smaller)."""
MAX_RECORD_BYTES = 64 * 1024
"""One stream record, riskyUser or manual request larger than this (compact JSON) is rejected."""
MAX_GRAPH_ALERT_BYTES = 1024 * 1024
"""Graph alerts_v2 objects carry their whole evidence list and legitimately exceed 64 KiB."""

THRESHOLDS = ("none", "low", "medium", "high")
_LADDER = {"none": 0, "low": 1, "medium": 2, "high": 3}
_MERGE_RANK = {"none": 0, "unknown": 1, "low": 2, "medium": 3, "high": 4}
_SEVERITY = {
    "high": "high",
    "medium": "medium",
    "low": "low",
    "informational": "low",
    "unknown": "unknown",
    "unknownfuturevalue": "unknown",
}
_MAX_ALERT_IDS = 100
_MAX_ALERT_ID_LEN = 200


class PayloadError(ValueError):
    """The payload as a whole cannot be read (not JSON / JSON Lines, not UTF-8, too large, empty).

    The message is one line and safe to log.
    """


class UnknownSourceError(PayloadError):
    """``detect_source`` could not tell which alert shape a payload is."""


class RecordRejected(Exception):
    """Internal: this record cannot be used (bad shape or identifier). Message is safe to log."""


class RecordIgnored(Exception):
    """Internal: this record is valid but does not indicate a compromised user."""


@dataclass(frozen=True)
class Rejected:
    """A record that was rejected (unusable) or ignored (valid, but not a compromise).

    ``index`` is the record's 0-based position in the flattened payload (envelope records,
    page values, array items and JSON Lines lines, counted in order; a blank JSON Lines line
    is not counted); ``None`` when the problem concerns the payload's envelope itself.
    ``reason`` is one line; ``excerpt`` describes the record (category / type / keys) in at
    most 100 characters and never carries a full value from it.
    """

    index: int | None
    reason: str
    excerpt: str


@dataclass(frozen=True)
class PendingDefender:
    """One half of a Defender XDR alert waiting for the other half.

    ``kind`` is ``"info"`` (an AlertInfo row whose batch named no user for the alert) or
    ``"evidence"`` (a User/Mailbox AlertEvidence row whose severity is not known yet).
    ``record`` is the record as received (already size-checked: at most 64 KiB as JSON);
    persist it (``to_json``) keyed by ``alert_id`` and pass it back to ``join_defender``
    with the other half when that arrives.
    """

    alert_id: str
    kind: str
    record: dict[str, Any] = field(compare=False, hash=False)

    def to_json(self) -> str:
        return json.dumps(self.record, separators=(",", ":"), ensure_ascii=False)


@dataclass
class ParseResult:
    """What one payload produced.

    ``requests``: de-duplicated incident requests to act on. ``rejected``: records that
    could not be used (malformed, unknown shape, invalid identifier, oversized).
    ``ignored``: valid records that do not indicate a compromised user (remediated or
    dismissed, below the threshold, evidence that names no user, system accounts).
    ``pending``: Defender halves to persist until their other half arrives.
    """

    requests: list[IncidentRequest] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)
    pending: list[PendingDefender] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts, for one log line."""
        return {
            "requests": len(self.requests),
            "rejected": len(self.rejected),
            "ignored": len(self.ignored),
            "pending": len(self.pending),
        }


@dataclass(frozen=True)
class Context:
    min_risk_level: str
    now: datetime
    tenant_id: str = ""  # TENANT_ID: stream records from any other tenant are rejected ("" = not checked)


def make_context(min_risk_level: object, now: object, tenant_id: str = "") -> Context:
    """Validate the caller's arguments (ValueError / TypeError: a programming error, not bad input)."""
    minimum = check_threshold_arg(min_risk_level)
    if now is None:
        moment = datetime.now(timezone.utc)
    elif isinstance(now, datetime):
        moment = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    else:
        raise TypeError(f"now must be a datetime or None, got {type(now).__name__}")
    return Context(minimum, moment.astimezone(timezone.utc), tenant_id.strip().lower())


# --------------------------------------------------------------------------- risk


def check_threshold_arg(min_risk_level: object) -> str:
    if min_risk_level not in THRESHOLDS:
        raise ValueError(f"min_risk_level must be one of {', '.join(THRESHOLDS)}: {excerpt(min_risk_level)}")
    return str(min_risk_level)


def meets_threshold(level: str, minimum: str) -> bool:
    """The threshold rule described in the module docstring."""
    if level == "none":
        return False
    if level == "unknown":
        return minimum == "none"
    return _LADDER.get(level, -1) >= _LADDER[minimum]


def map_severity(value: object) -> str:
    """Defender / Graph alert severity → IncidentRequest risk level (see module docstring)."""
    if not isinstance(value, str):
        return "unknown"
    return _SEVERITY.get(value.strip().lower(), "unknown")


# --------------------------------------------------------------------------- text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(value: object, limit: int = 120) -> str:
    """A one-line, length-limited version of a free-text field (titles, risk types)."""
    if not isinstance(value, str):
        return ""
    text = " ".join(_CONTROL.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(record: object) -> str:
    """Short excerpt for a Rejected entry: names the record's type, never its values in full."""
    if isinstance(record, dict):
        parts = []
        for key in ("category", "@odata.type", "schema"):
            value = record.get(key)
            if isinstance(value, str) and value:
                parts.append(f"{key}={clean_text(value, 48)}")
        keys = [clean_text(str(k), 24) for k in list(record)[:8]]
        parts.append("keys=" + ",".join(keys) + (",..." if len(record) > 8 else ""))
        text = " ".join(parts)
    elif isinstance(record, str):
        text = "text " + excerpt(record, 40)
    elif record is None:
        text = "JSON null"
    else:
        text = f"JSON {json_type(record)} " + excerpt(record, 40)
    return text if len(text) <= 100 else text[:97] + "..."


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def alert_id_of(value: object, what: str) -> str:
    """A usable alert id (non-empty string of at most 200 characters) or RecordRejected."""
    if not isinstance(value, str) or not value.strip():
        raise RecordRejected(f"{what} is missing or not a string")
    value = value.strip()
    if len(value) > _MAX_ALERT_ID_LEN or _CONTROL.search(value):
        raise RecordRejected(f"{what} is not a usable alert id: {excerpt(value)}")
    return value


# --------------------------------------------------------------------------- identities


def _present(value: object) -> bool:
    return not (value is None or (isinstance(value, str) and not value.strip()))


def user_identity(raw_id: object, raw_upn: object, id_field: str, upn_field: str) -> tuple[str | None, str | None]:
    """Validate an (object id, UPN) pair. Absent values (null / "") give None.

    A present but invalid value rejects the record: an invalid id or UPN next to a valid one
    is not trusted either (it may be an injection attempt).
    """
    user_id = upn = None
    if _present(raw_id):
        try:
            user_id = normalize_guid(raw_id.strip() if isinstance(raw_id, str) else raw_id, id_field)
        except ValidationError as exc:
            raise RecordRejected(str(exc)) from None
    if _present(raw_upn):
        try:
            upn = normalize_upn(raw_upn, upn_field)
        except ValidationError as exc:
            raise RecordRejected(str(exc)) from None
    return user_id, upn


def is_sid(value: object) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"S-1-[0-9]+(?:-[0-9]+)*", value.strip(), re.ASCII))


# --------------------------------------------------------------------------- time

_ISO_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,12}))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII | re.IGNORECASE,
)
_US_RE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})"
    r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,12}))?)?\s*([AP]M)?)?"
    r"\s*(Z|UTC|GMT)?",
    re.ASCII | re.IGNORECASE,
)
_MIN_YEAR = 1971  # Graph uses 0001-01-01T00:00:00Z as "no value"


def parse_time(value: object) -> datetime | None:
    """Parse the timestamp formats the alert sources emit into an aware UTC datetime.

    ISO 8601 with ``Z`` or an offset, a one-digit hour (``2022-09-09T9:59:27.958Z``) and any
    number of fractional digits (Graph and Defender send 7); US-locale text from Entra
    diagnostic envelopes (``8/22/2022 6:07:16 PM``, 12- or 24-hour). A value without a zone
    is UTC (every source writes UTC). Returns None for anything else, and for years before
    1971 (placeholders such as ``0001-01-01T00:00:00Z``).
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    try:
        match = _ISO_RE.fullmatch(text)
        if match:
            year, month, day, hour, minute, second, frac, zone = match.groups()
            parsed = _build(int(year), int(month), int(day), hour, minute, second, frac, None)
            return _apply_zone(parsed, zone)
        match = _US_RE.fullmatch(text)
        if match:
            month, day, year, hour, minute, second, frac, ampm, _zone = match.groups()
            parsed = _build(int(year), int(month), int(day), hour, minute, second, frac, ampm)
            return _apply_zone(parsed, None)
    except (ValueError, OverflowError):
        return None
    return None


def _build(year: int, month: int, day: int, hour: str | None, minute: str | None,
           second: str | None, frac: str | None, ampm: str | None) -> datetime:
    h = int(hour) if hour is not None else 0
    if ampm:
        if not 1 <= h <= 12:
            raise ValueError("12-hour clock out of range")
        h = h % 12 + (12 if ampm.upper() == "PM" else 0)
    micro = int((frac + "000000")[:6]) if frac else 0
    return datetime(year, month, day, h, int(minute or 0), int(second or 0), micro)


def _apply_zone(parsed: datetime, zone: str | None) -> datetime | None:
    if zone and zone.upper() not in ("Z", "UTC", "GMT"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError("offset out of range")
        parsed = parsed.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    else:
        parsed = parsed.replace(tzinfo=timezone.utc)
    result = parsed.astimezone(timezone.utc)
    return result if result.year >= _MIN_YEAR else None


def first_time(ctx: Context, *candidates: object) -> str:
    """ISO 8601 UTC (Z) of the first candidate that parses; ``ctx.now`` if none does."""
    for candidate in candidates:
        parsed = parse_time(candidate)
        if parsed is not None:
            return iso_exact(parsed)
    return iso_exact(ctx.now)


# --------------------------------------------------------------------------- payload loading


@dataclass
class RawItem:
    """One record of a payload, before classification."""

    index: int | None = None  # assigned by load_items; None for envelope-level problems
    value: Any = None
    error: str | None = None  # set when the item itself could not be read
    size: int | None = None  # bytes of its JSON text when known (JSON Lines)
    description: str = ""
    envelope: bool = False  # the problem is the envelope, not a record


def decode_payload(payload: bytes | bytearray | memoryview | str) -> str:
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if isinstance(payload, bytes):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES} byte limit")
        try:
            text = payload.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PayloadError("payload is not UTF-8 text (binary?)") from None
    elif isinstance(payload, str):
        if len(payload) > MAX_PAYLOAD_BYTES or len(payload.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"payload is over the {MAX_PAYLOAD_BYTES} byte limit")
        text = payload[1:] if payload.startswith("\ufeff") else payload
    else:
        raise PayloadError(f"payload must be bytes or str, got {type(payload).__name__}")
    if not text.strip():
        raise PayloadError("payload is empty")
    if "\x00" in text:
        raise PayloadError("payload contains NUL bytes (binary?)")
    return text


def _loads(text: str) -> Any:
    # ValueError covers JSONDecodeError and Python's int-digit limit; deep nesting → RecursionError.
    return json.loads(text)


def load_items(payload: bytes | bytearray | memoryview | str) -> list[RawItem]:
    """Decode a payload into a flat list of records (see ``Rejected.index`` for numbering)."""
    text = decode_payload(payload)
    try:
        whole = _loads(text)
    except (ValueError, RecursionError) as exc:
        return _load_lines(text, exc)
    items: list[RawItem] = []
    _expand(whole, items, depth=0, size=None)
    return _number(items)


def _number(items: list[RawItem]) -> list[RawItem]:
    counter = 0
    for item in items:
        if item.envelope:
            item.index = None
        else:
            item.index = counter
            counter += 1
    return items


def _load_lines(text: str, whole_error: BaseException) -> list[RawItem]:
    items: list[RawItem] = []
    parsed_any = False
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        try:
            value = _loads(line)
        except (ValueError, RecursionError) as exc:
            what = "nesting too deep" if isinstance(exc, RecursionError) else exc.__class__.__name__
            items.append(RawItem(error=f"JSON Lines line is not JSON ({what})", description="text " + excerpt(line, 40)))
            continue
        parsed_any = True
        _expand(value, items, depth=0, size=len(line.encode("utf-8", "surrogatepass")))
    if not parsed_any:
        if isinstance(whole_error, json.JSONDecodeError):
            detail = f"{whole_error.msg} at line {whole_error.lineno} column {whole_error.colno}"
        elif isinstance(whole_error, RecursionError):
            detail = "nesting too deep"
        else:
            detail = whole_error.__class__.__name__
        raise PayloadError(f"payload is neither JSON nor JSON Lines: {detail}")
    return _number(items)


def is_envelope(value: dict) -> bool:
    return "records" in value and all(k == "records" or str(k).startswith("@") for k in value)


def is_page(value: dict) -> bool:
    return "value" in value and all(k == "value" or str(k).startswith("@") for k in value)


def _expand(value: Any, items: list[RawItem], depth: int, size: int | None) -> None:
    """Flatten envelopes ({"records": [...]}), OData pages ({"value": [...]}) and arrays.

    One level of nesting is flattened (an array of envelopes, as an Event Hub batch trigger
    delivers them); anything deeper is passed on as a record and rejected by classification.
    """
    if depth < 2 and isinstance(value, dict) and (is_envelope(value) or is_page(value)):
        key = "records" if is_envelope(value) else "value"
        inner = value[key]
        if not isinstance(inner, list):
            items.append(RawItem(error=f"envelope '{key}' must be a JSON array, got {json_type(inner)}",
                                 description=describe(value), envelope=True))
            return
        for element in inner:
            _expand(element, items, depth + 2, None)
        return
    if depth < 1 and isinstance(value, list):
        for element in value:
            _expand(element, items, depth + 1, None)
        return
    items.append(RawItem(value=value, size=size))


def record_size(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError, TypeError):
        return MAX_GRAPH_ALERT_BYTES + 1


# --------------------------------------------------------------------------- collecting results


class Collector:
    """Accumulates candidates, rejections, ignores and pending halves for one payload."""

    def __init__(self) -> None:
        self.candidates: list[IncidentRequest] = []
        self.rejected: list[Rejected] = []
        self.ignored: list[Rejected] = []
        self.pending: list[PendingDefender] = []

    def reject(self, index: int | None, reason: str, record: object) -> None:
        self.rejected.append(Rejected(index, reason, describe(record)))

    def ignore(self, index: int | None, reason: str, record: object) -> None:
        self.ignored.append(Rejected(index, reason, describe(record)))

    def add(self, index: int | None, record: object, **kwargs: Any) -> None:
        ids = [a for a in kwargs.get("alert_ids", ()) if isinstance(a, str) and a]
        kwargs["alert_ids"] = tuple(dict.fromkeys(ids))[:_MAX_ALERT_IDS]
        reason = kwargs.get("reason", "")
        if len(reason) > 500:
            kwargs["reason"] = reason[:497] + "..."
        try:
            self.candidates.append(IncidentRequest(**kwargs))
        except ValidationError as exc:  # MessageError is a ValidationError
            self.reject(index, str(exc), record)

    def result(self) -> ParseResult:
        return ParseResult(dedupe(self.candidates), self.rejected, self.ignored, self.pending)


def dedupe(candidates: Iterable[IncidentRequest]) -> list[IncidentRequest]:
    """Merge requests for the same user (see module docstring)."""
    candidates = list(candidates)
    groups: list[list[int]] = []
    by_id: dict[str, int] = {}
    ids_by_upn: dict[str, set[int]] = {}
    for pos, cand in enumerate(candidates):
        if cand.user_id is None:
            continue
        group = by_id.get(cand.user_id)
        if group is None:
            group = by_id[cand.user_id] = len(groups)
            groups.append([])
        groups[group].append(pos)
        if cand.user_principal_name:
            ids_by_upn.setdefault(cand.user_principal_name, set()).add(group)
    by_upn: dict[str, int] = {}
    for pos, cand in enumerate(candidates):
        if cand.user_id is not None:
            continue
        upn = str(cand.user_principal_name)
        known = ids_by_upn.get(upn, set())
        if len(known) == 1:
            group = next(iter(known))
        else:
            group = by_upn.get(upn)
            if group is None:
                group = by_upn[upn] = len(groups)
                groups.append([])
        groups[group].append(pos)
    merged = [(min(g), _merge([candidates[p] for p in sorted(g)])) for g in groups if g]
    return [req for _, req in sorted(merged, key=lambda pair: pair[0])]


def _merge(members: list[IncidentRequest]) -> IncidentRequest:
    if len(members) == 1:
        return members[0]
    best = max(members, key=lambda r: _MERGE_RANK.get(r.risk_level, 0))  # first of the highest
    user_id = next((m.user_id for m in members if m.user_id), None)
    upn = best.user_principal_name or next((m.user_principal_name for m in members if m.user_principal_name), None)
    alert_ids = tuple(dict.fromkeys(a for m in members for a in m.alert_ids))[:_MAX_ALERT_IDS]
    detected = min(members, key=lambda r: parse_timestamp(r.detected_at)).detected_at
    extra = len(members) - 1
    suffix = f" (+{extra} more signal{'s' if extra > 1 else ''})"
    reason = best.reason
    if len(reason) + len(suffix) > 500:
        reason = reason[: 497 - len(suffix)] + "..."
    return IncidentRequest(
        user_id=user_id,
        user_principal_name=upn,
        source=best.source,
        risk_level=best.risk_level,
        alert_ids=alert_ids,
        detected_at=detected,
        reason=reason + suffix,
        # an echo of the responder's own action only when every merged signal is one
        risk_detail=members[0].risk_detail if len({m.risk_detail for m in members}) == 1 else "",
    )
