"""pytest plugin: one in-memory Azurite for the whole test session.

Fixture ``azurite`` (session scope) yields a :class:`localdev.azurite.AzuriteProcess`
(``.connection_string``, ``.ports``, ...). Azurite is required: if it cannot start, the
tests that use it error (run ``make setup`` to install it).
"""
from __future__ import annotations

import logging

import pytest

from localdev.azurite import AzuriteProcess, start_azurite

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def azurite() -> AzuriteProcess:
    process = start_azurite()
    logger.info("Session Azurite pid %d on ports %s", process.pid, process.ports)
    try:
        yield process
    finally:
        process.stop(grace=2.0)


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: AzuriteProcess) -> str:
    """The session Azurite's connection string (devstoreaccount1, explicit endpoints)."""
    return azurite.connection_string


@pytest.fixture
async def fresh_storage(azurite: AzuriteProcess):
    """The app's tables and queues emptied before the test; yields aio (tables, queues) clients."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    from shared.adapters.ledger import TABLES
    from shared.playbook import STEP_NAMES, queue_name
    from shared.signin import OPERATOR_QUEUE

    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    for name in TABLES:
        client = tables.get_table_client(name)
        try:
            async for entity in client.list_entities(select=["PartitionKey", "RowKey"]):
                await client.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            pass
    names = ["alerts"] + [queue_name(s) for s in STEP_NAMES] + [OPERATOR_QUEUE]
    for name in names + [n + "-poison" for n in names]:
        try:
            await queues.get_queue_client(name).clear_messages()
        except ResourceNotFoundError:
            pass
    try:
        yield tables, queues
    finally:
        await tables.close()
        await queues.close()
