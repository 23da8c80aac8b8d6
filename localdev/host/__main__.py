"""``python -m localdev.host``: run a function app locally, like ``func start``.

Flags: ``--app-dir DIR`` (default: current directory), ``--settings FILE`` (default:
local.settings.json, else local.settings.sample.json in the app dir), ``--port N`` (default:
Host.LocalHttpPort from the settings, else 7071; 0 picks a free port), ``--ready-file FILE``
(JSON written once listening: url, port, pid, functions, function_key, master_key),
``--log-level`` (default INFO), ``--shutdown-grace SECONDS`` (default 10).

SIGTERM/SIGINT stop gracefully (exit 0); a second signal exits at once. Exit 1 when the host
cannot start (the reason is logged).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .runtime import DEFAULT_SHUTDOWN_GRACE, HostStartError, LocalHost

logger = logging.getLogger("localdev.host")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json")
    parser.add_argument("--settings", default=None, help="settings file (default: local.settings[.sample].json)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (0 = any free port)")
    parser.add_argument("--ready-file", default=None, help="write host info JSON here once ready")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    parser.add_argument("--shutdown-grace", type=float, default=DEFAULT_SHUTDOWN_GRACE,
                        help="seconds in-flight invocations get on shutdown")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stderr,
    )
    # The Azure SDK logs every request (with headers) at INFO: keep it to warnings.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(args: argparse.Namespace) -> int:
    host = LocalHost(
        args.app_dir, settings_file=args.settings, port=args.port, ready_file=args.ready_file,
        shutdown_grace=args.shutdown_grace, unload_on_stop=False,
    )
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop_requested.is_set():
            logger.warning("Second %s: exiting immediately", signame)
            logging.shutdown()
            os._exit(1)
        logger.info("Received %s; shutting down", signame)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await host.start()
    except HostStartError as exc:
        logger.error("Host failed to start: %s", exc)
        return 1
    await stop_requested.wait()
    await host.stop()
    if host.invoker is not None and host.invoker.busy_threads:
        logger.warning("%d synchronous invocation(s) still running after the grace period; exiting anyway",
                       host.invoker.busy_threads)
        logging.shutdown()
        os._exit(0)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
