"""Plain REST requests to Azure Storage (tables, queues) on one pooled aiohttp session per account.

Through the storage SDKs every request runs azure-core's policy pipeline (request ids, tracing,
redirect and retry policies, a generated (de)serializer): 0.8-1.1 ms of CPU per request against
~0.2 ms for the same request on ``HttpClient`` (docs/benchmarks.md), and a storm makes ~65 table
writes, reads and queue sends per user. The hot operations (``tablerest.py``, ``queues.py``'s sends)
are built here instead, as the same wire calls the SDKs make:

* authorization: Shared Key with the account key (the Table service's string-to-sign, or the
  Blob/Queue services' one; learn.microsoft.com "Authorize with Shared Key"), or a bearer token of
  the app's credential (the managed identity) for ``https://storage.azure.com/.default``, fetched
  once and renewed five minutes before it expires;
* a connection failure, a timeout, a 408 or a 5xx is tried twice more (0.2 s, then 0.8 s), as the
  SDKs' retry policies do; every other answer outside ``expect`` raises;
* errors are azure-core's exceptions, as the SDKs raise them: 404 → ResourceNotFoundError, 409 →
  ResourceExistsError, 412 → ResourceModifiedError, other → HttpResponseError; each carries
  ``status_code`` and the service's ``error_code``, and names the method and the path's first
  segment only: never a key, a token, a body or a query string.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from email.utils import formatdate
from typing import Any, Callable, Mapping, Optional, Protocol
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from .credentials import BearerToken
from .http import HttpClient, Reply, TransportFailure

__all__ = ["Auth", "SharedKey", "TokenAuth", "StorageEndpoint", "authorization_of", "storage_error", "STORAGE_SCOPE"]

STORAGE_SCOPE = "https://storage.azure.com/.default"
TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64
RETRIES = 2  # after the first try, for a connection failure, 408 or 5xx
RETRY_DELAYS_S = (0.2, 0.8)
_SIGNED_HEADERS = ("content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
                   "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range")


class Auth(Protocol):
    async def authorize(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Add the Authorization header for this request (``url`` as sent, percent-encoded)."""


class SharedKey:
    """An account key, and the two Shared Key strings-to-sign the app needs."""

    def __init__(self, account_name: str, account_key: str, *, table: bool) -> None:
        self.account_name = account_name
        self._key = base64.b64decode(account_key)
        self._table = table

    def _sign(self, to_sign: str) -> str:
        digest = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account_name}:{base64.b64encode(digest).decode()}"

    def table_signature(self, method: str, url: str, headers: Mapping[str, str]) -> str:
        """Table service: VERB, Content-MD5, Content-Type, x-ms-date, /account + encoded path
        (+ ``?comp=`` only, which the app never sends)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        return self._sign("\n".join((method, lowered.get("content-md5", ""), lowered.get("content-type", ""),
                                     lowered.get("x-ms-date", ""), "/" + self.account_name + urlsplit(url).path)))

    def blob_queue_signature(self, method: str, url: str, headers: Mapping[str, str]) -> str:
        """Blob/Queue services: VERB, eleven standard headers (Content-Length empty when 0), the
        x-ms-* headers sorted, /account + path, each query parameter as ``\\nname:value``."""
        parts = urlsplit(url)
        lowered = {k.lower(): v for k, v in headers.items() if v}
        if lowered.get("content-length") == "0":
            del lowered["content-length"]
        canonical_headers = "".join(f"{k}:{lowered[k]}\n" for k in sorted(k for k in lowered if k.startswith("x-ms-")))
        query: dict[str, list[str]] = {}
        for pair in filter(None, parts.query.split("&")):
            name, _, value = pair.partition("=")
            query.setdefault(unquote(name).lower(), []).append(unquote(value))
        resource = "/" + self.account_name + parts.path
        resource += "".join(f"\n{name}:{','.join(sorted(values))}" for name, values in sorted(query.items()))
        return self._sign(method + "\n" + "\n".join(lowered.get(h, "") for h in _SIGNED_HEADERS) + "\n"
                          + canonical_headers + resource)

    async def authorize(self, method: str, url: str, headers: dict[str, str]) -> None:
        sign = self.table_signature if self._table else self.blob_queue_signature
        headers["Authorization"] = sign(method, url, headers)


class TokenAuth:
    """A bearer token of the app's credential (the managed identity): ``credentials.BearerToken``'s
    cache, the token reused until five minutes before it expires."""

    def __init__(self, credential: Any, scope: str = STORAGE_SCOPE) -> None:
        self._token = BearerToken(credential, scope)

    async def authorize(self, method: str, url: str, headers: dict[str, str]) -> None:
        headers["Authorization"] = await self._token.header()


def storage_error(method: str, url: str, reply: Reply, code: str = "") -> HttpResponseError:
    """The SDKs' exception for an answer the caller did not expect (no key, body or query in it)."""
    code = code or reply.headers.get("x-ms-error-code", "")
    segments = [s for s in urlsplit(url).path.split("/") if s]
    what = segments[-1].split("(", 1)[0] if segments else ""
    message = f"{method} {what}: {reply.status} {code}".rstrip()
    kind = {404: ResourceNotFoundError, 409: ResourceExistsError, 412: ResourceModifiedError}.get(
        reply.status, HttpResponseError)
    error = kind(message=message)
    error.status_code = reply.status
    error.error_code = code or None  # type: ignore[attr-defined]  # as the storage SDKs set it
    return error


