"""Secure Score on the local stack (``responder dev`` / ``responder demo``; never in Azure).

The production timer keeps ``run_on_startup=False`` (a static decorator argument; on a real
Functions app it would also fire on every scale-out and restart). The local stack instead
asks the local host to run the snapshot once it is up, through the host's admin API
(``POST /admin/functions/securescore_snapshot`` with the master key, the same API the real
host has), and the demo reads back what was stored.
"""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from shared.bootstrap import open_storage
from shared.securescore.service import summary

logger = logging.getLogger(__name__)

SNAPSHOT_FUNCTION = "securescore_snapshot"


def trigger_snapshot(host_url: str, master_key: str, timeout_s: float = 120.0) -> bool:
    """Run the snapshot function on a running local host now and wait; True if it succeeded."""
    request = urllib.request.Request(
        f"{host_url.rstrip('/')}/admin/functions/{SNAPSHOT_FUNCTION}?wait=true",
        data=json.dumps({"input": ""}).encode("utf-8"),
        headers={"Content-Type": "application/json", "x-functions-key": master_key},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        logger.warning("Secure Score snapshot at start-up failed: HTTP %s", exc.code)
        return False
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.warning("Secure Score snapshot at start-up failed: %s", exc)
        return False
    ok = body.get("status") == "Succeeded"
    if not ok:
        logger.warning("Secure Score snapshot at start-up did not succeed: %s", body)
    return ok


async def _summary(connection_string: str) -> dict[str, Any] | None:
    storage = open_storage({"AzureWebJobsStorage": connection_string})
    try:
        return await summary(storage.scores)
    finally:
        await storage.close()


def stored_summary(connection_string: str) -> dict[str, Any] | None:
    """``{"current", "max", "percentage", "date", "days"}`` from the stored snapshots (sync)."""
    return asyncio.run(_summary(connection_string))
