"""Wires the real adapters once per worker process (never per message).

``get_deps()`` is awaited by every handler; the first call validates settings, builds the
credential, the Graph and Exchange adapters and the storage clients, and creates the
queues and tables while it fetches the Graph and Exchange tokens (all concurrently).
Later calls return the same objects.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from .adapters.credentials import EXO_SCOPE, GRAPH_SCOPE, build_credential
from .adapters.exchange import ExchangeAdapter
from .adapters.graph import GraphAdapter
from .adapters.ledger import Ledger
from .adapters.queues import QueueSender
from .adapters.storage import build_storage
from .deps import Deps
from .gate import protection_gate
from .logs import quiet_transport_loggers
from .playbook import STEP_NAMES, queue_name
from .settings import Settings
from .steps import StepRunner, registry

logger = logging.getLogger(__name__)

_deps: Deps | None = None
_runner: StepRunner | None = None
_lock: asyncio.Lock | None = None


async def build_deps(settings: Settings | None = None) -> Deps:
    settings = settings or Settings.from_env()
    quiet_transport_loggers()
    credential = build_credential()
    storage = build_storage(credential=credential)
    ledger = Ledger(storage.tables)
    queues = QueueSender(storage.queues)
    names = [settings.alerts_queue, f"{settings.alerts_queue}-poison"]
    names += [queue_name(step) for step in STEP_NAMES] + [queue_name(step) + "-poison" for step in STEP_NAMES]
    # Tables, queues and the two tokens are independent round trips: one wait, not twenty-odd.
    await asyncio.gather(ledger.ensure(), queues.ensure(names), _warm_tokens(credential))
    graph = GraphAdapter(credential, settings.graph_base_url, settings.graph_timeout_s)
    exchange = ExchangeAdapter(credential, settings.exo_base_url, settings.tenant_id, settings.tenant_domain, settings.graph_timeout_s)
    logger.info(
        "worker wired: mode=%s playbook=%s graph=%s",
        settings.mode,
        ",".join(settings.playbook_steps),
        "local" if settings.graph_is_local else "microsoft",
    )
    return Deps(settings=settings, ledger=ledger, queues=queues, graph=graph, exchange=exchange)


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


async def get_runner() -> StepRunner:
    global _runner
    if _runner is None:
        deps = await get_deps()
        steps = registry()
        missing = [s for s in deps.settings.playbook_steps if s not in steps]
        if missing:
            from .errors import ConfigError

            raise ConfigError(f"PLAYBOOK_STEPS names steps with no implementation: {missing}")
        _runner = StepRunner(deps, steps, gate=protection_gate)
    return _runner
