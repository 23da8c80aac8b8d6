"""Secure Score day records and regression detection (pure: no I/O).

``parse_score(obj)`` turns one Graph ``secureScore`` object into a compact :class:`DayRecord`:
the day (yyyy-mm-dd, UTC, from ``createdDateTime`` or else the ``{tenant}_{date}`` id),
current/max score, percentage, licensed/active user counts, the comparative averages as
``{basis: averageScore}`` and the per-control scores as ``{controlName: score}``. It is
lenient with what live tenants send: numbers as strings (``"count": "4"``, ``on: "true"``),
PascalCase keys in ``averageComparativeScores``, missing or null fields, 7-digit fractions.

The control map is stored as JSON in table properties of at most ``CHUNK_CHARS`` characters
each (``controls``, ``controls_1``, ``controls_2`` ...), so a long control list never hits the
32K-character limit of one property. Beyond ``MAX_CONTROL_CHUNKS`` chunks (a list far longer
than any tenant has today) the controls with the lowest scores are dropped and the record
says so (``controls_total`` > ``controls_kept``).

``detect_regressions(previous, day, min_drop_points)`` compares two consecutive days: a drop
of more than ``min_drop_points`` in the total, or any control whose score fell, is a
:class:`Finding` listing the controls that regressed with before/after/delta.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable, Mapping

logger = logging.getLogger(__name__)

CHUNK_CHARS = 28_000  # one table string property holds 32K UTF-16 characters
MAX_CONTROL_CHUNKS = 12  # 12 x 28K chars stays well inside the 1 MiB entity limit
EPSILON = 1e-6

_DATE_IN_ID = re.compile(r"_(\d{4}-\d{2}-\d{2})$")


class ScoreParseError(ValueError):
    """A secureScore object without a usable day or score."""


def _number(value: Any, default: float | None = None) -> float | None:
    """A finite float from a number or a numeric string; ``default`` otherwise."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return default
    else:
        return default
    return number if math.isfinite(number) else default


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]``, falling back to a case-insensitive match (live data mixes cases)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _round(value: float) -> float:
    return round(value, 2)


def _day_of(obj: Mapping[str, Any]) -> str:
    created = _get(obj, "createdDateTime")
    if isinstance(created, str) and len(created) >= 10:
        try:
            return date.fromisoformat(created[:10]).isoformat()
        except ValueError:
            pass
    match = _DATE_IN_ID.search(str(_get(obj, "id") or ""))
    if match:
        try:
            return date.fromisoformat(match.group(1)).isoformat()
        except ValueError:
            pass
    raise ScoreParseError("secureScore object has neither a createdDateTime nor an id ending in _yyyy-mm-dd")


@dataclass(frozen=True)
class DayRecord:
    """One day of Secure Score, compact enough for one table row."""

    date: str
    current: float
    max: float
    percentage: float | None
    licensed_users: int | None = None
    active_users: int | None = None
    averages: dict[str, float] = field(default_factory=dict)
    controls: dict[str, float] = field(default_factory=dict)
    controls_total: int = 0
    created: str = ""
    tenant_id: str = ""

    @property
    def controls_truncated(self) -> bool:
        return self.controls_total > len(self.controls)

    def summary(self) -> dict[str, Any]:
        """The day without its control map (for trends and API lists)."""
        return {
            "date": self.date,
            "current": self.current,
            "max": self.max,
            "percentage": self.percentage,
            "licensed_users": self.licensed_users,
            "active_users": self.active_users,
            "averages": dict(self.averages),
            "controls_count": self.controls_total,
        }

    def to_entity(self) -> dict[str, Any]:
        """Table properties (without PartitionKey/RowKey)."""
        entity: dict[str, Any] = {
            "day": self.date,
            "current": self.current,
            "max": self.max,
            "percentage": self.percentage if self.percentage is not None else -1.0,
            "licensed_users": self.licensed_users if self.licensed_users is not None else -1,
            "active_users": self.active_users if self.active_users is not None else -1,
            "averages": json.dumps(self.averages, separators=(",", ":")),
            "created": self.created,
            "tenant_id": self.tenant_id,
        }
        chunks, kept = encode_controls(self.controls)
        entity.update(chunks)
        entity["controls_chunks"] = len(chunks)
        entity["controls_total"] = self.controls_total
        entity["controls_kept"] = kept
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> "DayRecord":
        pct = _number(entity.get("percentage"))
        licensed = _int(entity.get("licensed_users"))
        active = _int(entity.get("active_users"))
        try:
            averages = json.loads(entity.get("averages") or "{}")
        except ValueError:
            averages = {}
        controls = decode_controls(entity)
        return cls(
            date=str(entity.get("day") or entity.get("RowKey")),
            current=_number(entity.get("current")) or 0.0,
            max=_number(entity.get("max")) or 0.0,
            percentage=None if pct is None or pct < 0 else pct,
            licensed_users=None if licensed is None or licensed < 0 else licensed,
            active_users=None if active is None or active < 0 else active,
            averages=averages if isinstance(averages, dict) else {},
            controls=controls,
            controls_total=int(_number(entity.get("controls_total"), len(controls)) or 0),
            created=str(entity.get("created") or ""),
            tenant_id=str(entity.get("tenant_id") or ""),
        )


