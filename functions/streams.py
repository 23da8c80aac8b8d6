"""Stream and polling triggers: Entra ID Protection and Defender XDR via Event Hub, and the
Graph polling reconciler on a timer. Each only decodes its input and calls shared.ingest."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_deps
from shared.ingest import DefenderPending, PayloadError, ingest_payload
from shared.poller import poll_once
from shared.validation import excerpt

logger = logging.getLogger(__name__)
bp = func.Blueprint()


async def _ingest_events(events: list[func.EventHubEvent], source: str, where: str) -> None:
    deps = await get_deps()
    pending = DefenderPending(deps.ledger.t["defenderpending"])
    for event in events:
        body = event.get_body()
        sequence = getattr(event, "sequence_number", None)
        correlation_id = f"{where}-{sequence}" if sequence is not None else None
        try:
            await ingest_payload(deps, body, source=source, where=where, pending=pending, correlation_id=correlation_id)
        except PayloadError as exc:
            # One unreadable event never blocks the rest of the batch.
            await deps.ledger.record_error(where, str(exc), excerpt=excerpt(body[:200], 200))
            logger.warning("[incident=- step=ingest corr=-] %s event unreadable: %s", where, exc)


@bp.function_name("entra_stream")
@bp.event_hub_message_trigger(arg_name="events", event_hub_name="%ENTRA_EVENTHUB_NAME%", connection="EVENTHUB",
                              cardinality=func.Cardinality.MANY, consumer_group="$Default")
async def entra_stream(events: list[func.EventHubEvent]) -> None:
    await _ingest_events(events, "entra-diagnostics", "eventhub-entra")


@bp.function_name("defender_stream")
@bp.event_hub_message_trigger(arg_name="events", event_hub_name="%DEFENDER_EVENTHUB_NAME%", connection="EVENTHUB",
                              cardinality=func.Cardinality.MANY, consumer_group="$Default")
async def defender_stream(events: list[func.EventHubEvent]) -> None:
    await _ingest_events(events, "defender-stream", "eventhub-defender")


@bp.function_name("poll_reconciler")
@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False)
async def poll_reconciler(timer: func.TimerRequest) -> None:
    deps = await get_deps()
    summary = await poll_once(deps, deps.ledger._service)
    logger.info("[incident=- step=poll corr=-] reconciler run: %s", summary)
