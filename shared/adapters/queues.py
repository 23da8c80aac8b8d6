"""Queue port: send a message to a named queue (base64-encoded, like every producer here).

host.json says ``messageEncoding: base64``; the SDK's service client does not pass its
encode policy on to the queue clients it creates, so each queue client gets it here.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

logger = logging.getLogger(__name__)


class QueueSender:
    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict = {}

    @property
    def service(self) -> QueueServiceClient:
        return self._service

    def _client(self, queue: str):
        client = self._clients.get(queue)
        if client is None:
            client = self._clients[queue] = self._service.get_queue_client(
                queue, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
            )
        return client

    async def ensure(self, queues: Iterable[str]) -> None:
        async def create(queue: str) -> None:
            try:
                await self._client(queue).create_queue()
            except ResourceExistsError:
                pass

        await asyncio.gather(*(create(queue) for queue in queues))

    async def send(self, queue: str, body: str, *, visibility_timeout: int | None = None) -> str:
        client = self._client(queue)
        try:
            result = await client.send_message(body, visibility_timeout=visibility_timeout)
        except ResourceNotFoundError:  # first message to a queue nobody created yet
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            result = await client.send_message(body, visibility_timeout=visibility_timeout)
        return result.id
