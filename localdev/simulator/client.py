"""Synchronous control client for the simulator (urllib only) and a subprocess launcher.

    with start_simulator() as sim:
        sim.client.set_faults({"graph": {"rate_per_s": 5, "burst": 5}})
        os.environ.update(sim.identity_env())
        ...
        assert sim.client.state()["users"]["adele.vance@contoso.onmicrosoft.com"]["revocations"] == 1
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from localdev.process import ChildProcess, ChildStartError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
IDENTITY_HEADER_ENV = "BREACH_SIM_IDENTITY_HEADER"
GRAPH_RESOURCE = "https://graph.microsoft.com"
EXO_RESOURCE = "https://outlook.office365.com"


class SimulatorError(RuntimeError):
    """A control call failed (carries the HTTP status and body)."""

    def __init__(self, status: int, body: Any, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SimulatorClient:
    """Tiny client for the /_sim control API (plus `raw` for arbitrary calls)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = _no_proxy_opener()

    # -------------------------------------------------------------- plumbing

    def raw(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
            token: str | None = None, query: Mapping[str, Any] | None = None, data: bytes | None = None
            ) -> tuple[int, dict[str, str], Any]:
        """Any request to the simulator: (status, headers, parsed JSON body or text or None)."""
        url = self.url + path
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query, doseq=True)
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        payload = data
        if body is not None and payload is None:
            payload = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(url, data=payload, method=method.upper(), headers=hdrs)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, resp_headers, raw = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            status, resp_headers, raw = exc.code, dict(exc.headers.items()), exc.read()
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        return status, resp_headers, parsed

    def _control(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        status, _, parsed = self.raw(method, path, body=body, query=query)
        if status >= 400:
            raise SimulatorError(status, parsed, f"{method} {path} -> {status}: {parsed}")
        return parsed

    # -------------------------------------------------------------- control API

    def health(self) -> dict:
        """GET /_sim/health."""
        return self._control("GET", "/_sim/health")

    def requests(self, **filters: Any) -> list[dict]:
        """GET /_sim/requests (filters: service, method, path_contains, since, status, cmdlet, batch_id, user, limit)."""
        query = {k: v for k, v in filters.items() if v is not None}
        return self._control("GET", "/_sim/requests", query=query)["requests"]

    def clear_requests(self) -> None:
        """DELETE /_sim/requests."""
        self._control("DELETE", "/_sim/requests")

    def state(self, user: str | list[str] | None = None, users: bool = True) -> dict:
        """GET /_sim/state (optionally only some users, or none)."""
        query: dict[str, Any] = {}
        if user:
            query["user"] = [user] if isinstance(user, str) else list(user)
        if not users:
            query["users"] = "false"
        return self._control("GET", "/_sim/state", query=query or None)

    def user_state(self, upn: str) -> dict:
        """State of one user (by UPN or id)."""
        users = self.state(user=upn)["users"]
        if not users:
            raise KeyError(upn)
        return next(iter(users.values()))

    def mutations(self, since: int = 0) -> list[dict]:
        """GET /_sim/mutations."""
        return self._control("GET", "/_sim/mutations", query={"since": since})["mutations"]

    def tenant_changes(self, since: int = 0) -> list[dict]:
        """The mutations that change the tenant: all but the mails the responder sent (a held incident's SOC
        notice is a mail, not a change to the user)."""
        return [m for m in self.mutations(since) if m.get("action") != "mail_sent"]

    def reset(self, seed: Mapping[str, Any] | None = None) -> dict:
        """POST /_sim/reset (seed dict, or the simulator's seed file when None)."""
        return self._control("POST", "/_sim/reset", body=dict(seed) if seed is not None else None)

    def issued_token_sha256(self) -> list[str]:
        """GET /_sim/tokens: SHA-256 of every bearer token issued (for secret scans)."""
        return self._control("GET", "/_sim/tokens")["sha256"]

    def faults(self) -> dict:
        """GET /_sim/faults."""
        return self._control("GET", "/_sim/faults")

    def set_faults(self, config: Mapping[str, Any]) -> dict:
        """PUT /_sim/faults (replaces the configuration; {} clears it and queued one-shots)."""
        return self._control("PUT", "/_sim/faults", body=dict(config))

    def clear_faults(self) -> dict:
        """DELETE /_sim/faults."""
        return self._control("DELETE", "/_sim/faults")

    def limits(self) -> dict:
        """GET /_sim/limits: the throttling profile as it applies now, with per-quota counters."""
        return self._control("GET", "/_sim/limits")

    def set_limits(self, config: Mapping[str, Any]) -> dict:
        """PUT /_sim/limits ({"profile": "published"|"none", "overrides": {...}}; counters restart)."""
        return self._control("PUT", "/_sim/limits", body=dict(config))

    def reset_limit_counters(self) -> dict:
        """DELETE /_sim/limits/counters."""
        return self._control("DELETE", "/_sim/limits/counters")

    def fault_once(self, **spec: Any) -> dict:
        """POST /_sim/faults/once (service, method, path_contains, cmdlet, status, count, retry_after,
        after_effect, hang_s, message)."""
        return self._control("POST", "/_sim/faults/once", body=spec)

    def permissions(self) -> dict:
        """GET /_sim/permissions."""
        return self._control("GET", "/_sim/permissions")

    def set_permissions(self, granted: list[str] | None = None, denied: list[str] | None = None,
                        directory_roles: list[str] | None = None) -> dict:
        """PUT /_sim/permissions (only the given lists are replaced)."""
        body: dict[str, Any] = {}
        if granted is not None:
            body["granted"] = list(granted)
        if denied is not None:
            body["denied"] = list(denied)
        if directory_roles is not None:
            body["directoryRoles"] = list(directory_roles)
        return self._control("PUT", "/_sim/permissions", body=body)

    def add_users(self, count: int, prefix: str = "user", start: int = 1, risky: bool = False,
                  compromised: bool = False) -> list[dict]:
        """POST /_sim/users: deterministic `<prefix><nnnnn>@domain` users; returns [{id, userPrincipalName}]."""
        return self._control("POST", "/_sim/users", body={"count": count, "prefix": prefix, "start": start,
                                                          "risky": risky, "compromised": compromised})["users"]

    def add_alert(self, user: str | None = None, alert: Mapping[str, Any] | None = None, **kw: Any) -> dict:
        """POST /_sim/alerts: a user-compromise alert for `user`, or a full `alert` dict."""
        body: dict[str, Any] = dict(kw)
        if alert is not None:
            body["alert"] = dict(alert)
        if user is not None:
            body["user"] = user
        return self._control("POST", "/_sim/alerts", body=body)

    def set_risk(self, user: str, **kw: Any) -> dict:
        """POST /_sim/risk (riskLevel, riskState, riskDetail, detection)."""
        return self._control("POST", "/_sim/risk", body={"user": user, **kw})

    def clear_tokens(self) -> None:
        """DELETE /_sim/tokens: every issued token becomes invalid (401)."""
        self._control("DELETE", "/_sim/tokens")

    def operator_token(self, upn: str | None = None, roles: list[str] | tuple[str, ...] = (), *, app: str | None = None,
                       **overrides: Any) -> str:
        """POST /_sim/operator-token: a signed Entra-style access token for a dev principal (a user by
        UPN, or an application by name) holding ``roles`` of the responder's app registration.
        ``overrides``: audience, lifetime_s (negative = expired), not_before_s, tenant, object_id."""
        body: dict[str, Any] = {"roles": list(roles), **overrides}
        body["upn" if upn else "app"] = upn or app
        return self._control("POST", "/_sim/operator-token", body=body)["access_token"]


class SimulatorProcess(ChildProcess):
    """A simulator running as a subprocess (see `start_simulator`)."""

    name = "simulator"

    def __init__(self, identity_header: str, workdir: Path) -> None:
        super().__init__(workdir / "simulator.log", workdir)
        self.identity_header = identity_header
        self.ready_file = workdir / "ready.json"
        self.url = ""
        self.port = 0
        self.tenant_id = ""
        self.api_client_id = ""
        self.identity_endpoint = ""
        self.client: SimulatorClient

    @property
    def proc(self) -> subprocess.Popen:
        assert self.process is not None
        return self.process

    def _read_ready(self) -> dict | None:
        try:
            info = json.loads(self.ready_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return info or None

    def _ready(self, info: Mapping[str, Any]) -> None:
        self.url = info["url"]
        self.port = int(info["port"])
        self.tenant_id = info.get("tenant_id", "")
        self.api_client_id = info.get("api_client_id", "")
        self.identity_endpoint = self.url + "/msi/token"
        self.client = SimulatorClient(self.url)

    def identity_env(self) -> dict[str, str]:
        """Environment variables that point azure-identity's ManagedIdentityCredential at the simulator."""
        return {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": self.identity_header}

    def easyauth_env(self) -> dict[str, str]:
        """Settings that make the local host play App Service Authentication with this simulator as
        the Entra ID issuer (localdev/host/easyauth.py), like authsettingsV2 in infra."""
        return {
            "LOCALDEV_EASYAUTH_ISSUER": f"{self.url}/{self.tenant_id}/v2.0",
            "LOCALDEV_EASYAUTH_CLIENT_ID": self.api_client_id,
            "LOCALDEV_EASYAUTH_ALLOWED_AUDIENCES": f"api://{self.api_client_id}",
            "LOCALDEV_EASYAUTH_ALLOWED_TENANTS": self.tenant_id,
            # as infra/main.bicep: the console's sign-in page and its CSS/JS (no data) need no session
            "LOCALDEV_EASYAUTH_EXCLUDED_PATHS": "/api/console/signin,/api/console/static",
        }

    def get_token(self, resource: str = GRAPH_RESOURCE) -> str:
        """Fetch a bearer token from the simulator's MSI endpoint."""
        status, _, body = self.client.raw("GET", "/msi/token", headers={"X-IDENTITY-HEADER": self.identity_header},
                                          query={"api-version": "2019-08-01", "resource": resource})
        if status != 200:
            raise SimulatorError(status, body, f"token request failed: {status} {body}")
        return body["access_token"]

    def log_tail(self, lines: int = 50) -> str:
        """Last lines of the simulator's stderr/stdout log."""
        return super().log_tail(lines)


def start_simulator(seed: Mapping[str, Any] | str | os.PathLike | None = None,
                    faults: Mapping[str, Any] | None = None, identity_header: str | None = None,
                    env: Mapping[str, str] | None = None, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout: float = 20.0, log_level: str = "INFO",
                    python: str | None = None, limits: Mapping[str, Any] | None = None) -> SimulatorProcess:
    """Start `python -m localdev.simulator` and wait until it listens.

    `seed` may be a dict (written to a temp file) or a path. The identity header secret is passed
    through the environment, never on the command line. Output goes to a log file (`.log_path`).
    """
    workdir = Path(tempfile.mkdtemp(prefix="m365sim-"))
    identity_header = identity_header or secrets.token_urlsafe(24)
    sim = SimulatorProcess(identity_header, workdir)
    cmd = [python or sys.executable, "-m", "localdev.simulator", "--host", host, "--port", str(port),
           "--ready-file", str(sim.ready_file), "--log-level", log_level]
    if seed is not None:
        if isinstance(seed, Mapping):
            seed_file = workdir / "seed.json"
            seed_file.write_text(json.dumps(seed), encoding="utf-8")
            cmd += ["--seed", str(seed_file)]
        else:
            cmd += ["--seed", str(seed)]
    if faults:
        cmd += ["--faults", json.dumps(faults)]
    if limits:
        cmd += ["--limits", json.dumps(dict(limits))]
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env[IDENTITY_HEADER_ENV] = identity_header
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    sim.spawn(cmd, cwd=REPO_ROOT, env=child_env)
    try:
        info = sim.wait_until(sim._read_ready, startup_timeout, "listening")
    except ChildStartError as exc:
        raise RuntimeError(f"simulator did not start: {exc}") from None
    sim._ready(info)
    logger.info("Simulator started at %s (pid %s)", sim.url, sim.pid)
    return sim
