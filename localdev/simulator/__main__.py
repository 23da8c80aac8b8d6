"""CLI: python -m localdev.simulator [--host 127.0.0.1] [--port 0] [--seed FILE] [--faults JSON|FILE]
[--limits published|none|JSON] [--limit NAME=VALUE ...] [--ready-file FILE] [--identity-header SECRET]
[--log-level INFO].

``--limits`` picks the throttling profile (limits.py: ``published`` = Microsoft's service limits,
``none`` = no throttle, the default) or takes a whole limits configuration as JSON; ``--limit
dir-write-tenant=1800`` (or ``NAME.window_s=...``) overrides one quota, repeatable.

Binds (port 0 = a free port), writes {"url", "port", "pid", "identity_endpoint", "identity_header",
"tenant_id", "api_client_id"} to the ready file (mode 0600) once listening, logs one line, and runs until SIGTERM/SIGINT.
The identity header secret can also come from the environment variable BREACH_SIM_IDENTITY_HEADER
(preferred over the flag: command lines are visible to other local users); otherwise one is generated.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .app import LoopbackError, Simulator, check_loopback
from .faults import FaultConfigError
from .limits import LimitsConfigError, parse_overrides
from .state import SeedError, load_seed

logger = logging.getLogger(__name__)

IDENTITY_HEADER_ENV = "BREACH_SIM_IDENTITY_HEADER"


def _parse_faults(value: str | None) -> dict | None:
    if not value:
        return None
    text = value.strip()
    if not text.startswith("{"):
        text = Path(value).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise FaultConfigError("--faults must be a JSON object")
    return data


def _write_ready(path: str, info: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    os.replace(tmp, target)


def _limits_config(profile: str, overrides: list[str]) -> dict:
    text = profile.strip()
    config = json.loads(text) if text.startswith("{") else {"profile": text}
    if not isinstance(config, dict):
        raise LimitsConfigError("--limits must be a profile name or a JSON object")
    if overrides:
        merged = dict(config.get("overrides") or {})
        for name, change in parse_overrides(overrides).items():
            merged[name] = {**merged.get(name, {}), **change}
        config["overrides"] = merged
    return config


async def _serve(args: argparse.Namespace, seed: dict | None, faults: dict | None, identity_header: str | None,
                 limits: dict | None = None) -> None:
    sim = Simulator(host=args.host, port=args.port, seed=seed, seed_path=args.seed, faults=faults,
                    identity_header=identity_header, limits=limits)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    if args.ready_file:
        _write_ready(args.ready_file, {
            "url": sim.url, "port": sim.port, "pid": os.getpid(), "identity_endpoint": sim.identity_endpoint,
            "identity_header": sim.identity_header, "tenant_id": sim.core.state.tenant_id,
            "api_client_id": sim.core.operator_issuer.api_client_id})
    try:
        await stop.wait()
    finally:
        logger.info("Tenant simulator stopping")
        await sim.stop()
        if args.ready_file:
            try:
                os.unlink(args.ready_file)
            except FileNotFoundError:
                pass


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m localdev.simulator",
                                     description="Local Microsoft 365 tenant simulator (Graph, Exchange admin API, "
                                                 "managed-identity tokens). Loopback only.")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default), ::1 or localhost only")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--seed", default=None, help="seed JSON file (default: the packaged seed.json)")
    parser.add_argument("--faults", default=None, help="fault configuration: JSON text or a JSON file")
    parser.add_argument("--limits", default="none",
                        help="throttling profile: published (Microsoft's limits), none (default), or a JSON config")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="override one quota's limit (NAME.window_s=... for its window); repeatable")
    parser.add_argument("--ready-file", default=None, help="write url/port/pid JSON here once listening")
    parser.add_argument("--identity-header", default=None,
                        help=f"secret for X-IDENTITY-HEADER (prefer env {IDENTITY_HEADER_ENV})")
    parser.add_argument("--log-level", default=os.environ.get("BREACH_SIM_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        check_loopback(args.host)
    except LoopbackError as exc:
        logger.error("%s", exc)
        return 2
    try:
        seed = load_seed(args.seed) if args.seed else None
        faults = _parse_faults(args.faults)
        limits = _limits_config(args.limits, args.limit)
    except (OSError, ValueError, SeedError, FaultConfigError, LimitsConfigError) as exc:
        logger.error("Invalid configuration: %s", exc)
        return 2
    identity_header = args.identity_header or os.environ.get(IDENTITY_HEADER_ENV) or None
    try:
        asyncio.run(_serve(args, seed, faults, identity_header, limits))
    except (SeedError, FaultConfigError, LimitsConfigError) as exc:
        logger.error("Invalid configuration: %s", exc)
        return 2
    except OSError as exc:
        logger.error("Cannot start the simulator: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
