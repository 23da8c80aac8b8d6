"""The HTTP client under the Graph and Exchange adapters: one pooled aiohttp session per adapter.

aiohttp is already the storage SDKs' transport; for our plain JSON requests it costs about a tenth
of the CPU httpx + httpcore did per request (bench, docs/benchmarks.md: 1.7 → 0.15 ms of CPU per
request against a local server), and a storm makes ~50 such requests per user. What the adapters
need is small and lives here:

- URLs are sent exactly as built (``encoded=True``): the adapters percent-encode every path segment
  and query value themselves, and Graph's ``@odata.nextLink`` comes encoded;
- no redirects are followed, proxies are used only when a proxy variable is set (``trust_env``);
- the session is opened on the first request, inside the worker's event loop;
- a reply is read whole (``Reply``: status, headers, bytes) and the connection goes back to the pool;
- a timeout or a connection failure is one exception, ``TransportFailure``, which says which.
"""
from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Mapping

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class TransportFailure(Exception):
    """The request got no HTTP answer: it timed out, or the connection failed."""

    def __init__(self, timed_out: bool, kind: str) -> None:
        super().__init__("timed out" if timed_out else f"transport error: {kind}")
        self.timed_out = timed_out


class Reply:
    """A whole HTTP answer."""

    __slots__ = ("status", "headers", "content")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class HttpClient:
    """One connection pool (``max_connections`` per adapter) with the adapter's timeouts."""

    def __init__(self, timeout_s: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s))
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max),
                timeout=self._timeout,
                trust_env=any(os.environ.get(v) for v in PROXY_VARIABLES),
                auto_decompress=True,
            )
        return self._session

    async def request(self, method: str, url: str, headers: Mapping[str, str], content: bytes | None = None) -> Reply:
        try:
            async with self._open().request(method, URL(url, encoded=True), headers=dict(headers), data=content,
                                            allow_redirects=False) as response:
                body = await response.read()
                received: CIMultiDictProxy[str] = response.headers
                return Reply(response.status, received, body)
        except asyncio.TimeoutError:
            raise TransportFailure(True, "TimeoutError") from None
        except aiohttp.ClientError as exc:
            raise TransportFailure(False, exc.__class__.__name__) from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
