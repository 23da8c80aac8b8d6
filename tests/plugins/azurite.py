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
