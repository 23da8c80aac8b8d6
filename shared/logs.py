"""Logging helpers: every line about an incident carries its id, step and correlation id.

``quiet_transport_loggers()`` keeps the HTTP clients' own per-request INFO lines (httpx
logs every request URL) out of the app's logs: the adapters log what matters with the
incident id, and a storm would otherwise write ~27 extra lines per incident to
Application Insights. Their warnings and errors still come through.
"""
from __future__ import annotations

import logging
from typing import Any, MutableMapping


class IncidentLog(logging.LoggerAdapter):
    """Prefixes ``[incident=.. step=.. corr=..]`` to each message (%-style args untouched)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        prefix = "[incident=%s step=%s corr=%s] " % (
            extra.get("incident_id", "-"),
            extra.get("step", "-"),
            extra.get("correlation_id", "-"),
        )
        kwargs.setdefault("extra", {}).update(extra)
        return prefix + str(msg), kwargs


def incident_log(logger: logging.Logger, incident_id: str = "-", step: str = "-", correlation_id: str = "-") -> IncidentLog:
    return IncidentLog(logger, {"incident_id": incident_id, "step": step, "correlation_id": correlation_id})


NOISY_LOGGERS = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy")


def quiet_transport_loggers() -> None:
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
