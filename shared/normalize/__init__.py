"""Normalise every alert shape into ``IncidentRequest``s (pure: no I/O, no network, no Azure SDK).

Entry points::

    parse_payload(payload, source="auto", *, min_risk_level="medium", now=None) -> ParseResult
    detect_source(obj) -> str
    join_defender(info_records, evidence_records, *, min_risk_level="medium", now=None) -> ParseResult

Payload containers (any source): an Event Hub envelope ``{"records": [...]}``, a Graph page
``{"value": [...], "@odata.*": ...}``, a JSON array of records (or of envelopes, as an
Event Hub batch trigger delivers them), a single record, or JSON Lines (one record per
line, as a storage-account export writes them).

Error model
-----------
* ``PayloadError`` (a ValueError; one line, safe to log) only when the payload as a whole
  is unreadable: not UTF-8 / binary, empty, larger than 10 MiB, or neither JSON nor JSON
  Lines with at least one JSON line.
* Everything else is per record and never raises: a record that cannot be used goes to
  ``ParseResult.rejected`` with a reason (not an object, wrong envelope, unrecognised shape,
  unknown category, no user, invalid GUID, invalid UPN such as ``x' or 1 eq 1``, more than
  64 KiB, a manual request claiming another source, a record of a different source than
  the one the caller forced); the good records of the same payload still parse.
* Valid records that are not a compromise go to ``ParseResult.ignored`` with a reason.
* Invalid *arguments* (unknown ``source``, ``min_risk_level``, ``now`` not a datetime) are a
  programming error: ValueError / TypeError.

``source`` is ``"auto"`` (each record is classified on its own, so one payload may mix
shapes) or one of SOURCES; when forced, records of any other shape are rejected.
``"manual"`` and ``"http"`` accept only the app's incident-request JSON (``"http"`` is the
default ``source`` for records that do not say). Per-shape mapping decisions are in the
docstrings of entra.py, defender.py, graph.py, manual.py and _common.py (threshold rule,
severity map, de-duplication); detect.py describes recognition.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model import SOURCES, IncidentRequest
from ._common import (
    MAX_GRAPH_ALERT_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_RECORD_BYTES,
    Collector,
    Context,
    ParseResult,
    PayloadError,
    PendingDefender,
    RecordIgnored,
    RecordRejected,
    Rejected,
    UnknownSourceError,
    clean_text,
    load_items,
    make_context,
    map_severity,
    meets_threshold,
    parse_time,
    record_size,
)
from .defender import DefenderBatch, join_defender
from .detect import KIND_SOURCE, classify_record, detect_source
from .entra import map_entra_risk_level, parse_entra_record
from .graph import parse_alert, parse_riskdetection, parse_riskyuser
from .manual import parse_manual_record

__all__ = [
    "parse_payload",
    "detect_source",
    "join_defender",
    "ParseResult",
    "Rejected",
    "PendingDefender",
    "PayloadError",
    "UnknownSourceError",
    "IncidentRequest",
    "map_severity",
    "map_entra_risk_level",
    "meets_threshold",
    "parse_time",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_GRAPH_ALERT_BYTES",
    "SOURCE_CHOICES",
]

SOURCE_CHOICES = ("auto",) + SOURCES


def parse_payload(
    payload: bytes | str,
    source: str = "auto",
    *,
    min_risk_level: str = "medium",
    now: datetime | None = None,
    tenant_id: str = "",
) -> ParseResult:
    """Parse one payload (an Event Hub event body, a Graph response, an HTTP/queue body).

    ``now`` is only used as ``detected_at`` for records that carry no readable timestamp.
    ``tenant_id`` (TENANT_ID): an Entra or Defender stream record must carry this ``tenantId``.
    Raises PayloadError only when the whole payload is unreadable (see module docstring).
    """
    if source not in SOURCE_CHOICES:
        raise ValueError(f"source must be one of {', '.join(SOURCE_CHOICES)}: {source!r}")
    ctx = make_context(min_risk_level, now, tenant_id)
    items = load_items(payload)
    out = Collector()
    defender = DefenderBatch(ctx, out)
    for item in items:
        if item.error is not None:
            out.rejected.append(Rejected(item.index, item.error, item.description))
            continue
        record = item.value
        try:
            _dispatch(item.index, record, item.size, source, ctx, out, defender)
        except RecordRejected as exc:
            out.reject(item.index, str(exc), record)
        except RecordIgnored as exc:
            out.ignore(item.index, str(exc), record)
        except Exception as exc:  # noqa: BLE001 - one bad record must never sink the batch
            out.reject(item.index, f"internal error while parsing record: {exc.__class__.__name__}", record)
    try:
        defender.finish()
    except Exception as exc:  # noqa: BLE001
        out.reject(None, f"internal error while joining Defender records: {exc.__class__.__name__}", None)
    return out.result()


def _check_tenant(record: Any, tenant_id: str) -> None:
    """A stream record names the tenant it is from; only ours is acted on (a shared or
    misrouted Event Hub must not let another tenant's alerts reset our users)."""
    tenant = record.get("tenantId") if isinstance(record, dict) else None
    if not isinstance(tenant, str) or not tenant.strip():
        raise RecordRejected("stream record carries no tenantId (TENANT_ID is set: only its records are accepted)")
    if tenant.strip().lower() != tenant_id:
        raise RecordRejected(f"record is from tenant {clean_text(tenant, 40)}, not TENANT_ID")


def _dispatch(index: int | None, record: Any, size: int | None, source: str, ctx: Context,
              out: Collector, defender: DefenderBatch) -> None:
    if size is None:
        size = record_size(record)
    if size > MAX_GRAPH_ALERT_BYTES:
        raise RecordRejected(f"record is {size} bytes, over the {MAX_GRAPH_ALERT_BYTES} byte limit")
    kind, why = classify_record(record)
    if kind is None:
        raise RecordRejected(why)
    kind_source = KIND_SOURCE[kind]
    if source != "auto":
        expected = "manual" if source in ("manual", "http") else source
        if kind_source != expected:
            raise RecordRejected(f"record is from {kind_source}, not {source}")
    if ctx.tenant_id and (kind.startswith("entra-") or kind.startswith("defender-")):
        _check_tenant(record, ctx.tenant_id)
    limit = MAX_GRAPH_ALERT_BYTES if kind == "graph-alert" else MAX_RECORD_BYTES
    if size > limit:
        raise RecordRejected(f"record is {size} bytes, over the {limit} byte limit")
    if kind == "manual":
        parse_manual_record(index, record, "http" if source == "http" else "manual", out)
    elif kind.startswith("entra-"):
        parse_entra_record(index, record, kind, ctx, out)
    elif kind.startswith("defender-"):
        defender.add(index, record, kind)
    elif kind == "graph-alert":
        parse_alert(index, record, ctx, out)
    elif kind == "graph-riskyuser":
        parse_riskyuser(index, record, ctx, out)
    elif kind == "graph-riskdetection":
        parse_riskdetection(index, record, ctx, out)
    else:  # pragma: no cover - KIND_SOURCE and this switch are kept in step
        raise RecordRejected(f"no parser for {kind}")
