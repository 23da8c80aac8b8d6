"""Reading the session Azurite from tests: queue peeks, table rows, and waiting for a condition
(by polling storage: the condition becomes true when the app writes it, nothing is slept off)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient


async def peek(queues: QueueServiceClient, queue: str) -> list[Any]:
    try:
        return await queues.get_queue_client(queue).peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []


async def rows(tables: TableServiceClient, table: str) -> list[dict]:
    try:
        return [dict(e) async for e in tables.get_table_client(table).list_entities()]
    except ResourceNotFoundError:  # the app creates its tables on its first invocation
        return []


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 60.0, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
