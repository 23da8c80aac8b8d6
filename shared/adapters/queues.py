"""Queue port over Azure Storage queues (shared/ports.QueuePort).

Bodies are sent base64-encoded, like every producer here: host.json says
``messageEncoding: base64``. The SDK's service client does not pass its encode policy on to
the queue clients it creates, so each sending client gets it here. Where the account is reached
with its key or the managed identity, sends (a storm's ~10 per user, one per step) are plain
``Put Message`` requests (``QueueEndpoint``: shared/adapters/storagerest.py, ~0.2 ms of CPU instead of
the SDK's ~1 ms); with a SAS they stay on the SDK, as does everything else. Messages read back
(peek/receive, for the poison tooling and the redrive sweeper) keep the stored text in
``content`` and the decoded body in ``text``; a queue that does not exist yet reads as empty.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import xml.etree.ElementTree as ElementTree
from typing import Any, Iterable, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from ..ports import QueuedMessage
from .storagerest import StorageEndpoint, authorization_of

logger = logging.getLogger(__name__)


def decode_stored(content: str | None) -> str:
    """The body a function sees of stored text: base64-decoded (UTF-8, undecodable bytes
    replaced), or the text itself when it is not base64."""
    raw = content or ""
    try:
        data = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return raw
    return data.decode("utf-8", errors="replace")


def _message(raw: Any) -> QueuedMessage:
    return QueuedMessage(
        id=raw.id,
        content=raw.content or "",
        text=decode_stored(raw.content),
        dequeue_count=int(raw.dequeue_count or 0),
        inserted_on=raw.inserted_on,
        pop_receipt=getattr(raw, "pop_receipt", None),
    )


XML = "application/xml; charset=utf-8"


def message_xml(content: str) -> str:
    """The body of a Put Message request for ``content`` (stored text, already encoded)."""
    return ("<?xml version='1.0' encoding='utf-8'?>\n"
            f"<QueueMessage><MessageText>{escape(content)}</MessageText></QueueMessage>")


class QueueEndpoint(StorageEndpoint):
    """An account's queue endpoint for ``Put Message`` (POST {queue}/messages)."""

    def __init__(self, url: str, auth: Any, api_version: str) -> None:
        super().__init__(auth, api_version)
        self.url = url.rstrip("/")

    async def put_message(self, queue: str, content: str, visibility_timeout: int | None) -> str:
        """Stores ``content`` (already encoded) and returns the message id."""
        url = f"{self.url}/{quote(queue, safe='')}/messages"
        if visibility_timeout is not None:
            url += f"?visibilitytimeout={int(visibility_timeout)}"
        reply = await self.call("POST", url, content=message_xml(content).encode("utf-8"), content_type=XML,
                                expect=(201,))
        return ElementTree.fromstring(reply.content).findtext("QueueMessage/MessageId") or ""


def queue_endpoint_of(service: Any) -> Optional[QueueEndpoint]:
    """The REST endpoint of an SDK QueueServiceClient, authorized as it is (None for a SAS)."""
    found = authorization_of(service, table=False)
    return QueueEndpoint(*found, api_version=service.api_version) if found else None


class QueueSender:
    def __init__(self, service: QueueServiceClient, rest: QueueEndpoint | None = None) -> None:
        """``rest``: the account's endpoint for sends (its owner closes it); without it the SDK sends."""
        self._service = service
        self._rest = rest
        self._clients: dict[str, QueueClient] = {}
        self._raw: dict[str, QueueClient] = {}

    def _client(self, queue: str) -> QueueClient:
        """A client that base64-encodes what it sends (bodies)."""
        client = self._clients.get(queue)
        if client is None:
            client = self._clients[queue] = self._service.get_queue_client(
                queue, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
            )
        return client

    def _stored(self, queue: str) -> QueueClient:
        """A client that sends and reads the stored text as it is."""
        client = self._raw.get(queue)
        if client is None:
            client = self._raw[queue] = self._service.get_queue_client(queue)
        return client

    async def ensure(self, queues: Iterable[str]) -> None:
        async def create(queue: str) -> None:
            try:
                await self._client(queue).create_queue()
            except ResourceExistsError:
                pass

        await asyncio.gather(*(create(queue) for queue in queues))

    async def _send(self, queue: str, client: QueueClient, content: str, visibility_timeout: int | None) -> str:
        """``content`` as ``client`` stores it: over REST when the account's endpoint is known (the
        text already encoded), else through the client."""
        async def put() -> str:
            if self._rest is not None:
                return await self._rest.put_message(queue, content, visibility_timeout)
            return str((await client.send_message(content, visibility_timeout=visibility_timeout)).id)

        try:
            return await put()
        except ResourceNotFoundError:  # first message to a queue nobody created yet
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            return await put()

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        if self._rest is not None:  # the SDK client encodes; over REST the base64 text is built here
            return await self._send(queue, self._stored(queue),
                                    base64.b64encode(body.encode("utf-8")).decode("ascii"), visibility_timeout)
        return await self._send(queue, self._client(queue), body, visibility_timeout)

    async def send_stored(self, queue: str, content: str) -> str:
        return await self._send(queue, self._stored(queue), content, None)

    async def peek(self, queue: str, max_messages: int) -> list[QueuedMessage]:
        try:
            return [_message(m) for m in await self._stored(queue).peek_messages(max_messages=max_messages)]
        except ResourceNotFoundError:
            return []

    async def receive(self, queue: str, max_messages: int, visibility_timeout: int) -> list[QueuedMessage]:
        try:
            return [_message(m) async for m in self._stored(queue).receive_messages(
                max_messages=max_messages, visibility_timeout=visibility_timeout)]
        except ResourceNotFoundError:
            return []

    async def delete(self, queue: str, message: QueuedMessage) -> None:
        await self._stored(queue).delete_message(message.id, message.pop_receipt)

    async def make_visible(self, queue: str, message: QueuedMessage) -> bool:
        try:
            updated = await self._stored(queue).update_message(message.id, message.pop_receipt, visibility_timeout=0)
        except ResourceNotFoundError:
            return False
        message.pop_receipt = updated.pop_receipt
        return True

    async def approximate_count(self, queue: str) -> int:
        try:
            properties = await self._stored(queue).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(properties.approximate_message_count or 0)