def parse_score(obj: Mapping[str, Any]) -> DayRecord:
    """One Graph secureScore object -> a DayRecord (raises ScoreParseError if unusable)."""
    if not isinstance(obj, Mapping):
        raise ScoreParseError(f"secureScore must be an object, got {type(obj).__name__}")
    day = _day_of(obj)
    current = _number(_get(obj, "currentScore"))
    if current is None:
        raise ScoreParseError(f"secureScore for {day} has no numeric currentScore")
    maximum = _number(_get(obj, "maxScore"), 0.0) or 0.0
    percentage = _round(100.0 * current / maximum) if maximum > 0 else None

    averages: dict[str, float] = {}
    for entry in _get(obj, "averageComparativeScores") or []:
        if not isinstance(entry, Mapping):
            continue
        basis = _get(entry, "basis")
        score = _number(_get(entry, "averageScore"))
        if isinstance(basis, str) and basis and score is not None:
            averages[basis] = _round(score)

    controls: dict[str, float] = {}
    for entry in _get(obj, "controlScores") or []:
        if not isinstance(entry, Mapping):
            continue
        name = _get(entry, "controlName")
        score = _number(_get(entry, "score"))
        if isinstance(name, str) and name and score is not None:
            # The same control twice (seen when providers aggregate): keep the higher score.
            controls[name] = max(_round(score), controls.get(name, -math.inf))
    created = _get(obj, "createdDateTime")
    return DayRecord(
        date=day,
        current=_round(current),
        max=_round(maximum),
        percentage=percentage,
        licensed_users=_int(_get(obj, "licensedUserCount")),
        active_users=_int(_get(obj, "activeUserCount")),
        averages=averages,
        controls=controls,
        controls_total=len(controls),
        created=created if isinstance(created, str) else "",
        tenant_id=str(_get(obj, "azureTenantId") or ""),
    )


def parse_page(page: Any) -> tuple[list[DayRecord], list[str]]:
    """Parse a list (or a ``{"value": [...]}`` page) of secureScores: one record per day,
    oldest first, plus a reason for each object skipped. When a day appears twice the
    object created last wins."""
    items = page.get("value", []) if isinstance(page, Mapping) else (page or [])
    by_day: dict[str, DayRecord] = {}
    skipped: list[str] = []
    for index, obj in enumerate(items):
        try:
            record = parse_score(obj)
        except ScoreParseError as exc:
            skipped.append(f"item {index}: {exc}")
            continue
        seen = by_day.get(record.date)
        if seen is None or record.created >= seen.created:
            by_day[record.date] = record
    return [by_day[d] for d in sorted(by_day)], skipped


# -- compact control storage ------------------------------------------------------------------


def _chunk_name(index: int) -> str:
    return "controls" if index == 0 else f"controls_{index}"


def encode_controls(
    controls: Mapping[str, float], chunk_chars: int = CHUNK_CHARS, max_chunks: int = MAX_CONTROL_CHUNKS
) -> tuple[dict[str, str], int]:
    """``{controlName: score}`` -> ({property: json-chunk}, number of controls kept).

    Each chunk is a complete JSON object (so each decodes on its own). If the controls need
    more than ``max_chunks`` chunks, the lowest-scoring controls are dropped (highest first
    are kept: they are the ones whose fall matters most)."""
    ordered = sorted(controls.items(), key=lambda kv: (-kv[1], kv[0]))
    chunks: list[str] = []
    current: list[str] = []
    size = 2
    kept = 0
    for name, score in ordered:
        item = f"{json.dumps(name)}:{json.dumps(score)}"
        extra = len(item) + (1 if current else 0)
        if current and size + extra > chunk_chars:
            chunks.append("{" + ",".join(current) + "}")
            current, size = [], 2
            extra = len(item)
        if len(chunks) >= max_chunks or 2 + len(item) > chunk_chars:
            break
        current.append(item)
        size += extra
        kept += 1
    if current and len(chunks) < max_chunks:
        chunks.append("{" + ",".join(current) + "}")
    if not chunks:
        chunks.append("{}")
    if kept < len(ordered):
        logger.warning("Secure Score control list too long: kept %d of %d controls (highest scores)", kept, len(ordered))
    return {_chunk_name(i): text for i, text in enumerate(chunks)}, kept


