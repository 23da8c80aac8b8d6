"""The embedded local stack: Azurite + tenant simulator + local Functions host.

``LocalStack`` starts the three as child processes on free loopback ports, wires the app
settings between them (storage connection string, Graph/EXO base URLs, the managed
identity endpoint of the simulator, the seeded tenant's group ids), and stops them in
reverse order. The host plays App Service Authentication with the simulator as the Entra ID
token issuer (operator tokens: ``responder token``). ``responder dev`` writes where everything
listens to ``.localdev/stack.json`` so ``responder inject|status|approve|token`` can find it.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdev.azurite import free_port, start_azurite
from localdev.host.launcher import start_host
from localdev.simulator import start_simulator

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".localdev"
STATE_FILE = STATE_DIR / "stack.json"
SEED_FILE = Path(__file__).resolve().parent / "simulator" / "seed.json"


def tenant_settings(seed: dict[str, Any]) -> dict[str, str]:
    """App settings that point the responder at the seeded tenant (group ids, mailboxes)."""
    groups = {g.get("displayName"): g["id"] for g in seed.get("groups", [])}
    tenant = seed.get("tenant", {})
    domain = tenant.get("domain", "contoso.onmicrosoft.com")
    return {
        "TENANT_ID": tenant.get("id", ""),
        "TENANT_DOMAIN": domain,
        "PROTECTED_GROUP_ID": groups.get("Protected accounts", ""),
        "MFA_GROUP_ID": groups.get("MFA required (Conditional Access)", ""),
        "SOC_MAILBOX": f"soc@{domain}",
        "NOTIFY_SENDER": f"breach-responder@{domain}",
    }


@dataclass
class LocalStack:
    overrides: dict[str, str] = field(default_factory=dict)
    seed: dict[str, Any] | None = None
    faults: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None  # the simulator's throttling profile (localdev/simulator/limits.py)
    count_storage: bool = False  # put a request-counting proxy between the hosts and Azurite (benchmarks)
    host_port: int = 0
    with_host: bool = True  # False: storage + simulator only (a benchmark drives the app itself)
    instances: int = 1  # >1: extra hosts on the same storage, as the platform scales out (timers on the first only)
    log_dir: Path = field(default_factory=lambda: STATE_DIR / "logs")
    azurite: Any = None
    simulator: Any = None
    host: Any = None
    extra_hosts: list[Any] = field(default_factory=list)
    storage_counter: Any = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> "LocalStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self.azurite = start_azurite()
            identity_header = secrets.token_urlsafe(24)
            self.simulator = start_simulator(seed=self.seed, faults=self.faults, identity_header=identity_header,
                                             limits=self.limits)
            seed = self.seed or json.loads(SEED_FILE.read_text())
            storage = self.azurite.connection_string
            if self.count_storage:
                from localdev.storagecount import StorageCounter

                self.storage_counter = StorageCounter(self.azurite.ports).start()
                storage = self.storage_counter.connection_string
            env = {
                "AzureWebJobsStorage": storage,
                "GRAPH_BASE_URL": self.simulator.url,
                "EXO_BASE_URL": self.simulator.url,
                "IDENTITY_ENDPOINT": self.simulator.identity_endpoint,
                "IDENTITY_HEADER": identity_header,
                "RESPONDER_MODE": "auto",
                **tenant_settings(seed),
                # The local host plays App Service Authentication with the simulator as Entra ID.
                **self.simulator.easyauth_env(),
            }
            # The host's port is chosen first: the SOC mails link to the console on it (CONSOLE_BASE_URL).
            port = self.host_port or free_port()
            env["CONSOLE_BASE_URL"] = f"http://127.0.0.1:{port}"
            env.update(self.overrides)
            self.env = env
            if not self.with_host:
                return self
            self.host = start_host(str(REPO), env=env, port=port, log_path=str(self.log_dir / "host.log"))
            if self.instances > 1:
                # The platform runs a timer on one instance (a blob lease); here the extra
                # instances simply have their timers disabled, the real host's way.
                extra_env = {**env, **{f"AzureWebJobs.{name}.Disabled": "true" for name in timer_functions()}}
                for index in range(1, self.instances):
                    self.extra_hosts.append(start_host(str(REPO), env=extra_env, log_path=str(self.log_dir / f"host-{index}.log")))
        except BaseException:
            self.stop()
            raise
        from .securescore import trigger_snapshot

        if not trigger_snapshot(self.host.url, self.host.master_key):
            logger.warning("Secure Score snapshot at start-up failed; see the host log in %s", self.log_dir)
        logger.info("local stack up in %.1fs: host %s, simulator %s", time.monotonic() - started, self.host.url, self.simulator.url)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "storage": self.azurite.connection_string,
            "host_url": self.host.url,
            "console_url": f"{self.host.url}/api/console",
            "function_key": self.host.function_key,
            "simulator_url": self.simulator.url,
            "api_client_id": self.simulator.api_client_id,
            "settings": {k: v for k, v in self.env.items() if k not in ("IDENTITY_HEADER",)},
        }

    def write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(STATE_FILE)

    @property
    def host_pids(self) -> list[int]:
        return [h.pid for h in [self.host, *self.extra_hosts] if h is not None]

    def stop(self) -> None:
        for extra in self.extra_hosts:
            try:
                extra.stop()
            except Exception:
                logger.exception("stopping an extra host failed")
        self.extra_hosts = []
        if self.host is not None:
            try:
                self.host.stop()
            except Exception:
                logger.exception("stopping host failed")
            self.host = None
        if self.storage_counter is not None:
            self.storage_counter.stop()
            self.storage_counter = None
        for name in ("host", "simulator", "azurite"):
            proc = getattr(self, name)
            if proc is not None:
                try:
                    proc.stop()
                except Exception:  # keep stopping the rest
                    logger.exception("stopping %s failed", name)
                setattr(self, name, None)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def timer_functions() -> list[str]:
    """Names of the app's timer-triggered functions (read from function_app.app)."""
    import function_app

    return [str(f.get_function_name()) for f in function_app.app.get_functions()
            if any(b.type == "timerTrigger" for b in f.get_bindings())]


def read_state() -> dict[str, Any] | None:
    if not STATE_FILE.exists():
        return None
    try:
        state = json.loads(STATE_FILE.read_text())
    except ValueError:
        return None
    try:
        os.kill(int(state.get("pid", 0)), 0)
    except (OSError, ValueError):
        return None  # the `responder dev` that wrote it is gone
    return state
