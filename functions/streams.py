"""Stream and polling triggers: Entra ID Protection and Defender XDR via Event Hub, and the
Graph polling reconciler on a timer. Each only decodes its input and calls shared.ingest.

Event Hub checkpoints advance even when a batch fails, so the stream functions carry a
retry policy: a transient failure (storage or tenant briefly unavailable) fails the batch
and the host replays it (intake dedupes per user, so a replay is harmless); a permanent
failure on one event becomes an ``errors`` row and the rest of the batch goes on.

Each stream has its own identity-based connection (``ENTRA_EVENTHUB__*``, ``DEFENDER_EVENTHUB__*``):
in Azure the Entra export hub lives in a namespace that keeps SAS for Azure Monitor's diagnostic
export, the Defender hub in one with local auth off (infra/modules/eventhubs.bicep)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.errors import is_transient, safe_reason
from shared.ingest import PayloadError, ingest_payload
from shared.poller import poll_once
from shared.validation import excerpt

logger = logging.getLogger(__name__)
bp = func.Blueprint()


async def _ingest_events(events: list[func.EventHubEvent], source: str, where: str) -> None:
    deps = await get_deps()
    for event in events:
        body = event.get_body()
        sequence = getattr(event, "sequence_number", None)
        correlation_id = f"{where}-{sequence}" if sequence is not None else None
        try:
            await ingest_payload(deps, body, source=source, where=where, correlation_id=correlation_id)
        except PayloadError as exc:
            # One unreadable event never blocks the rest of the batch.
            await deps.ledger.record_error(where, str(exc), excerpt=excerpt(body[:200], 200))
            logger.warning("[incident=- step=ingest corr=-] %s event unreadable: %s", where, exc)
        except Exception as exc:  # noqa: BLE001 - classified below
            if is_transient(exc):
                raise  # storage or tenant briefly unavailable: fail the batch so the retry policy replays it
            # A permanent failure on one event (e.g. a value storage refuses) must not sink the batch.
            reason = f"event could not be ingested: {safe_reason(exc)}"
            await deps.ledger.record_error(where, reason, message_id=correlation_id or "",
                                           excerpt=excerpt(body[:200], 200))
            logger.error("[incident=- step=ingest corr=%s] %s %s", correlation_id or "-", where, reason)


@bp.function_name("entra_stream")
@bp.retry(strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:02", maximum_interval="00:01:00")
@bp.event_hub_message_trigger(arg_name="events", event_hub_name="%ENTRA_EVENTHUB_NAME%", connection="ENTRA_EVENTHUB",
                              cardinality=func.Cardinality.MANY, consumer_group="$Default")
async def entra_stream(events: list[func.EventHubEvent]) -> None:
    await _ingest_events(events, "entra-diagnostics", "eventhub-entra")


@bp.function_name("defender_stream")
@bp.retry(strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:02", maximum_interval="00:01:00")
@bp.event_hub_message_trigger(arg_name="events", event_hub_name="%DEFENDER_EVENTHUB_NAME%", connection="DEFENDER_EVENTHUB",
                              cardinality=func.Cardinality.MANY, consumer_group="$Default")
async def defender_stream(events: list[func.EventHubEvent]) -> None:
    await _ingest_events(events, "defender-stream", "eventhub-defender")


@bp.function_name("poll_reconciler")
@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False)
async def poll_reconciler(timer: func.TimerRequest) -> None:
    deps = await get_deps()
    summary = await poll_once(deps)
    logger.info("[incident=- step=poll corr=-] reconciler run: %s", summary)
