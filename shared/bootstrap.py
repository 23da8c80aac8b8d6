"""The one place the real adapters are built and wired: the worker, the operator CLI and
the local demo all get their clients here.

- ``open_storage(env)``: the storage-side adapters (ledger, queues, Secure Score store) over
  one storage account, from ``AzureWebJobsStorage`` or the identity-based settings. The CLI
  and localdev use it directly (and close it).
- ``get_deps()`` / ``get_runner()``: awaited by every handler. The first call validates
  settings, builds the credential, the storage adapters, Graph and Exchange, and creates
  the queues and tables while it fetches the Graph and Exchange tokens (all concurrently).
  Later calls return the same objects: wiring happens once per worker, never per message.
- ``operator_deps(storage, settings)``: Deps for commands that never talk to the tenant.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from .adapters.credentials import EXO_SCOPE, GRAPH_SCOPE, build_credential
from .adapters.exchange import ExchangeAdapter
from .adapters.graph import GraphAdapter
from .adapters.ledger import Ledger
from .adapters.pacing import Pacer, PacingLimits
from .adapters.queues import QueueEndpoint, QueueSender, queue_endpoint_of
from .adapters.scores import ScoreStore
from .adapters.storage import StorageClients, build_storage
from .adapters.tablerest import TableEndpoint, endpoint_of
from .deps import Deps
from .errors import ConfigError
from .gate import protection_gate
from .logs import quiet_transport_loggers
from .playbook import STEP_NAMES, queue_name
from .settings import Settings
from .signin import OPERATOR_QUEUE
from .steps import StepRunner, registry
from .timestamps import utcnow

logger = logging.getLogger(__name__)

_deps: Deps | None = None
_runner: StepRunner | None = None
_lock: asyncio.Lock | None = None


@dataclass
class Storage:
    """The storage-side adapters over one storage account."""

    clients: StorageClients
    ledger: Ledger
    queues: QueueSender
    scores: ScoreStore
    table_rest: TableEndpoint | None = None
    queue_rest: QueueEndpoint | None = None

    @property
    def table_url(self) -> str:
        return str(self.clients.tables.url)

    async def close(self) -> None:
        for rest in (self.table_rest, self.queue_rest):
            if rest is not None:
                await rest.close()
        await self.clients.close()


def open_storage(env: Mapping[str, str] | None = None, *, credential: Any = None,
                 clock: Callable[[], datetime] = utcnow) -> Storage:
    """Storage adapters from ``AzureWebJobsStorage`` (a connection string) or, without it,
    the identity-based ``AzureWebJobsStorage__*ServiceUri`` settings with ``credential``
    (a new DefaultAzureCredential when none is given). Raises ConfigError when neither is set."""
    env = os.environ if env is None else env
    if not env.get("AzureWebJobsStorage", "").strip() and credential is None:
        if not env.get("AzureWebJobsStorage__queueServiceUri", "").strip():
            raise ConfigError(
                "storage is not configured: set AzureWebJobsStorage (connection string) or "
                "AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__tableServiceUri"
            )
        credential = build_credential()
    clients = build_storage(env, credential=credential)
    table_rest, queue_rest = endpoint_of(clients.tables), queue_endpoint_of(clients.queues)
    return Storage(clients=clients, ledger=Ledger(clients.tables, clock=clock, rest=table_rest),
                   queues=QueueSender(clients.queues, rest=queue_rest), scores=ScoreStore(clients.tables),
                   table_rest=table_rest, queue_rest=queue_rest)


def app_queues(settings: Settings) -> list[str]:
    """Every queue the app reads or writes: alerts, one per step, operator actions, and their poison queues."""
    names = [settings.alerts_queue] + [queue_name(step) for step in STEP_NAMES] + [OPERATOR_QUEUE]
    return names + [name + "-poison" for name in names]


def operator_deps(storage: Storage, settings: Settings) -> Deps:
    """Deps for operator commands (approve, ingest): storage only, no Graph or Exchange."""
    return Deps(settings=settings, ledger=storage.ledger, queues=storage.queues, scores=storage.scores)


async def build_deps(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Deps:
    settings = settings or Settings.from_env(env)
    quiet_transport_loggers()
    credential = build_credential()
    clock = utcnow
    storage = open_storage(env, credential=credential, clock=clock)
    # Tables, queues and the two tokens are independent round trips: one wait, not twenty-odd.
    await asyncio.gather(storage.ledger.ensure(), storage.scores.ensure(), storage.queues.ensure(app_queues(settings)),
                         _warm_tokens(credential))
    # One pacer per worker: every Graph and Exchange call of every incident it runs shares it.
    pacer = Pacer(PacingLimits.from_settings(settings.pacing))
    graph = GraphAdapter(credential, settings.graph_base_url, settings.graph_timeout_s, pacer=pacer)
    exchange = ExchangeAdapter(credential, settings.exo_base_url, settings.tenant_id, settings.tenant_domain,
                               settings.graph_timeout_s, pacer=pacer)
    logger.info(
        "worker wired: mode=%s playbook=%s graph=%s",
        settings.mode,
        ",".join(settings.playbook_steps),
        "local" if settings.graph_is_local else "microsoft",
    )
    return Deps(settings=settings, ledger=storage.ledger, queues=storage.queues, graph=graph, exchange=exchange,
                scores=storage.scores, clock=clock)


async def _warm_tokens(credential: Any) -> None:
    """Fetch the Graph and Exchange tokens now, while storage is being set up, so the first
    step does not wait for them. The credential caches them in memory (never on disk). A
    failure here is not fatal: the first call asks again and reports the error there."""
    if not (os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT")):
        return  # no managed-identity endpoint (a developer machine): probing would only add waits
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(credential.get_token(scope) for scope in (GRAPH_SCOPE, EXO_SCOPE)), return_exceptions=True),
            timeout=10,
        )
    except asyncio.TimeoutError:
        logger.warning("token warm-up timed out; the first call will ask again")
        return
    for scope, result in zip((GRAPH_SCOPE, EXO_SCOPE), results):
        if isinstance(result, BaseException):
            logger.warning("token warm-up for %s failed (%s); the first call will ask again", scope, result.__class__.__name__)


async def get_deps() -> Deps:
    global _deps, _lock
    if _deps is not None:
        return _deps
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _deps is None:
            _deps = await build_deps()
    return _deps


def build_runner(deps: Deps) -> StepRunner:
    """The StepRunner over every step the playbook names (ConfigError when one has no implementation)."""
    steps = registry()
    missing = [s for s in deps.settings.playbook_steps if s not in steps]
    if missing:
        raise ConfigError(f"PLAYBOOK_STEPS names steps with no implementation: {missing}")
    return StepRunner(deps, steps, gate=protection_gate)


async def get_runner() -> StepRunner:
    global _runner
    if _runner is None:
        _runner = build_runner(await get_deps())
    return _runner
