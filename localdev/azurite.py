"""Start and stop Azurite (the Azure Storage emulator) for the local stack and the tests.

::

    with start_azurite() as azurite:             # free ports picked automatically
        conn = azurite.connection_string          # devstoreaccount1, explicit 127.0.0.1 endpoints

Azurite runs in memory (``--inMemoryPersistence``: nothing on disk, a fresh account per
start) on 127.0.0.1. The binary is ``<repo>/node_modules/.bin/azurite`` (``make setup``
installs it from package.json), else ``azurite`` on PATH. ``python -m localdev.azurite``
runs it in the foreground and prints the connection string.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from localdev.process import ChildProcess, ChildStartError

logger = logging.getLogger(__name__)

__all__ = [
    "AzuriteError",
    "AzuritePorts",
    "AzuriteProcess",
    "ACCOUNT_NAME",
    "ACCOUNT_KEY",
    "connection_string_for",
    "find_azurite",
    "free_port",
    "start_azurite",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# The emulator's well-known development account (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"


class AzuriteError(ChildStartError):
    """Azurite is missing, did not start, or did not open its ports in time."""


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int

    def as_tuple(self) -> tuple:
        return (self.blob, self.queue, self.table)


def connection_string_for(ports: AzuritePorts | tuple | dict, host: str = HOST) -> str:
    """Connection string for the dev account on the given (blob, queue, table) ports."""
    if isinstance(ports, dict):
        ports = AzuritePorts(ports["blob"], ports["queue"], ports["table"])
    elif not isinstance(ports, AzuritePorts):
        ports = AzuritePorts(*ports)
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{ports.blob}/{ACCOUNT_NAME};"
        f"QueueEndpoint=http://{host}:{ports.queue}/{ACCOUNT_NAME};"
        f"TableEndpoint=http://{host}:{ports.table}/{ACCOUNT_NAME};"
    )


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _free_ports(count: int, host: str = HOST) -> list:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def find_azurite(repo_root: os.PathLike | str | None = None) -> str:
    """Path of the azurite executable; raises :class:`AzuriteError` telling how to install it."""
    root = Path(repo_root) if repo_root else REPO_ROOT
    local = root / "node_modules" / ".bin" / "azurite"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    on_path = shutil.which("azurite")
    if on_path:
        return on_path
    raise AzuriteError(
        f"Azurite not found (looked for {local} and 'azurite' on PATH). "
        "Run `make setup` (it runs `npm ci` for the pinned Azurite in package.json)."
    )


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class AzuriteProcess(ChildProcess):
    """A running Azurite; also a context manager that stops it on exit."""

    name = "Azurite"

    def __init__(self, ports: AzuritePorts, workdir: Path) -> None:
        super().__init__(workdir / "azurite.log", workdir)
        self.ports = ports
        self.host = HOST

    @property
    def blob_port(self) -> int:
        return self.ports.blob

    @property
    def queue_port(self) -> int:
        return self.ports.queue

    @property
    def table_port(self) -> int:
        return self.ports.table

    @property
    def connection_string(self) -> str:
        return connection_string_for(self.ports, self.host)

    def log_tail(self, lines: int = 30) -> str:
        return super().log_tail(lines) or "<empty>"

    def stop(self, grace: float = 2.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``grace`` seconds (Azurite may ignore SIGTERM after
        serving clients); the whole process group is killed as well. Idempotent."""
        return super().stop(grace)

    def __repr__(self) -> str:
        return f"AzuriteProcess(pid={self.pid}, ports={self.ports})"


def start_azurite(
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    *,
    binary: Optional[str] = None,
    timeout: float = 30.0,
    extra_args: tuple = (),
) -> AzuriteProcess:
    """Start an in-memory Azurite on 127.0.0.1 and wait until its three ports accept TCP.

    A port of 0 means "pick a free one". Raises :class:`AzuriteError` (with Azurite's output
    tail) if it exits early or does not listen within ``timeout`` seconds.
    """
    exe = binary or find_azurite()
    picked = iter(_free_ports(3))  # bound together, so distinct
    ports = AzuritePorts(blob_port or next(picked), queue_port or next(picked), table_port or next(picked))
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    cmd = [
        exe,
        "--inMemoryPersistence",  # cannot be combined with --location
        "--skipApiVersionCheck",
        "--silent",
        "--loose",
        "--blobHost", HOST, "--blobPort", str(ports.blob),
        "--queueHost", HOST, "--queuePort", str(ports.queue),
        "--tableHost", HOST, "--tablePort", str(ports.table),
        *extra_args,
    ]
    azurite = AzuriteProcess(ports, workdir)
    process = azurite.spawn(cmd, cwd=workdir)

    def listening() -> Optional[bool]:
        return True if all(_port_open(p) for p in ports.as_tuple()) else None

    try:
        azurite.wait_until(listening, timeout, f"listening on ports {list(ports.as_tuple())}", poll_s=0.1)
    except ChildStartError as exc:
        azurite.stop(grace=1)
        raise AzuriteError(str(exc)) from None
    logger.info("Azurite pid %d: blob %d, queue %d, table %d", process.pid, *ports.as_tuple())
    return azurite


def main(argv=None) -> int:
    """Foreground Azurite for manual use: prints the connection string, stops on Ctrl-C/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m localdev.azurite", description=main.__doc__)
    parser.add_argument("--blob-port", type=int, default=10000)
    parser.add_argument("--queue-port", type=int, default=10001)
    parser.add_argument("--table-port", type=int, default=10002)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with start_azurite(args.blob_port, args.queue_port, args.table_port) as azurite:
        print(azurite.connection_string, flush=True)
        while not stop["flag"] and azurite.is_running():
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