def decode_controls(entity: Mapping[str, Any]) -> dict[str, float]:
    count = _int(entity.get("controls_chunks")) or 1
    controls: dict[str, float] = {}
    for index in range(count):
        text = entity.get(_chunk_name(index))
        if not text:
            continue
        try:
            part = json.loads(text)
        except ValueError:
            logger.warning("Secure Score row %s: control chunk %d is not JSON; ignored", entity.get("RowKey"), index)
            continue
        if isinstance(part, dict):
            for name, score in part.items():
                number = _number(score)
                if number is not None:
                    controls[name] = number
    return controls


# -- regressions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlChange:
    control: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return _round(self.after - self.before)

    def to_dict(self) -> dict[str, Any]:
        return {"control": self.control, "before": self.before, "after": self.after, "delta": self.delta}


@dataclass(frozen=True)
class Finding:
    """A regression between two days."""

    date: str
    previous_date: str
    previous_score: float
    score: float
    previous_percentage: float | None
    percentage: float | None
    min_drop_points: float
    controls: tuple[ControlChange, ...] = ()

    @property
    def delta(self) -> float:
        return _round(self.score - self.previous_score)

    @property
    def score_dropped(self) -> bool:
        return -self.delta > self.min_drop_points + EPSILON

    @property
    def reasons(self) -> list[str]:
        out = []
        if self.score_dropped:
            out.append(f"score fell {-self.delta:g} points (more than {self.min_drop_points:g})")
        if self.controls:
            out.append(f"{len(self.controls)} control(s) fell")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "previous_date": self.previous_date,
            "previous_score": self.previous_score,
            "score": self.score,
            "delta": self.delta,
            "previous_percentage": self.previous_percentage,
            "percentage": self.percentage,
            "min_drop_points": self.min_drop_points,
            "reasons": self.reasons,
            "controls": [c.to_dict() for c in self.controls],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Finding":
        return cls(
            date=str(data["date"]),
            previous_date=str(data["previous_date"]),
            previous_score=float(data["previous_score"]),
            score=float(data["score"]),
            previous_percentage=_number(data.get("previous_percentage")),
            percentage=_number(data.get("percentage")),
            min_drop_points=float(data.get("min_drop_points", 0.0)),
            controls=tuple(
                ControlChange(str(c["control"]), float(c["before"]), float(c["after"])) for c in data.get("controls", [])
            ),
        )


def control_changes(previous: DayRecord, day: DayRecord) -> list[ControlChange]:
    """Every control present on both days whose score changed, biggest fall first.
    (A control present on one day only was added or retired by Microsoft: not a change.)"""
    changes = [
        ControlChange(name, previous.controls[name], score)
        for name, score in day.controls.items()
        if name in previous.controls and abs(score - previous.controls[name]) > EPSILON
    ]
    changes.sort(key=lambda c: (c.delta, c.control))
    return changes


def detect_regressions(previous: DayRecord | None, day: DayRecord, min_drop_points: float) -> Finding | None:
    """A Finding when ``day`` dropped more than ``min_drop_points`` below ``previous`` or any
    control's score fell; None otherwise (including an equal or better day)."""
    if previous is None or previous.date >= day.date:
        return None
    fell = tuple(c for c in control_changes(previous, day) if c.delta < 0)
    finding = Finding(
        date=day.date,
        previous_date=previous.date,
        previous_score=previous.current,
        score=day.current,
        previous_percentage=previous.percentage,
        percentage=day.percentage,
        min_drop_points=float(min_drop_points),
        controls=fell,
    )
    if finding.score_dropped or fell:
        return finding
    return None


def regressions_between(days: Iterable[DayRecord], min_drop_points: float) -> list[Finding]:
    """Findings for each consecutive pair in ``days`` (oldest first)."""
    out: list[Finding] = []
    previous: DayRecord | None = None
    for day in days:
        finding = detect_regressions(previous, day, min_drop_points)
        if finding:
            out.append(finding)
        previous = day
    return out


def finding_text(finding: Finding) -> str:
    """A plain-text description for the notification mail (no HTML, no secrets)."""

    def pct(value: float | None) -> str:
        return f"{value:.1f}%" if value is not None else "n/a"

    lines = [
        f"Microsoft Secure Score regression on {finding.date} (compared with {finding.previous_date}).",
        f"Score: {finding.previous_score:g} -> {finding.score:g} ({finding.delta:+g} points; "
        f"{pct(finding.previous_percentage)} -> {pct(finding.percentage)}).",
        "Why: " + "; ".join(finding.reasons) + ".",
    ]
    if finding.controls:
        lines += ["", "Controls that regressed:"]
        width = max(len(c.control) for c in finding.controls)
        for change in finding.controls:
            lines.append(f"  {change.control:<{width}}  {change.before:g} -> {change.after:g}  ({change.delta:+g})")
    lines += ["", "Review the controls in the Microsoft Defender portal: Exposure management > Secure Score."]
    return "\n".join(lines)
