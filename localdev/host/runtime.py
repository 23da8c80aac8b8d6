"""The local Azure Functions host: loads a v2 app and runs its triggers against Azurite.

Usable in-process::

    host = LocalHost("path/to/app", port=0)
    await host.start()          # settings -> env, host.json, import app, listeners, HTTP
    ...                         # host.url, host.function_key, host.master_key, host.status()
    await host.stop()           # stop polling, drain in-flight work (grace), close clients

or as a process: ``python -m localdev.host`` (see ``__main__``) and ``launcher.start_host``.

Triggers: queue (Azurite via connection strings), timer (NCRONTAB), HTTP; Event Hub triggers
(and queue/timer ones, on demand) run through ``POST /admin/functions/{name}``. Settings are
copied into ``os.environ`` (never overriding what is already set) before the app is
imported, so app code reads them as it would on the real platform.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import azure.functions as func
from aiohttp import web
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue.aio import QueueServiceClient

from .easyauth import EasyAuthConfig
from .functions import (
    EVENT_HUB_TRIGGER,
    HTTP_TRIGGER,
    QUEUE_TRIGGER,
    TIMER_TRIGGER,
    FunctionInfo,
    LoadedApp,
    load_function_app,
)
from .http_server import DEFAULT_MAX_BODY_BYTES, HttpFrontEnd
from .invocation import Invoker, default_thread_count
from .ncrontab import ScheduleError, parse_schedule
from .queues import POISON_SUFFIX, QueueListener, StorageQueue
from .restqueue import RestQueue, account_of
from .settings import (
    HostConfig,
    SettingsError,
    apply_settings,
    find_settings_file,
    load_host_config,
    load_local_settings,
    resolve_setting_refs,
)
from .timers import TimerRunner

logger = logging.getLogger(__name__)

__all__ = ["LocalHost", "HostStartError", "build_event_hub_events", "DEFAULT_PORT"]

DEFAULT_PORT = 7071  # what `func start` uses
DEFAULT_SHUTDOWN_GRACE = 10.0
ADMIN_REASON = "This function was programmatically called via the host APIs."
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


class HostStartError(RuntimeError):
    """The host could not start (bad settings/host.json, app import or indexing failure)."""


def build_event_hub_events(text: str) -> list:
    """Admin-invoke input -> Event Hub events.

    ``text`` is JSON: a list means one event per element, anything else one event; a string
    element is the body's UTF-8 text, any other JSON value is serialised. Text that is not
    JSON at all is taken as a single body verbatim.
    """
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    items = parsed if isinstance(parsed, list) else [parsed]
    now = datetime.now(timezone.utc)
    events = []
    for index, item in enumerate(items):
        body = item.encode("utf-8") if isinstance(item, str) else json.dumps(item).encode("utf-8")
        events.append(func.EventHubEvent(
            body=body, enqueued_time=now, partition_key=None, sequence_number=index, offset=str(index),
        ))
    return events


class LocalHost:
    """One local Functions host instance."""

    def __init__(
        self,
        app_dir: os.PathLike | str,
        *,
        settings_file: Optional[str] = None,
        port: Optional[int] = None,
        bind: str = "127.0.0.1",
        ready_file: Optional[os.PathLike | str] = None,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        unload_on_stop: bool = True,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.settings_file = settings_file
        self.requested_port = port
        self.bind = bind
        self.ready_file = Path(ready_file) if ready_file else None
        self.shutdown_grace = shutdown_grace
        self.unload_on_stop = unload_on_stop
        self.environ = os.environ
        self.state = "Created"
        self.config: HostConfig = HostConfig()
        self.loaded: Optional[LoadedApp] = None
        self.invoker: Optional[Invoker] = None
        self.http: Optional[HttpFrontEnd] = None
        self.function_key = ""
        self.master_key = ""
        self.port: Optional[int] = None
        self.function_errors: dict = {}
        self.listeners: dict = {}  # function name -> QueueListener
        self.timers: dict = {}  # function name -> TimerRunner
        self._runner: Optional[web.AppRunner] = None
        self._loop_tasks: list = []
        self._admin_tasks: set = set()
        self._services: dict = {}  # connection string -> QueueServiceClient
        self._accounts: dict = {}  # connection string -> QueueAccount, or None (no account key)
        self._queues: list = []
        self._stopped = asyncio.Event()

    # -- properties ------------------------------------------------------------------------
    @property
    def functions(self) -> list:
        return self.loaded.functions if self.loaded else []

    @property
    def function_names(self) -> list:
        return [info.name for info in self.functions]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_function(self, name: str) -> Optional[FunctionInfo]:
        return self.loaded.get(name) if self.loaded else None

    # -- start -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.state != "Created":
            raise HostStartError(f"host is {self.state}; create a new LocalHost to start again")
        self.state = "Starting"
        try:
            await self._start()
        except BaseException:
            self.state = "Error"
            await self._cleanup()
            raise
        self.state = "Running"
        if self.ready_file:
            self._write_ready_file(self.ready_file)
        logger.info("Host started: %s (%d function(s))", self.url, len(self.functions))

    async def _start(self) -> None:
        try:
            settings_path = find_settings_file(self.app_dir, self.settings_file)
            local = load_local_settings(settings_path)
            applied = apply_settings(local.values, self.environ)
            self.config = load_host_config(self.app_dir)
        except SettingsError as exc:
            raise HostStartError(str(exc)) from exc
        if settings_path:
            logger.info("Settings: %s (%d value(s), %d applied; variables already set win)",
                        settings_path, len(local.values), len(applied))
        else:
            logger.warning("No local.settings.json or local.settings.sample.json in %s", self.app_dir)
        if self.config.ignored:
            logger.warning("host.json keys not honoured by the local host: %s", ", ".join(self.config.ignored))
        q = self.config.queues
        logger.info(
            "host.json: queues batchSize=%d newBatchThreshold=%d maxPollingInterval=%.1fs "
            "visibilityTimeout=%.1fs maxDequeueCount=%d messageEncoding=%s; routePrefix=%r; functionTimeout=%s",
            q.batch_size, q.new_batch_threshold, q.max_polling_interval, q.visibility_timeout,
            q.max_dequeue_count, q.message_encoding, self.config.route_prefix,
            f"{self.config.function_timeout}s" if self.config.function_timeout else "none",
        )
        try:
            easy_auth = EasyAuthConfig.from_env(self.environ)
        except ValueError as exc:
            raise HostStartError(str(exc)) from exc
        # As on the platform, WEBSITE_AUTH_ENABLED tells the app whether App Service Authentication
        # fronts it (shared/principal.py trusts the principal headers only then); the host owns it.
        wanted = "True" if easy_auth else "False"
        if self.environ.get("WEBSITE_AUTH_ENABLED", wanted) != wanted:
            logger.warning("WEBSITE_AUTH_ENABLED=%s ignored: the host sets it (%s: Easy Auth %s)",
                           self.environ["WEBSITE_AUTH_ENABLED"], wanted, "on" if easy_auth else "off")
        self.environ["WEBSITE_AUTH_ENABLED"] = wanted
        if easy_auth:
            logger.info("Easy Auth: on (issuer %s, audiences %s)", easy_auth.issuer, ", ".join(easy_auth.audiences))
        self.function_key = self.environ.get("LOCALDEV_FUNCTION_KEY") or secrets.token_urlsafe(32)
        self.master_key = self.environ.get("LOCALDEV_MASTER_KEY") or secrets.token_urlsafe(32)

        try:
            self.loaded = load_function_app(self.app_dir)
        except Exception as exc:
            raise HostStartError(str(exc)) from exc
        self.invoker = Invoker(function_timeout=self.config.function_timeout,
                               thread_count=default_thread_count(self.environ))

        for info in self.functions:
            if not info.supported:
                self.function_errors[info.name] = f"trigger {info.trigger_type} is not supported locally"
                continue
            try:
                if info.trigger_type == QUEUE_TRIGGER:
                    self._setup_queue(info)
                elif info.trigger_type == TIMER_TRIGGER:
                    self._setup_timer(info)
                elif info.trigger_type == EVENT_HUB_TRIGGER:
                    self._describe_event_hub(info)
            except (SettingsError, ScheduleError, ValueError) as exc:
                self.function_errors[info.name] = str(exc)
                logger.error("Function '%s' disabled: %s", info.name, exc)

        try:
            max_body = int(self.environ.get("LOCALDEV_HTTP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        except ValueError:
            max_body = DEFAULT_MAX_BODY_BYTES
        self.http = HttpFrontEnd(self, max_body_bytes=max_body)
        port = self.requested_port
        if port is None:
            port = local.local_http_port if local.local_http_port is not None else DEFAULT_PORT
        self._runner = web.AppRunner(self.http.build_app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=self.shutdown_grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, port)
        try:
            await site.start()
        except OSError as exc:
            raise HostStartError(f"cannot listen on {self.bind}:{port}: {exc}") from exc
        self.port = self._runner.addresses[0][1]

        for name, listener in self.listeners.items():
            self._loop_tasks.append(asyncio.create_task(
                self._supervise(listener.run, f"queue listener of '{name}'"), name=f"listener:{name}"))
        for name, runner in self.timers.items():
            self._loop_tasks.append(asyncio.create_task(
                self._supervise(runner.run, f"timer of '{name}'"), name=f"timer:{name}"))
        self._log_function_table()

    def _connection_string(self, info: FunctionInfo) -> str:
        setting = info.attr("connection") or "AzureWebJobsStorage"
        value = self.environ.get(setting) or self.environ.get(f"AzureWebJobs{setting}")
        if not value:
            if any(k.startswith(f"{setting}__") for k in self.environ):
                raise SettingsError(
                    f"connection '{setting}' is identity-based ({setting}__...); the local host needs "
                    "a connection string (e.g. Azurite's) in app setting " + setting)
            raise SettingsError(f"storage connection app setting '{setting}' is not set")
        return value

    def _service(self, conn: str) -> QueueServiceClient:
        service = self._services.get(conn)
        if service is None:
            try:
                # No proxy configured: skip aiohttp's per-request proxy/.netrc lookup (as the app does).
                proxied = any(os.environ.get(n) or os.environ.get(n.lower()) for n in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"))
                options: dict[str, Any] = {} if proxied else {"use_env_settings": False}
                service = QueueServiceClient.from_connection_string(conn, **options)
            except ValueError as exc:
                raise SettingsError(f"invalid storage connection string: {exc}") from None
            self._services[conn] = service
        return service

    def _queue(self, conn: str, service: QueueServiceClient, name: str) -> Any:
        """The REST plumbing when the connection signs with an account key (Azurite's does), else the SDK
        client (a SAS): restqueue.py says why."""
        client = service.get_queue_client(name)
        if conn not in self._accounts:
            self._accounts[conn] = account_of(client)
        account = self._accounts[conn]
        return StorageQueue(client) if account is None else RestQueue(account, client.url, name)

    def _setup_queue(self, info: FunctionInfo) -> None:
        name = resolve_setting_refs(str(info.attr("queue_name", "")), self.environ).strip().lower()
        if not _QUEUE_NAME.match(name) or len(name) + len(POISON_SUFFIX) > 63:
            raise SettingsError(f"invalid queue name {name!r}")
        if info.is_disabled(self.environ):
            logger.info("Function '%s' is disabled (%s)", info.name, info.disabled_setting())
            return
        conn = self._connection_string(info)
        service = self._service(conn)
        queue, poison = self._queue(conn, service, name), self._queue(conn, service, name + POISON_SUFFIX)
        self._queues.extend([queue, poison])
        self.listeners[info.name] = QueueListener(info, queue, poison, self.config.queues, self._require_invoker())

    def _setup_timer(self, info: FunctionInfo) -> None:
        expression = resolve_setting_refs(str(info.attr("schedule", "")), self.environ)
        schedule = parse_schedule(expression)
        runner = TimerRunner(info, schedule, self._require_invoker(), run_on_startup=bool(info.attr("run_on_startup")))
        self.timers[info.name] = runner
        if info.is_disabled(self.environ):
            logger.info("Function '%s' is disabled (%s)", info.name, info.disabled_setting())
            runner.stop()  # still invocable through the admin API

    def _describe_event_hub(self, info: FunctionInfo) -> None:
        hub = str(info.attr("event_hub_name", ""))
        try:
            hub = resolve_setting_refs(hub, self.environ)
        except SettingsError as exc:
            logger.warning("Function '%s': %s", info.name, exc)
        logger.info("Function '%s' (Event Hub '%s', cardinality %s): no Event Hubs locally; "
                    "invoke it with POST /admin/functions/%s", info.name, hub,
                    info.attr("cardinality", "one"), info.name)

    def _log_function_table(self) -> None:
        routes = {r["function"]: r for r in self.http.route_table()} if self.http else {}
        logger.info("Functions:")
        for info in self.functions:
            if info.name in self.function_errors:
                detail = f"DISABLED: {self.function_errors[info.name]}"
            elif info.trigger_type == HTTP_TRIGGER and info.name in routes:
                r = routes[info.name]
                methods = ",".join(r["methods"]) if r["methods"] else "*"
                detail = f"[{methods}] {self.url}{r['route']} (auth {r['auth_level']})"
            elif info.name in self.listeners:
                detail = f"queueTrigger on '{self.listeners[info.name].queue.name}'"
            elif info.name in self.timers:
                detail = f"timerTrigger '{self.timers[info.name].schedule.expression}'"
            else:
                detail = info.trigger_type
            logger.info("    %s: %s", info.name, detail)

    async def _supervise(self, run: Callable, what: str) -> None:
        """Keep a loop alive across unexpected errors (they are bugs: log loudly, restart)."""
        while self.state in ("Starting", "Running"):
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The %s crashed; restarting it in 1s", what)
                await asyncio.sleep(1)

    # -- admin invocation ------------------------------------------------------------------
    def invoke_admin(self, info: FunctionInfo, text: str) -> asyncio.Task:
        """Run a non-HTTP function now with ``text`` as input; the task yields True on success."""
        if self.state != "Running":
            raise ValueError(f"host is {self.state}")
        if info.name in self.function_errors:
            raise ValueError(f"function '{info.name}' is disabled: {self.function_errors[info.name]}")
        invocation_id = str(uuid.uuid4())
        invoker = self._require_invoker()
        if info.trigger_type == QUEUE_TRIGGER:
            now = datetime.now(timezone.utc)
            message = QueueMessage(
                id=invocation_id, body=text.encode("utf-8"), dequeue_count=1, pop_receipt=None,
                insertion_time=now, expiration_time=now + timedelta(days=7), time_next_visible=now,
            )

            async def call() -> None:
                await invoker.invoke(info, message, reason=ADMIN_REASON, invocation_id=invocation_id)
        elif info.trigger_type == TIMER_TRIGGER:
            runner = self.timers.get(info.name)

            async def call() -> None:
                if runner is not None:
                    if not await runner.fire(ADMIN_REASON):
                        raise RuntimeError("timer function failed")
                else:
                    await invoker.invoke(info, TimerRequest(past_due=False), reason=ADMIN_REASON,
                                         invocation_id=invocation_id)
        elif info.trigger_type == EVENT_HUB_TRIGGER:
            events = build_event_hub_events(text)
            many = str(info.attr("cardinality", "one")).lower() == "many"

            async def call() -> None:
                if many:
                    await invoker.invoke(info, events, reason=ADMIN_REASON, invocation_id=invocation_id)
                else:
                    for event in events:
                        await invoker.invoke(info, event, reason=ADMIN_REASON)
        else:
            raise ValueError(f"trigger {info.trigger_type} cannot be invoked through the admin API")

        async def run() -> bool:
            try:
                await call()
                return True
            except asyncio.CancelledError:
                raise
            except Exception:
                return False  # logged by the invoker

        task = asyncio.create_task(run(), name=invocation_id)
        self._admin_tasks.add(task)
        task.add_done_callback(self._admin_tasks.discard)
        return task

    async def invoke(self, name: str, text: str = "") -> bool:
        """In-process convenience: admin-invoke ``name`` and wait for the outcome."""
        info = self.get_function(name)
        if info is None:
            raise KeyError(name)
        return await self.invoke_admin(info, text)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        return {
            "state": self.state,
            "functions": self.function_names,
            "errors": dict(self.function_errors),
            "pid": os.getpid(),
            "url": self.url if self.port else None,
            "routes": self.http.route_table() if self.http else [],
            "timers": {name: runner.status() for name, runner in self.timers.items()},
            "queues": {
                name: {"queue": listener.queue.name, "in_flight": listener.in_flight, **listener.stats}
                for name, listener in self.listeners.items()
            },
        }

    def ready_info(self) -> dict:
        return {
            "url": self.url,
            "port": self.port,
            "pid": os.getpid(),
            "functions": self.function_names,
            "function_key": self.function_key,
            "master_key": self.master_key,
            "app_dir": str(self.app_dir),
            "errors": dict(self.function_errors),
        }

    def _require_invoker(self) -> Invoker:
        if self.invoker is None:
            raise RuntimeError("the host has not been started")
        return self.invoker

    def _write_ready_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.ready_info(), handle)
        os.replace(tmp, path)

    # -- stop ------------------------------------------------------------------------------
    async def stop(self, grace: Optional[float] = None) -> None:
        """Stop triggers, let in-flight invocations finish (up to ``grace`` s), release all."""
        if self.state == "Stopping":
            await self._stopped.wait()
            return
        if self.state in ("Stopped", "Created", "Error"):
            return
        grace = self.shutdown_grace if grace is None else grace
        self.state = "Stopping"
        started = time.monotonic()
        logger.info("Host stopping (grace %.1fs)", grace)
        for listener in self.listeners.values():
            listener.stop()
        for runner in self.timers.values():
            runner.stop()

        def remaining() -> float:
            return max(0.1, grace - (time.monotonic() - started))

        async def drain_tasks(tasks: set) -> None:
            if not tasks:
                return
            _, pending = await asyncio.wait(tasks, timeout=remaining())
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

        await asyncio.gather(
            self._stop_http(),  # stop accepting; in-flight requests get the same grace
            *(listener.drain(remaining()) for listener in self.listeners.values()),
            drain_tasks(set(self._loop_tasks)),
            drain_tasks(set(self._admin_tasks)),
            return_exceptions=True,
        )
        await self._cleanup()
        logger.info("Host stopped after %.1fs", time.monotonic() - started)

    async def _stop_http(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner.cleanup()
            except Exception:
                logger.exception("Error stopping the HTTP server")

    async def _cleanup(self) -> None:
        await self._stop_http()
        if self.http is not None and self.http.easy_auth is not None:
            await self.http.easy_auth.close()
        for task in self._loop_tasks:
            task.cancel()
        for queue in self._queues:
            try:
                await queue.close()
            except Exception:
                pass
        for service in self._services.values():
            try:
                await service.close()
            except Exception:
                pass
        for account in self._accounts.values():
            if account is not None:
                await account.close()
        self._services.clear()
        self._accounts.clear()
        self._queues.clear()
        if self.invoker is not None:
            self.invoker.shutdown()
        if self.ready_file is not None:
            try:
                self.ready_file.unlink()
            except FileNotFoundError:
                pass
        if self.loaded is not None and self.unload_on_stop:
            self.loaded.unload()
        if self.state != "Error":
            self.state = "Stopped"
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> "LocalHost":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()
