"""Run the local Functions host as a subprocess (tests, the local stack, chaos experiments).

::

    with start_host("path/to/app", env={"AzureWebJobsStorage": azurite.connection_string}) as host:
        requests.get(f"{host.url}/api/thing", headers={"x-functions-key": host.function_key})
        host.kill(); host.restart()          # chaos: SIGKILL, then the same app on the same port

The child is ``<this interpreter> -m localdev.host`` in its own session (process group) with
the parent's environment plus ``env`` (``env`` wins; settings files never override either).
stdout/stderr go to a log file (``log_path``); readiness is the ready file the host writes.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

logger = logging.getLogger(__name__)

__all__ = ["HostProcess", "HostStartTimeout", "start_host", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class HostStartTimeout(RuntimeError):
    """The host did not become ready (or exited) in time; the message has its log tail."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class HostProcess:
    """A ``python -m localdev.host`` child process."""

    def __init__(
        self,
        app_dir: os.PathLike | str,
        env: Optional[Mapping[str, str]] = None,
        *,
        port: int = 0,
        settings: Optional[str] = None,
        log_level: str = "INFO",
        log_path: Optional[os.PathLike | str] = None,
        shutdown_grace: float = 10.0,
        ready_timeout: float = 60.0,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.env = dict(env or {})
        self.requested_port = port
        self.settings = str(Path(settings).resolve()) if settings else None  # the child's cwd is app_dir
        self.log_level = log_level
        self.shutdown_grace = shutdown_grace
        self.ready_timeout = ready_timeout
        self._workdir = Path(tempfile.mkdtemp(prefix="localhost-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "host.log"
        self.ready_file = self._workdir / "ready.json"
        self.process: Optional[subprocess.Popen] = None
        self.info: dict = {}
        self.returncode: Optional[int] = None

    # -- info from the ready file ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def port(self) -> int:
        return self.info["port"]

    @property
    def function_key(self) -> str:
        return self.info["function_key"]

    @property
    def master_key(self) -> str:
        return self.info["master_key"]

    @property
    def functions(self) -> list:
        return list(self.info.get("functions", []))

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout: float = 10.0) -> dict:
        """``GET /admin/host/status`` with the master key."""
        request = urllib.request.Request(f"{self.url}/admin/host/status",
                                         headers={"x-functions-key": self.master_key})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, ready_timeout: Optional[float] = None) -> "HostProcess":
        if self.is_running():
            raise RuntimeError("host process already running")
        ready_timeout = self.ready_timeout if ready_timeout is None else ready_timeout
        try:
            self.ready_file.unlink()
        except FileNotFoundError:
            pass
        # After the first start keep the same port, so URLs stay valid across restarts.
        port = self.info.get("port", self.requested_port)
        cmd = [sys.executable, "-m", "localdev.host", "--app-dir", str(self.app_dir), "--port", str(port),
               "--ready-file", str(self.ready_file), "--log-level", self.log_level,
               "--shutdown-grace", str(self.shutdown_grace)]
        if self.settings:
            cmd += ["--settings", str(self.settings)]
        child_env = dict(os.environ)
        child_env.update(self.env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                cmd, cwd=str(self.app_dir), env=child_env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.returncode = None
        self._wait_ready(ready_timeout)
        logger.info("Local host pid %d ready at %s (log %s)", self.pid, self.url, self.log_path)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None, "started before waiting"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.returncode = self.process.returncode
                raise HostStartTimeout(
                    f"local host exited with code {self.returncode} before it was ready; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}")
            if self.ready_file.exists():
                try:
                    self.info = json.loads(self.ready_file.read_text(encoding="utf-8"))
                    return
                except ValueError:
                    pass  # replaced atomically, so this is unexpected; try again
            time.sleep(0.05)
        self._signal_group(signal.SIGKILL)
        raise HostStartTimeout(
            f"local host not ready after {timeout:.0f}s; log {self.log_path}:\n{_tail(self.log_path)}")

    def _signal_group(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # own session: pgid == pid
        except ProcessLookupError:
            pass
        except PermissionError:
            self.process.send_signal(sig)

    def stop(self, grace: Optional[float] = None) -> Optional[int]:
        """SIGTERM, wait ``grace`` (default: shutdown grace + 5 s), then SIGKILL. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            grace = self.shutdown_grace + 5 if grace is None else grace
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("Local host pid %d ignored SIGTERM for %.0fs; killing it", self.pid, grace)
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # stray children, if any
        self.returncode = self.process.returncode
        return self.returncode

    def kill(self) -> Optional[int]:
        """SIGKILL the host at once (chaos tests): in-flight messages reappear after their lease."""
        if self.process is None:
            return None
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.returncode = self.process.returncode
        return self.returncode

    def restart(self, grace: Optional[float] = None, ready_timeout: Optional[float] = None) -> "HostProcess":
        """Stop (if running) and start again on the same port."""
        if self.is_running():
            self.stop(grace)
        return self.start(ready_timeout)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if self.process is None:
            return None
        self.returncode = self.process.wait(timeout=timeout)
        return self.returncode

    def __enter__(self) -> "HostProcess":
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HostProcess(app_dir={str(self.app_dir)!r}, pid={self.pid}, url={self.info.get('url')!r})"


def start_host(
    app_dir: os.PathLike | str,
    env: Optional[Mapping[str, str]] = None,
    port: int = 0,
    ready_timeout: float = 60.0,
    *,
    settings: Optional[str] = None,
    log_level: str = "INFO",
    log_path: Optional[os.PathLike | str] = None,
    shutdown_grace: float = 10.0,
) -> HostProcess:
    """Spawn ``python -m localdev.host`` for ``app_dir`` and wait until it is ready."""
    host = HostProcess(app_dir, env, port=port, settings=settings, log_level=log_level, log_path=log_path,
                       shutdown_grace=shutdown_grace, ready_timeout=ready_timeout)
    return host.start()
