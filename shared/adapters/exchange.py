"""Exchange Online admin API adapter (InvokeCommand), for what Graph cannot do.

``POST {EXO}/adminapi/beta/{tenantId}/InvokeCommand`` with
``{"CmdletInput": {"CmdletName": ..., "Parameters": {...}}}``, app-only with the managed
identity (scope ``https://outlook.office365.com/.default``, app role Exchange.ManageAsApp
plus an Exchange/Security Administrator directory role). Responses are
``{"value": [...]}`` paged by ``@odata.nextLink``; errors carry the real reason under
``error.innererror.internalexception.message``. Every cmdlet waits for its turn at the Exchange
admin API's quota (pacing.py; Microsoft publishes none: the numbers are assumed settings), an
AdaptiveLimiter (throttle.py) bounds the connections, and failed calls are retried under
shared/retry.py's policy (429 always; 5xx, timeouts and transport errors for ``Get-*`` cmdlets
only), like Graph's.

Every call is anchored (``X-AnchorMailbox``), as every public client of the API does: a
cmdlet about one mailbox (``Identity``/``Mailbox``/``SenderAddress`` naming a user) to
``UPN:<that user>``, anything else to the organisation's system mailbox
``APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@<tenant id>``.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import PermanentError, TransientError
from ..retry import ADAPTER_POLICY, TRANSIENT_STATUS, Retrier, RetryKind, kind_of_status, parse_retry_after
from .credentials import EXO_SCOPE, BearerToken
from .graph import MAX_IN_FLIGHT
from .http import HttpClient, Reply, TransportFailure
from .pacing import Pacer, PacingLimits
from .throttle import AdaptiveLimiter

logger = logging.getLogger(__name__)

PERMISSION = "Exchange.ManageAsApp (+ Exchange Administrator role)"
SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
# Tenant-wide reads every incident makes and no step changes: answered from a per-worker
# cache for a few minutes (a 1,000-user storm would otherwise ask 2,000 times).
CACHED_CMDLETS = frozenset({"Get-OrganizationConfig"})
ORG_CONFIG_TTL_S = 300.0


class ExchangeAdapter:
    def __init__(self, credential: Any, base_url: str, tenant_id: str, tenant_domain: str = "", timeout_s: float = 30.0,
                 pacer: Pacer | None = None) -> None:
        self._credential = credential
        self._token = BearerToken(credential, EXO_SCOPE)
        self._base = base_url.rstrip("/")
        self._tenant = tenant_id
        self._domain = tenant_domain
        self._http = HttpClient(timeout_s, MAX_IN_FLIGHT)
        self.limiter = AdaptiveLimiter(initial=16, maximum=MAX_IN_FLIGHT)
        self.pacer = pacer or Pacer(PacingLimits.unlimited())  # the worker passes its own (bootstrap)
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def close(self) -> None:
        await self._http.close()

    @property
    def url(self) -> str:
        if not self._tenant:
            raise PermanentError("TENANT_ID is not set: the Exchange admin API needs the tenant id")
        return f"{self._base}/adminapi/beta/{quote(self._tenant, safe='')}/InvokeCommand"

    def anchor_for(self, parameters: dict[str, Any] | None, anchor: str | None = None) -> str:
        """The X-AnchorMailbox value for a call: the mailbox it is about, else the system mailbox."""
        if anchor:
            return anchor if ":" in anchor.split("@", 1)[0] else f"UPN:{anchor}"
        for key in ("Mailbox", "Identity", "SenderAddress"):
            value = (parameters or {}).get(key)
            if isinstance(value, str) and "@" in value and "\\" not in value and " " not in value.strip():
                return f"UPN:{value.strip()}"
        return f"APP:{SYSTEM_MAILBOX}@{self._tenant or self._domain}"

    async def invoke(self, cmdlet: str, parameters: dict[str, Any] | None = None, anchor: str | None = None,
                     warnings: list[str] | None = None) -> list[dict[str, Any]]:
        """Run one cmdlet; return its rows. ``warnings`` (if given) receives ``@adminapi.warnings``."""
        if cmdlet in CACHED_CMDLETS and not parameters:
            hit = self._cache.get(cmdlet)
            if hit is not None and hit[0] > time.monotonic():
                return copy.deepcopy(hit[1])
            rows = await self._invoke(cmdlet, parameters, anchor, warnings)
            self._cache[cmdlet] = (time.monotonic() + ORG_CONFIG_TTL_S, copy.deepcopy(rows))
            return rows
        return await self._invoke(cmdlet, parameters, anchor, warnings)

    async def _invoke(self, cmdlet: str, parameters: dict[str, Any] | None, anchor: str | None,
                      warnings: list[str] | None = None) -> list[dict[str, Any]]:
        headers = {
            "Authorization": await self._token.header(),
            "Content-Type": "application/json",
            "X-ResponseFormat": "json",
            "Prefer": "odata.maxpagesize=1000",
            "X-AnchorMailbox": self.anchor_for(parameters, anchor),
        }
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
        rows: list[dict[str, Any]] = []
        url = self.url
        for _ in range(100):
            data = await self._post(url, cmdlet, headers, body)
            rows.extend(data.get("value", []) if isinstance(data, dict) else [])
            if warnings is not None and isinstance(data, dict):
                warnings.extend(str(w) for w in data.get("@adminapi.warnings") or [])
            link = data.get("@odata.nextLink") if isinstance(data, dict) else None
            if not link:
                return rows
            if urlsplit(link).netloc != urlsplit(self._base).netloc:
                raise PermanentError(f"Exchange nextLink points at another host; refused ({cmdlet})")
            url = link
        return rows

    async def _post(self, url: str, cmdlet: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        """POST with bounded retries (shared/retry.py): 429 always (not processed), 5xx,
        timeouts and transport errors only for Get-* cmdlets."""
        read_only = cmdlet.startswith("Get-")
        retrier = Retrier(ADAPTER_POLICY)
        while True:
            try:
                async with self.pacer.exo(cmdlet) as ticket, self.limiter.slot():  # 429s: the pacer's
                    response = await self._http.request("POST", url, headers, json.dumps(body).encode("utf-8"))
                    if response.status == 429:
                        ticket.throttled(parse_retry_after(response.headers.get("Retry-After")))
            except TransportFailure as exc:
                delay = retrier.next_delay(RetryKind.TRANSIENT, safe=read_only)  # a Get-* that hung is safe to repeat
                if delay is None:
                    raise TransientError(f"Exchange {cmdlet} {exc}") from None
                await asyncio.sleep(delay)
                continue
            status = response.status
            if status < 300:
                return response.json() if response.content else {}
            if status == 401:
                self._token.forget()  # the next call asks the credential for a new token
            kind = kind_of_status(status)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = retrier.next_delay(kind, retry_after, safe=read_only) if kind is not None else None
            if delay is None:
                raise _error(response, cmdlet, retry_after)
            await asyncio.sleep(delay)


def _error(response: Reply, cmdlet: str, retry_after: float | None) -> Exception:
    reason = _reason(response)
    status = response.status
    if status in TRANSIENT_STATUS:
        return TransientError(f"Exchange {cmdlet}: {status} {reason}", status=status, retry_after=retry_after)
    if status == 403:
        return PermanentError(f"Exchange {cmdlet}: 403 - the app identity lacks permission; grant {PERMISSION}", status=403)
    return PermanentError(f"Exchange {cmdlet}: {status} {reason}", status=status)


def _reason(response: Reply) -> str:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return response.text[:200]
    inner = (error.get("innererror") or {}).get("internalexception") or {}
    return str(inner.get("message") or error.get("message") or error.get("code") or "")[:400]
