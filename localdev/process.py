"""One base for the local stack's child processes: Azurite, the tenant simulator, the local host.

Each wrapper (``localdev/azurite.py``, ``localdev/simulator/client.py``,
``localdev/host/launcher.py``) starts its program through ``ChildProcess``: output goes to a
log file, the child runs in its own session (process group) so a stop reaches its children
too, readiness is polled with a deadline that fails fast when the child exits, and ``stop``
is SIGTERM, a grace period, then SIGKILL of the whole group. Idempotent; a context manager.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Self, Sequence, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["ChildProcess", "ChildStartError", "tail"]

T = TypeVar("T")


class ChildStartError(RuntimeError):
    """A child exited before it was ready, or was not ready in time (the message has its log tail)."""


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ChildProcess:
    """A program started by the local stack, with its log file and (optional) private work dir."""

    name = "child"

    def __init__(self, log_path: Path, workdir: Optional[Path] = None) -> None:
        self.process: Optional[subprocess.Popen] = None
        self.log_path = Path(log_path)
        self.workdir = workdir  # removed by stop() when set
        self.returncode: Optional[int] = None

    # -- starting --------------------------------------------------------------------------
    def spawn(self, cmd: Sequence[str], *, cwd: os.PathLike | str, env: Optional[Mapping[str, str]] = None,
              append_log: bool = False) -> subprocess.Popen:
        """Start ``cmd`` in its own session with stdout/stderr to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab" if append_log else "wb")  # noqa: SIM115 - the child owns it
        try:
            self.process = subprocess.Popen(
                list(cmd), cwd=str(cwd), env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.returncode = None
        return self.process

    def wait_until(self, ready: Callable[[], Optional[T]], timeout: float, what: str, poll_s: float = 0.05) -> T:
        """Poll ``ready()`` until it returns something (not None); raise ChildStartError, with
        the log tail, when the child exits first or ``timeout`` passes (the child is then killed)."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.returncode = self.process.returncode
                raise ChildStartError(f"{self.name} exited with code {self.returncode} before {what}; "
                                      f"log {self.log_path}:\n{self.log_tail() or '<empty>'}")
            result = ready()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                output = self.log_tail() or "<empty>"
                self.stop(grace=1.0)
                raise ChildStartError(f"{self.name} not {what} after {timeout:.0f}s; log {self.log_path}:\n{output}")
            time.sleep(poll_s)

    # -- state -----------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def running(self) -> bool:
        return self.is_running()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- stopping --------------------------------------------------------------------------
    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (its own session: pgid == pid)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            if self.process.poll() is None:
                self.process.send_signal(sig)

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL of the whole group after ``grace`` seconds; removes the work dir.
        Returns the exit code. Idempotent."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s pid %d ignored SIGTERM for %.1fs; killing it", self.name, self.process.pid, grace)
                self.signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        self.signal_group(signal.SIGKILL)  # stray grandchildren, if any
        self.returncode = self.process.returncode
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.returncode

    def kill(self) -> Optional[int]:
        """SIGKILL the group at once (chaos tests)."""
        if self.process is None:
            return None
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.returncode = self.process.returncode
        return self.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
