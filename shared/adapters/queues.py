"""Queue port over Azure Storage queues (shared/ports.QueuePort).

Bodies are sent base64-encoded, like every producer here: host.json says
``messageEncoding: base64``. The SDK's service client does not pass its encode policy on to
the queue clients it creates, so each sending client gets it here. Messages read back
(peek/receive, for the poison tooling and the redrive sweeper) keep the stored text in
``content`` and the decoded body in ``text``; a queue that does not exist yet reads as empty.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any, Iterable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from ..ports import QueuedMessage

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


class QueueSender:
    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
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

    async def _send(self, client: QueueClient, content: str, visibility_timeout: int | None) -> str:
        try:
            result = await client.send_message(content, visibility_timeout=visibility_timeout)
        except ResourceNotFoundError:  # first message to a queue nobody created yet
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            result = await client.send_message(content, visibility_timeout=visibility_timeout)
        return str(result.id)

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        return await self._send(self._client(queue), body, visibility_timeout)

    async def send_stored(self, queue: str, content: str) -> str:
        return await self._send(self._stored(queue), content, None)

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
