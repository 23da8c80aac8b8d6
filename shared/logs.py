"""Logging helpers: every line about an incident carries its id, step and correlation id."""
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
