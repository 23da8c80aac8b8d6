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
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def transport_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for the storage clients' transport.

    With trust_env on, aiohttp looks up proxy settings (and ~/.netrc) for every request: a
    measurable share of a storm's CPU. When no proxy is configured there is nothing to find,
    so it is switched off; with a proxy variable set, the SDK's default (honour it) stays.
    """
    env = os.environ if env is None else env
    if any(env.get(name) or env.get(name.lower()) for name in _PROXY_VARS):
        return {}
    return {"use_env_settings": False}


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
    options = transport_options(env)
    if conn:
        return StorageClients(
            queues=QueueServiceClient.from_connection_string(conn, **options),
            tables=TableServiceClient.from_connection_string(conn, **options),
        )
    queue_uri = env.get(f"{CONNECTION}__queueServiceUri", "").strip()
    table_uri = env.get(f"{CONNECTION}__tableServiceUri", "").strip()
    if not (queue_uri and table_uri) or credential is None:
        raise ConfigError(
            "storage is not configured: set AzureWebJobsStorage (connection string) or "
            "AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__tableServiceUri"
        )
    return StorageClients(
        queues=QueueServiceClient(queue_uri, credential=credential, **options),
        tables=TableServiceClient(endpoint=table_uri, credential=credential, **options),
    )