class StorageEndpoint:
    """One service endpoint of an account: its authorization, version and connection pool."""

    def __init__(self, auth: Auth, api_version: str, *,
                 error_code: Callable[[Reply], str] = lambda reply: "") -> None:
        self.auth = auth
        self.api_version = api_version
        self.http = HttpClient(TIMEOUT_S, MAX_CONNECTIONS)
        self._error_code = error_code

    async def call(self, method: str, url: str, *, content: Optional[bytes] = None,
                   headers: Optional[Mapping[str, str]] = None, content_type: str = "",
                   expect: tuple[int, ...] = (200, 201, 204)) -> Reply:
        """``url`` complete and percent-encoded, sent as it is."""
        for attempt in range(RETRIES + 1):
            sent = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": self.api_version, **(headers or {})}
            if content is not None or method in ("PUT", "POST", "PATCH"):
                # aiohttp would add application/octet-stream to a body without a type: name it, sign it
                sent["Content-Length"] = str(len(content or b""))
                if content_type:
                    sent["Content-Type"] = content_type
            await self.auth.authorize(method, url, sent)
            try:
                reply = await self.http.request(method, url, sent, content)
            except TransportFailure:
                if attempt < RETRIES:
                    await asyncio.sleep(RETRY_DELAYS_S[attempt])
                    continue
                raise
            if reply.status in expect:
                return reply
            if (reply.status == 408 or reply.status >= 500) and attempt < RETRIES:
                await asyncio.sleep(RETRY_DELAYS_S[attempt])
                continue
            raise storage_error(method, url, reply, self._error_code(reply))
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self.http.close()


def authorization_of(service_client: Any, *, table: bool) -> Optional[tuple[str, Auth]]:
    """The endpoint URL of an SDK service client and the same authorization it uses: its account key
    (a connection string) or its token credential (the managed identity); None for a SAS or an
    anonymous client, which keep the SDK for every operation."""
    url = str(getattr(service_client, "url", "") or "")
    parts = urlsplit(url)
    if not url or parts.query:
        return None
    endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}"
    credential = getattr(service_client, "credential", None)
    named = getattr(credential, "named_key", None)  # tables: AzureNamedKeyCredential; queues: the key itself
    name = getattr(named, "name", None) or getattr(credential, "account_name", None)
    key = getattr(named, "key", None) or getattr(credential, "account_key", None)
    if name and key:
        return endpoint, SharedKey(name, key, table=table)
    if credential is not None and callable(getattr(credential, "get_token", None)):
        return endpoint, TokenAuth(credential)
    return None
