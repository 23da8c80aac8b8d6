"""Calling the local host's operator API as a dev principal (tokens from the tenant simulator)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Mapping

from localdev.simulator.client import SimulatorProcess

READ, SUBMIT, APPROVE = "Incident.Read", "Incident.Submit", "Incident.Approve"
ALL_ROLES = (SUBMIT, READ, APPROVE)


def host_env(azurite_connection: str, simulator: SimulatorProcess, seed_settings: Mapping[str, str],
             **overrides: str) -> dict[str, str]:
    """A local host on Azurite and the simulator, with Easy Auth against the simulator's issuer."""
    return {
        "AzureWebJobsStorage": azurite_connection,
        "GRAPH_BASE_URL": simulator.url,
        "EXO_BASE_URL": simulator.url,
        **simulator.identity_env(),
        **simulator.easyauth_env(),
        **seed_settings,
        "LOCALDEV_QUEUE_LEASE_SECONDS": "30",
        "AzureWebJobs.poll_reconciler.Disabled": "true",
        "AzureWebJobs.securescore_snapshot.Disabled": "true",
        "AzureWebJobs.redrive_poison.Disabled": "true",
        "AzureWebJobs.expire_held.Disabled": "true",
        **overrides,
    }


def console_host_env(azurite_connection: str, simulator: SimulatorProcess, seed_settings: Mapping[str, str],
                     port: int) -> dict[str, str]:
    """The console tests' host (page and browser): auto mode, recovery passes to the manager, links to ``port``."""
    return host_env(azurite_connection, simulator, seed_settings, RESPONDER_MODE="auto", RECOVERY="tap",
                    RECOVERY_DELIVER_TO="manager", RECOVERY_HELPDESK_MAILBOX="helpdesk@contoso.onmicrosoft.com",
                    CONSOLE_BASE_URL=f"http://127.0.0.1:{port}")


def api(url: str, method: str, path: str, *, token: str | None = None, body: Any = None, key: str | None = None,
        headers: Mapping[str, str] | None = None, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """One call to ``{url}/api/{path}``: (status, JSON body or {"text": ...})."""
    full = f"{url}/api/{path}" + (f"?code={key}" if key else "")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else
                                        (b"" if method == "POST" else None))
    request = urllib.request.Request(full, data=data, method=method, headers=hdrs)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        parsed = json.loads(payload) if payload[:1] in (b"{", b"[") else {"text": payload.decode("utf-8", "replace")}
    except ValueError:
        parsed = {"text": payload.decode("utf-8", "replace")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}
