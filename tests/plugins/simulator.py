"""Pytest fixtures for the local M365 tenant simulator (localdev/simulator).

- `simulator` (session): one simulator subprocess on a free loopback port, stopped at the end.
- `sim` (function): the same process with state reset to the seed, request log cleared, faults
  and one-shot faults cleared, no throttling profile, permissions back to the seed's; returns the
  SimulatorProcess.
- `sim_identity_env` (function): sets IDENTITY_ENDPOINT / IDENTITY_HEADER (and clears competing
  managed-identity variables) so azure-identity's ManagedIdentityCredential talks to the simulator.
"""
from __future__ import annotations

import logging
from typing import Iterator

import pytest

from localdev.simulator.client import SimulatorProcess, start_simulator

logger = logging.getLogger(__name__)

_COMPETING_MI_VARS = ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET",
                      "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                      "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_PASSWORD",
                      "AZURE_POD_IDENTITY_AUTHORITY_HOST")


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    """A simulator subprocess shared by the whole test session."""
    proc = start_simulator()
    logger.info("Simulator for the test session at %s", proc.url)
    try:
        yield proc
    finally:
        code = proc.stop()
        logger.info("Simulator stopped (exit code %s)", code)


@pytest.fixture
def sim(simulator: SimulatorProcess) -> SimulatorProcess:
    """The session simulator, reset to a clean seed state for this test."""
    client = simulator.client
    client.clear_faults()
    client.set_limits({"profile": "none"})
    client.reset()
    client.clear_requests()
    return simulator


@pytest.fixture
def sim_identity_env(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> SimulatorProcess:
    """Point azure-identity's App Service managed-identity flow at the simulator for this test."""
    for name in _COMPETING_MI_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", sim.identity_header)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,::1")
    return sim
