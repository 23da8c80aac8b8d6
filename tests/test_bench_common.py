"""The bench's process probes (bench/common.py): what they read from /proc is what they report."""
from __future__ import annotations

import os
import threading
import time

from bench.common import wakeups


def test_wakeups_count_the_sleeps_of_every_live_thread_of_the_process():
    before = wakeups(os.getpid())
    assert before is not None
    napped, release = threading.Event(), threading.Event()

    def nap() -> None:
        for _ in range(20):
            time.sleep(0.001)  # each sleep is a voluntary context switch
        napped.set()
        release.wait()

    sleeper = threading.Thread(target=nap)
    sleeper.start()
    napped.wait()
    during = wakeups(os.getpid())  # the sleeper is alive (waiting), so its switches are listed
    release.set()
    sleeper.join()
    assert during is not None and during >= before + 20


def test_wakeups_of_no_process_is_none():
    assert wakeups(None) is None
    assert wakeups(2**22 + 12345) is None
