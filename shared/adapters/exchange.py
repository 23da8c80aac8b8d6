"""Exchange Online admin API adapter (InvokeCommand), for what Graph cannot do.

``POST {EXO}/adminapi/beta/{tenantId}/InvokeCommand`` with
``{"CmdletInput": {"CmdletName": ..., "Parameters": {...}}}``, app-only with the managed
identity (scope ``https://outlook.office365.com/.default``, app role Exchange.ManageAsApp
plus an Exchange/Security Administrator directory role). Responses are
``{"value": [...]}`` paged by ``@odata.nextLink``; errors carry the real reason under
``error.innererror.internalexception.message``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..errors import PermanentError, TransientError
from .credentials import EXO_SCOPE
from .graph import READ_RETRIES, THROTTLE_BUDGET_S, THROTTLE_RETRIES, parse_retry_after

logger = logging.getLogger(__name__)

PERMISSION = "Exchange.ManageAsApp (+ Exchange Administrator role)"
_TRANSIENT = {408, 429, 500, 502, 503, 504}
SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


class ExchangeAdapter:
    def __init__(self, credential: Any, base_url: str, tenant_id: str, tenant_domain: str = "", timeout_s: float = 30.0) -> None:
        self._credential = credential
        self._base = base_url.rstrip("/")
        self._tenant = tenant_id
        self._domain = tenant_domain
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))

    async def close(self) -> None:
        await self._http.aclose()

    @property
    def url(self) -> str:
        if not self._tenant:
            raise PermanentError("TENANT_ID is not set: the Exchange admin API needs the tenant id")
        return f"{self._base}/adminapi/beta/{quote(self._tenant, safe='')}/InvokeCommand"

    async def invoke(self, cmdlet: str, parameters: dict[str, Any] | None = None, anchor: str | None = None) -> list[dict[str, Any]]:
        token = await self._credential.get_token(EXO_SCOPE)
        anchor_upn = anchor or (f"{SYSTEM_MAILBOX}@{self._domain}" if self._domain else "")
        headers = {
            "Authorization": f"Bearer {token.token}",
            "Content-Type": "application/json",
            "X-ResponseFormat": "json",
            "Prefer": "odata.maxpagesize=1000",
        }
        if anchor_upn:
            headers["X-AnchorMailbox"] = f"UPN:{anchor_upn}"
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
        rows: list[dict[str, Any]] = []
        url = self.url
        for _ in range(100):
            data = await self._post(url, cmdlet, headers, body)
            rows.extend(data.get("value", []) if isinstance(data, dict) else [])
            link = data.get("@odata.nextLink") if isinstance(data, dict) else None
            if not link:
                return rows
            if urlsplit(link).netloc != urlsplit(self._base).netloc:
                raise PermanentError(f"Exchange nextLink points at another host; refused ({cmdlet})")
            url = link
        return rows

    async def _post(self, url: str, cmdlet: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        """POST with bounded retries: 429 always (not processed), 5xx only for Get-* cmdlets."""
        read_only = cmdlet.startswith("Get-")
        waited, attempt = 0.0, 0
        while True:
            attempt += 1
            try:
                response = await self._http.post(url, headers=headers, content=json.dumps(body))
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if read_only and attempt <= READ_RETRIES:
                    continue  # a Get-* cmdlet that hung is safe to repeat
                what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"transport error: {exc.__class__.__name__}"
                raise TransientError(f"Exchange {cmdlet} {what}") from None
            status = response.status_code
            if status < 300:
                return response.json() if response.content else {}
            delay = parse_retry_after(response.headers.get("Retry-After"))
            retry = (status == 429 and attempt <= THROTTLE_RETRIES) or (status in _TRANSIENT and read_only and attempt <= READ_RETRIES)
            if not retry:
                break
            delay = delay if delay is not None else min(8.0, 0.5 * 2 ** (attempt - 1))
            if waited + delay > THROTTLE_BUDGET_S:
                break
            delay += random.uniform(0, min(0.1, delay / 4 + 0.01))
            waited += delay
            await asyncio.sleep(delay)
        reason = _reason(response)
        if response.status_code in _TRANSIENT:
            delay = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientError(f"Exchange {cmdlet}: {response.status_code} {reason}", status=response.status_code, retry_after=delay)
        if response.status_code == 403:
            raise PermanentError(
                f"Exchange {cmdlet}: 403 - the app identity lacks permission; grant {PERMISSION}",
                status=403,
            )
        raise PermanentError(f"Exchange {cmdlet}: {response.status_code} {reason}", status=response.status_code)


def _reason(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return response.text[:200]
    inner = (error.get("innererror") or {}).get("internalexception") or {}
    return str(inner.get("message") or error.get("message") or error.get("code") or "")[:400]
