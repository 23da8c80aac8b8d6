"""The one base every local-stack child process shares (localdev/process.py): start in its own
process group with output in a log, fail fast with the log tail when the child dies before it
is ready, and stop the whole group (grandchildren included)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from localdev.azurite import AzuriteProcess
from localdev.host.launcher import HostProcess
from localdev.process import ChildProcess, ChildStartError
from localdev.simulator.client import SimulatorProcess


def test_the_three_wrappers_share_the_base():
    assert all(issubclass(cls, ChildProcess) for cls in (AzuriteProcess, HostProcess, SimulatorProcess))


def test_a_child_that_exits_before_it_is_ready_fails_fast_with_its_log_tail(tmp_path: Path):
    child = ChildProcess(tmp_path / "child.log")
    child.spawn([sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"], cwd=tmp_path)
    with pytest.raises(ChildStartError) as err:
        child.wait_until(lambda: None, timeout=30, what="ready")
    assert "code 3" in str(err.value) and "boom: bad config" in str(err.value)
    assert child.returncode == 3


def test_stop_reaches_the_grandchildren_and_removes_the_work_dir(tmp_path: Path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    pid_file = workdir / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(600)\n")
    child = ChildProcess(tmp_path / "child.log", workdir)
    child.spawn([sys.executable, "-c", script], cwd=tmp_path)
    grandchild = int(child.wait_until(lambda: pid_file.read_text() if pid_file.exists() and pid_file.read_text()
                                      else None, timeout=30, what="forked"))
    child.stop(grace=0.5)
    assert not child.is_running() and not workdir.exists()
    # The grandchild was in the child's process group: the SIGKILL reaches it (delivery is
    # asynchronous: wait for it to be gone, or a zombie awaiting its reaper).
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(grandchild, 0)
            state = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        except (ProcessLookupError, FileNotFoundError):
            break
        if state == "Z":
            break
        assert time.monotonic() < deadline, f"grandchild {grandchild} still {state} 10 s after the stop"
        time.sleep(0.05)
