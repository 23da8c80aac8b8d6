"""Timer-trigger runner: NCRONTAB schedules, runOnStartup, one invocation at a time.

Like the real host, a timer function never overlaps itself: the next occurrence is computed
after an invocation finishes, so occurrences missed while it ran are skipped. Exceptions are
logged and never stop the timer or the host.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Optional

from azure.functions.timer import TimerRequest

from .functions import FunctionInfo
from .invocation import Invoker
from .ncrontab import Schedule

logger = logging.getLogger(__name__)

__all__ = ["TimerRunner"]


class TimerRunner:
    """Fires one timer function on its schedule until :meth:`stop`."""

    def __init__(self, info: FunctionInfo, schedule: Schedule, invoker: Invoker, *, run_on_startup: bool) -> None:
        self.info = info
        self.schedule = schedule
        self.invoker = invoker
        self.run_on_startup = run_on_startup
        self.next_fire: Optional[datetime] = None
        self.last_fire: Optional[datetime] = None
        self.runs = 0
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._current: Optional[asyncio.Task] = None

    async def run(self) -> None:
        if self.run_on_startup and not self._stopping.is_set():
            await self.fire("Timer fired at startup (runOnStartup)")
        while not self._stopping.is_set():
            now = datetime.now(timezone.utc)
            self.next_fire = self.schedule.next_after(now)
            wait = (self.next_fire - now).total_seconds()
            logger.debug("Timer 'Functions.%s' next fires at %s", self.info.name, self.next_fire.isoformat())
            try:
                await asyncio.wait_for(self._stopping.wait(), max(0.0, wait))
                return
            except asyncio.TimeoutError:
                pass
            await self.fire("Timer fired")

    async def fire(self, reason: str) -> bool:
        """Run the function now (serialised with scheduled runs). True on success."""
        async with self._lock:
            self.last_fire = datetime.now(timezone.utc)
            self.runs += 1
            self._current = asyncio.current_task()
            try:
                await self.invoker.invoke(self.info, TimerRequest(past_due=False), reason=reason)
                return True
            except asyncio.CancelledError:
                raise
            except Exception:
                return False  # logged by the invoker; a timer failure never stops the host
            finally:
                self._current = None

    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict:
        return {
            "schedule": self.schedule.expression,
            "next": self.next_fire.isoformat() if self.next_fire else None,
            "last": self.last_fire.isoformat() if self.last_fire else None,
            "runs": self.runs,
        }

