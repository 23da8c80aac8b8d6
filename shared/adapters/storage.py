"""Queue and table service clients from the app's storage connection.

Two forms, as the Functions host itself accepts them:
- ``AzureWebJobsStorage`` = a connection string (Azurite locally);
- identity-based: ``AzureWebJobsStorage__queueServiceUri`` and
  ``AzureWebJobsStorage__tableServiceUri`` with the managed identity (shared keys off).
Queue bodies are base64 text (see queues.QueueSender), matching host.json's messageEncoding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from ..errors import ConfigError

CONNECTION = "AzureWebJobsStorage"


@dataclass
class StorageClients:
    queues: QueueServiceClient
    tables: TableServiceClient

    async def close(self) -> None:
        await self.queues.close()
        await self.tables.close()


def build_storage(env: Mapping[str, str] | None = None, credential: Any = None) -> StorageClients:
    env = os.environ if env is None else env
    conn = env.get(CONNECTION, "").strip()
    if conn:
        return StorageClients(
            queues=QueueServiceClient.from_connection_string(conn),
            tables=TableServiceClient.from_connection_string(conn),
        )
    queue_uri = env.get(f"{CONNECTION}__queueServiceUri", "").strip()
    table_uri = env.get(f"{CONNECTION}__tableServiceUri", "").strip()
    if not (queue_uri and table_uri) or credential is None:
        raise ConfigError(
            "storage is not configured: set AzureWebJobsStorage (connection string) or "
            "AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__tableServiceUri"
        )
    return StorageClients(
        queues=QueueServiceClient(queue_uri, credential=credential),
        tables=TableServiceClient(endpoint=table_uri, credential=credential),
    )
