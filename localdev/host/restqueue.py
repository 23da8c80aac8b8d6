"""The local host's queue plumbing over the Queue service REST API, signed with the account key.

In Azure the Functions host (.NET) polls the queues, deletes finished messages and moves poison
ones; the Python worker never pays for it. This local host does that work in the app's own process,
and through ``azure-storage-queue`` each poll, delete and visibility change cost about 1 ms of CPU
(azure-core runs ~1,800 Python calls per request; docs/benchmarks.md): a storm's ~42 polls and
deletes per user were about a tenth of the app's measured CPU. Here the same five operations are
plain requests on one pooled aiohttp session (``shared/adapters/http.py``), the same wire calls the
SDK makes:

* ``ensure``          PUT    {queue}                               (201 created, 204 exists)
* ``receive``         GET    {queue}/messages?numofmessages=&visibilitytimeout=
* ``delete``          DELETE {queue}/messages/{id}?popreceipt=
* ``set_visibility``  PUT    {queue}/messages/{id}?popreceipt=&visibilitytimeout=  (new receipt
  in ``x-ms-popreceipt``)
* ``send``            POST   {queue}/messages   ``<QueueMessage><MessageText>…``

Requests are signed with Shared Key (the string-to-sign of the Blob/Queue/File services, as
``azure.storage.queue``'s policy builds it). A connection that has no account key (a SAS) keeps the
SDK client (``StorageQueue``). Errors are azure-core's exceptions, as the SDK raises them
(404 → ResourceNotFoundError, 409 → ResourceExistsError, other → HttpResponseError); a connection
failure, a 408 or a 5xx is tried twice more, as the SDK's retry policy does. Message text is never
logged.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from azure.core.exceptions import ResourceExistsError

from shared.adapters.http import Reply
from shared.adapters.queues import XML, message_xml
from shared.adapters.storagerest import SharedKey, StorageEndpoint

logger = logging.getLogger(__name__)

__all__ = ["QueueAccount", "RestQueue", "account_of"]

@dataclass
class ReceivedMessage:
    """What the listener reads of a received message (the SDK's QueueMessage attribute names)."""

    id: str
    pop_receipt: str
    dequeue_count: int
    content: Optional[str]
    inserted_on: Optional[datetime]
    expires_on: Optional[datetime]
    next_visible_on: Optional[datetime]


class QueueAccount(StorageEndpoint):
    """One storage account's queue endpoint, key and connection pool (shared by its queues); the
    signing, retries and errors are the app's own (shared/adapters/storagerest.py)."""

    def __init__(self, account_name: str, account_key: str, api_version: str) -> None:
        self.key = SharedKey(account_name, account_key, table=False)
        super().__init__(self.key, api_version)
        self.account_name = account_name

    def sign(self, method: str, url: str, headers: dict[str, str]) -> str:
        """The Shared Key Authorization header value for this request."""
        return self.key.blob_queue_signature(method, url, headers)

    async def xml_call(self, method: str, url: str, body: Optional[str] = None,
                       expect: tuple[int, ...] = (200, 201, 204)) -> Reply:
        content = body.encode("utf-8") if body is not None else None
        return await self.call(method, url, content=content, content_type=XML, expect=expect)


def account_of(queue_client: Any) -> Optional[QueueAccount]:
    """The account behind an SDK QueueClient, when it signs with an account key (else None: a SAS)."""
    credential = getattr(queue_client, "credential", None)
    name, key = getattr(credential, "account_name", None), getattr(credential, "account_key", None)
    if not name or not key or urlsplit(queue_client.url).query:
        return None
    return QueueAccount(name, key, queue_client.api_version)


def _when(text: Optional[str]) -> Optional[datetime]:
    try:
        return parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError):
        return None


class RestQueue:
    """One queue, with the interface of ``queues.StorageQueue``."""

    def __init__(self, account: QueueAccount, url: str, name: str) -> None:
        self.account = account
        self.name = name
        self._url = url.rstrip("/")
        self._ensured = False

    async def ensure(self) -> None:
        if self._ensured:
            return
        try:
            reply = await self.account.xml_call("PUT", self._url)
            if reply.status == 201:
                logger.info("Created queue %s", self.name)
        except ResourceExistsError:  # exists with other metadata
            pass
        self._ensured = True

    async def receive(self, max_messages: int, visibility_timeout: int) -> list[ReceivedMessage]:
        reply = await self.account.xml_call(
            "GET", f"{self._url}/messages?numofmessages={int(max_messages)}&visibilitytimeout={int(visibility_timeout)}",
            expect=(200,))
        if not reply.content.strip():
            return []
        received = []
        for item in ElementTree.fromstring(reply.content).iter("QueueMessage"):
            received.append(ReceivedMessage(
                id=item.findtext("MessageId") or "",
                pop_receipt=item.findtext("PopReceipt") or "",
                dequeue_count=int(item.findtext("DequeueCount") or 1),
                content=item.findtext("MessageText"),
                inserted_on=_when(item.findtext("InsertionTime")),
                expires_on=_when(item.findtext("ExpirationTime")),
                next_visible_on=_when(item.findtext("TimeNextVisible")),
            ))
        return received

    def _message_url(self, message_id: str, pop_receipt: str) -> str:
        return f"{self._url}/messages/{quote(message_id, safe='')}?popreceipt={quote(pop_receipt, safe='')}"

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        await self.account.xml_call("DELETE", self._message_url(message_id, pop_receipt), expect=(204,))

    async def set_visibility(self, message_id: str, pop_receipt: str, seconds: int) -> str:
        reply = await self.account.xml_call(
            "PUT", f"{self._message_url(message_id, pop_receipt)}&visibilitytimeout={int(seconds)}", expect=(204,))
        return reply.headers.get("x-ms-popreceipt", "")

    async def send(self, content: str) -> None:
        await self.account.xml_call("POST", f"{self._url}/messages", message_xml(content), expect=(201,))

    async def close(self) -> None:
        """The account's pool is closed by its owner (the runtime), once for all its queues."""
