"""The simulator's runtime core: tenant state, faults, throttling limits, the request log and issued tokens.

``SimulatorCore`` is what every handler (Graph, Exchange, token, control API) works on; it is
kept in the aiohttp application under ``CORE_KEY``. The request log stores each logical request
with secrets redacted (``redact``); the token store keeps issued bearer tokens in memory and
only their SHA-256 for secret scans.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import secrets
import time
import uuid
from typing import Any, Mapping

from aiohttp import web

from .faults import FaultInjector
from .limits import Limits
from .odata import GraphError, iso, utcnow
from .signing import OperatorIssuer
from .state import TenantState, load_seed

logger = logging.getLogger(__name__)

REQUEST_LOG_MAX = 200_000
TOKEN_STORE_MAX = 100_000
REDACTED = "<redacted>"
SECRET_KEYS = frozenset({"password", "temporaryaccesspass", "secret", "secretkey", "client_secret", "access_token",
                         "refresh_token", "authorization", "newpassword", "currentpassword"})
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                    'client_id="00000003-0000-0000-c000-000000000000"')


def redact(value: Any) -> Any:
    """Deep copy of a JSON value with secret-looking keys replaced by '<redacted>'."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and k.lower() in SECRET_KEYS and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value



# ---------------------------------------------------------------------- request log

class RequestLog:
    """Bounded in-memory log of simulated requests."""

    def __init__(self, maxlen: int = REQUEST_LOG_MAX) -> None:
        self.entries: collections.deque = collections.deque(maxlen=maxlen)
        self.seq = 0

    def record(self, service: str, method: str, path: str, query: Mapping[str, str] | None, status: int, *,
               request_id: str, user: str | None = None, permission: str | None = None, latency_ms: float = 0.0,
               fault: str | None = None, body: Any = None, batch_id: str | None = None, item_id: str | None = None,
               cmdlet: str | None = None, headers: Mapping[str, str] | None = None) -> dict:
        """Append one entry (the body is redacted here)."""
        self.seq += 1
        entry = {
            "seq": self.seq, "time": iso(utcnow()), "service": service, "method": method, "path": path,
            "query": dict(query) if query else {}, "status": status, "user": user, "permission": permission,
            "latency_ms": round(latency_ms, 3), "fault": fault, "batch_id": batch_id, "item_id": item_id,
            "request_id": request_id, "cmdlet": cmdlet,
            "body": redact(body) if body is not None else None,
        }
        if headers:
            entry["headers"] = dict(headers)
        self.entries.append(entry)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s%s -> %s%s", service, method, path, f" [{cmdlet}]" if cmdlet else "", status,
                         f" fault={fault}" if fault else "")
        return entry

    def query(self, service: str | None = None, method: str | None = None, path_contains: str | None = None,
              since: int | None = None, status: int | None = None, cmdlet: str | None = None,
              batch_id: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]:
        """Filtered entries, oldest first (`limit` keeps the newest N)."""
        out = []
        pc = path_contains.lower() if path_contains else None
        for e in self.entries:
            if since is not None and e["seq"] <= since:
                continue
            if service and e["service"] != service:
                continue
            if method and e["method"] != method.upper():
                continue
            if pc and pc not in e["path"].lower():
                continue
            if status is not None and e["status"] != status:
                continue
            if cmdlet and (e["cmdlet"] or "").lower() != cmdlet.lower():
                continue
            if batch_id and e["batch_id"] != batch_id:
                continue
            if user and (e["user"] or "").lower() != user.lower():
                continue
            out.append(e)
        if limit is not None:
            out = out[-limit:] if limit > 0 else []
        return out

    def clear(self) -> None:
        self.entries.clear()


# ---------------------------------------------------------------------- tokens

class TokenStore:
    """Opaque bearer tokens issued by /msi/token, bound to an audience."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, int]] = {}
        self.issued = 0
        # SHA-256 of every token issued (never the tokens): lets a secret scan prove that no
        # token reached a log, table or queue without the simulator handing tokens out.
        self.issued_sha256: list[str] = []

    def issue(self, audience: str, lifetime_s: int) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        expires_on = int(time.time()) + lifetime_s
        if len(self.tokens) >= TOKEN_STORE_MAX:
            self.tokens.pop(next(iter(self.tokens)))
        self.tokens[token] = (audience, expires_on)
        self.issued += 1
        if len(self.issued_sha256) < TOKEN_STORE_MAX:
            self.issued_sha256.append(hashlib.sha256(token.encode()).hexdigest())
        return token, expires_on

    def check(self, authorization: str | None, audience: str) -> GraphError | None:
        """None when `authorization` carries a valid token for `audience`, else the 401 to answer."""
        def fail(message: str) -> GraphError:
            return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": WWW_AUTHENTICATE})
        if not authorization:
            return fail("Access token is empty.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return fail("Access token is empty.")
        rec = self.tokens.get(token)
        if rec is None:
            return fail("IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in JWS or "
                        "JWE Compact Serialization Format.")
        aud, expires_on = rec
        if expires_on <= time.time():
            return fail("Lifetime validation failed, the token is expired.")
        if aud != audience:
            return fail("Access token validation failure. Invalid audience.")
        return None

    def clear(self) -> None:
        self.tokens.clear()


# ---------------------------------------------------------------------- core

class SimulatorCore:
    """State + faults + request log + tokens of one simulator instance."""

    def __init__(self, seed: Mapping[str, Any] | None = None, seed_path: str | None = None,
                 faults: Mapping[str, Any] | None = None, identity_header: str | None = None,
                 limits: Mapping[str, Any] | None = None) -> None:
        self.seed_path = seed_path
        self.seed = dict(seed) if seed is not None else load_seed(seed_path)
        self.state = TenantState(self.seed)
        self.faults = FaultInjector(faults)
        self.limits = Limits(limits, user_count=lambda: len(self.state.users), app_id=self.state.mi_client_id,
                             tenant_id=self.state.tenant_id)
        self.log = RequestLog()
        self.tokens = TokenStore()
        self.identity_header = identity_header or secrets.token_urlsafe(24)
        self.started = time.time()
        api = self.seed.get("operatorApi") or {}
        self.operator_issuer = OperatorIssuer(
            self.state.tenant_id,
            str(api.get("clientId") or uuid.uuid5(uuid.UUID(self.state.tenant_id), "app/breach-responder-api")))

    def reset(self, seed: Mapping[str, Any] | None = None) -> None:
        """Rebuild the tenant from `seed`, else from the seed file (re-read) or the initial seed."""
        if seed is None:
            seed = load_seed(self.seed_path) if self.seed_path else self.seed
        self.state = TenantState(seed)
        self.limits.app_id, self.limits.tenant_id = self.state.mi_client_id, self.state.tenant_id
        logger.info("Tenant state reset (%d users)", len(self.state.users))

    def mailbox_key(self, key: str) -> str:
        """The mailbox a user key (object id or UPN) names, for per-mailbox quotas."""
        user = self.state.find_user(key)
        return user.id if user is not None else key.lower()

    def granted(self) -> frozenset:
        return frozenset(self.state.granted - self.state.denied)


CORE_KEY = web.AppKey("core", SimulatorCore)
