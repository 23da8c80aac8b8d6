"""The one ingestion path every source uses: parse → record bad records → submit requests.

Event Hub functions, the polling reconciler, ``responder ingest`` and (through the same
``submit``) the alerts queue and HTTP endpoint all end here, so dedupe and policy are
applied the same way whichever source saw a compromise first. A bad record never stops
the good ones: it becomes a row in the ``errors`` table with the reason and a short
excerpt (no values that could be secrets), and the batch carries on.

Defender XDR streams AlertInfo and AlertEvidence separately, possibly in different
batches: halves that cannot be judged yet are kept in the ledger (table
``defenderpending``) keyed by AlertId and joined when the other half arrives.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .deps import Deps
from .intake import IntakeResult, submit
from .model import new_correlation_id
from .normalize import ParseResult, PayloadError, join_defender, parse_payload
from .normalize.defender import slim_pending_record

logger = logging.getLogger(__name__)

@dataclass
class IngestReport:
    source: str
    outcomes: list[IntakeResult] = field(default_factory=list)
    rejected: int = 0
    ignored: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
        return {"source": self.source, "incidents": counts, "rejected": self.rejected,
                "ignored": self.ignored, "pending": self.pending,
                "incident_ids": sorted({o.incident_id for o in self.outcomes if o.incident_id})}


# A pending half is stored in one table string property (at most 32K UTF-16 units).
_MAX_RECORD_CHARS = 30_000


def storable_record(record_json: str) -> str:
    """The half as stored: as received, or slimmed to what joining reads when it is too big."""
    if len(record_json) <= _MAX_RECORD_CHARS:
        return record_json
    slim = json.dumps(slim_pending_record(json.loads(record_json)), separators=(",", ":"), ensure_ascii=False)
    if len(slim) > _MAX_RECORD_CHARS:  # cannot happen with the cuts slim_pending_record makes; never store a partial half
        raise PayloadError("Defender half too large to keep even after slimming")
    return slim


async def _keep_half(deps: Deps, alert_id: str, kind: str, record_json: str) -> None:
    """Store one Defender half until its other half arrives (idempotent: keyed by its digest)."""
    row = f"{kind}-{hashlib.sha256(record_json.encode()).hexdigest()[:16]}"
    await deps.ledger.add_pending_half(alert_id, row, kind, storable_record(record_json))


async def _record_bad(deps: Deps, where: str, parsed: ParseResult, correlation_id: str) -> None:
    for bad in parsed.rejected:
        await deps.ledger.record_error(where, bad.reason, message_id=correlation_id, excerpt=bad.excerpt,
                                       record_index=bad.index if bad.index is not None else -1)
        logger.warning("[incident=- step=ingest corr=%s] %s record %s rejected: %s", correlation_id, where, bad.index, bad.reason)
    for ignored in parsed.ignored:
        logger.info("[incident=- step=ingest corr=%s] %s record %s ignored: %s", correlation_id, where, ignored.index, ignored.reason)


async def ingest_payload(
    deps: Deps,
    payload: bytes | str,
    *,
    source: str = "auto",
    where: str = "ingest",
    correlation_id: str | None = None,
) -> IngestReport:
    """Parse one payload (any shape) and submit every incident request it yields.

    Defender halves that cannot be judged yet are kept in the ledger (``defenderpending``)
    and joined with what is already there. Raises PayloadError only if the whole payload is
    unreadable (the caller records it).
    """
    correlation_id = correlation_id or new_correlation_id()
    parsed = parse_payload(payload, source, min_risk_level=deps.settings.min_risk_level,
                           tenant_id=deps.settings.tenant_id)
    report = IngestReport(source=source, rejected=len(parsed.rejected), ignored=len(parsed.ignored))
    await _record_bad(deps, where, parsed, correlation_id)
    requests = list(parsed.requests)
    touched = []
    for half in parsed.pending:
        await _keep_half(deps, half.alert_id, half.kind, half.to_json())
        touched.append(half.alert_id)
    for alert_id in dict.fromkeys(touched):
        infos, evidence = await deps.ledger.pending_halves(alert_id)
        joined = join_defender(infos, evidence, min_risk_level=deps.settings.min_risk_level)
        requests.extend(joined.requests)
        report.pending += len(joined.pending)
    for request in requests:
        outcome = await submit(deps, request, correlation_id=correlation_id)
        if outcome.outcome == "refused":
            report.rejected += 1
            await deps.ledger.record_error(where, f"request refused: {outcome.reason}", message_id=correlation_id,
                                           excerpt=request.user_key)
        report.outcomes.append(outcome)
    logger.info("[incident=- step=ingest corr=%s] %s: %s", correlation_id, where, report.as_dict())
    return report


__all__ = ["IngestReport", "PayloadError", "ingest_payload", "storable_record"]
