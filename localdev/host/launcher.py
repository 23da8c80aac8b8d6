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
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

from localdev.process import ChildProcess, ChildStartError

logger = logging.getLogger(__name__)

__all__ = ["HostProcess", "HostStartTimeout", "start_host", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class HostStartTimeout(ChildStartError):
    """The host did not become ready (or exited) in time; the message has its log tail."""


class HostProcess(ChildProcess):
    """A ``python -m localdev.host`` child process."""

    name = "local host"

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
        super().__init__(Path(log_path) if log_path else self._workdir / "host.log")
        self.ready_file = self._workdir / "ready.json"
        self.info: dict = {}

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
        self.spawn(cmd, cwd=self.app_dir, env=child_env, append_log=True)
        self._wait_ready(ready_timeout)
        logger.info("Local host pid %d ready at %s (log %s)", self.pid, self.url, self.log_path)
        return self

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> Optional[dict]:
            try:
                return json.loads(self.ready_file.read_text(encoding="utf-8")) or None
            except (OSError, ValueError):
                return None  # not written yet (it is replaced atomically)

        try:
            self.info = self.wait_until(ready, timeout, "ready")
        except ChildStartError as exc:
            raise HostStartTimeout(str(exc)) from None

    def stop(self, grace: Optional[float] = None) -> Optional[int]:
        """SIGTERM, wait ``grace`` (default: shutdown grace + 5 s), then SIGKILL. Returns the exit code."""
        return super().stop(self.shutdown_grace + 5 if grace is None else grace)

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
