"""Local Microsoft 365 tenant simulator (dev/test only, loopback only, never deployed).

Serves, on one port, the Microsoft Graph calls the breach responder makes (/v1.0 and /beta), the
Exchange Online admin API (POST /adminapi/beta/{tenant}/InvokeCommand), an App Service style
managed-identity token endpoint (/msi/token, what azure-identity's ManagedIdentityCredential calls
when IDENTITY_ENDPOINT and IDENTITY_HEADER are set) and a control API under /_sim/.

Public API:
    start_simulator(...) -> SimulatorProcess   run it as a subprocess (tests, benches)
    SimulatorClient(url)                       synchronous control client (urllib)
    Simulator(...)                             embed it in a running asyncio loop
    create_app(core), SimulatorCore            the aiohttp application and its state
    TenantState, load_seed, DEFAULT_SEED_PATH  tenant state and seed
    FaultInjector                              fault injection
CLI: python -m localdev.simulator --help
"""
from .app import LoopbackError, Simulator, SimulatorCore, check_loopback, create_app
from .client import SimulatorClient, SimulatorError, SimulatorProcess, start_simulator
from .faults import FaultConfigError, FaultInjector
from .state import DEFAULT_SEED_PATH, SeedError, TenantState, load_seed

__all__ = [
    "DEFAULT_SEED_PATH",
    "FaultConfigError",
    "FaultInjector",
    "LoopbackError",
    "SeedError",
    "Simulator",
    "SimulatorClient",
    "SimulatorCore",
    "SimulatorError",
    "SimulatorProcess",
    "TenantState",
    "check_loopback",
    "create_app",
    "load_seed",
    "start_simulator",
]
