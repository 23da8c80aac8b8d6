"""The app's own incident-request JSON (manual injection on the alerts queue, POST /api/incidents).

Shape: ``IncidentRequest.to_json()`` output, i.e.
``{"schema": "breach-responder/incident-request", "version": 1, "user_id"?,
"user_principal_name"?, "source"?, "risk_level"?, "alert_ids"?, "detected_at"?, "reason"?}``
(one object, an array of them, or JSON Lines).

Mapping decisions
-----------------
* The same rules as ``IncidentRequest.from_json``: ``schema`` may be omitted (ours is
  assumed), ``version`` must be ``1``, unknown fields are rejected, ``risk_level`` defaults
  to ``high``, ids are validated by IncidentRequest. Records are at most 64 KiB.
* ``source`` may only be ``manual`` or ``http``. When the record omits it, it is ``http``
  if the caller parsed with ``source="http"``, else ``manual``. A record that claims an
  automated source (``entra-diagnostics``, ...) is rejected: an operator or an HTTP client
  cannot pass a request off as a stream signal.
* No threshold: a manual / HTTP request is an operator's decision, whatever its risk_level.
"""
from __future__ import annotations

from typing import Any

from ..model import IncidentRequest, MessageError
from ..validation import ValidationError, excerpt
from ._common import Collector, RecordRejected

__all__ = ["parse_manual_record", "MANUAL_SOURCES"]

MANUAL_SOURCES = ("manual", "http")


def parse_manual_record(index: int | None, record: dict[str, Any], default_source: str, out: Collector) -> None:
    schema = record.get("schema", IncidentRequest.SCHEMA)
    if schema != IncidentRequest.SCHEMA:
        raise RecordRejected(f"unexpected schema {excerpt(schema)}, expected {IncidentRequest.SCHEMA!r}")
    version = record.get("version")
    if version != 1 or isinstance(version, bool):
        raise RecordRejected(f"unsupported incident-request version {excerpt(version)} (supported: 1)")
    data = dict(record)
    source = data.get("source")
    if source in (None, ""):
        data["source"] = default_source
    elif source not in MANUAL_SOURCES:
        raise RecordRejected(f"a manual request may not claim source {excerpt(source)} (manual or http)")
    if not isinstance(data.get("reason", ""), (str, type(None))):
        raise RecordRejected("reason must be a string")
    try:
        request = IncidentRequest.from_dict(data)
    except (MessageError, ValidationError) as exc:
        raise RecordRejected(str(exc)) from None
    except (TypeError, AttributeError):
        raise RecordRejected("incident request has a field of the wrong type") from None
    out.candidates.append(request)
