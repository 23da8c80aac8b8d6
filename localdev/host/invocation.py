"""Calling user functions: async ones on the host's loop, sync ones in a thread pool.

Every invocation gets an id, a ``func.Context`` when the function declares a ``context``
parameter, the host.json ``functionTimeout`` and the real host's "Executing"/"Executed" log
lines. Failures are logged with the exception and traceback but never with trigger payloads.

A timed-out ``async def`` function is cancelled. A timed-out plain ``def`` function cannot
be stopped from outside its thread: the invocation counts as failed and the thread runs on
in the background (the real platform would recycle the worker process).
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import azure.functions as func

from .functions import FunctionInfo

logger = logging.getLogger(__name__)

__all__ = ["FunctionTimeout", "Invoker", "InvocationContext", "default_thread_count"]

DEFAULT_THREAD_COUNT = 4


class FunctionTimeout(Exception):
    """The invocation exceeded host.json's functionTimeout."""


def default_thread_count(environ=None) -> int:
    """``PYTHON_THREADPOOL_THREAD_COUNT`` (as the Python worker reads it), default 4."""
    environ = os.environ if environ is None else environ
    raw = environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_THREAD_COUNT
    return max(1, min(value, 32))


class _TraceContext(func._abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict:
        return {}


class _RetryContext(func._abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self):
        return None


class InvocationContext(func.Context):
    """The ``context`` argument of a user function."""

    def __init__(self, invocation_id: str, info: FunctionInfo, retry_count: int = 0,
                 max_retry_count: int = 0) -> None:
        self._invocation_id = invocation_id
        self._function_name = info.name
        self._function_directory = info.directory
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id
        self._trace = _TraceContext()
        self._retry = _RetryContext(retry_count, max_retry_count)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self):
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self):
        return self._trace

    @property
    def retry_context(self):
        return self._retry


class Invoker:
    """Runs user functions with the configured timeout and thread pool."""

    def __init__(self, *, function_timeout: Optional[float] = None, thread_count: Optional[int] = None):
        self.function_timeout = function_timeout
        self.thread_count = thread_count or default_thread_count()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._busy_lock = threading.Lock()
        self.busy_threads = 0  # sync invocations currently running in the pool

    def _run_sync(self, fn, kwargs: dict) -> Any:
        with self._busy_lock:
            self.busy_threads += 1
        try:
            return fn(**kwargs)
        finally:
            with self._busy_lock:
                self.busy_threads -= 1

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.thread_count, thread_name_prefix="localhost-func"
            )
        return self._executor

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def invoke(
        self,
        info: FunctionInfo,
        trigger_value: Any,
        *,
        reason: str,
        invocation_id: Optional[str] = None,
        retry_count: int = 0,
        max_retry_count: int = 0,
    ) -> Any:
        """Call the function; returns its result or raises its exception.

        Raises :class:`FunctionTimeout` when functionTimeout is exceeded and lets
        ``asyncio.CancelledError`` through (host shutdown).
        """
        invocation_id = invocation_id or str(uuid.uuid4())
        kwargs = {info.arg_name: trigger_value}
        if info.wants_context:
            kwargs["context"] = InvocationContext(invocation_id, info, retry_count, max_retry_count)
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", info.name, reason, invocation_id)
        started = time.monotonic()
        try:
            result = await self._call(info, kwargs)
        except FunctionTimeout:
            logger.error(
                "Timeout value of %s seconds exceeded by function 'Functions.%s' (Id: %s)",
                self.function_timeout, info.name, invocation_id,
            )
            self._log_done(info, invocation_id, started, "Failed")
            raise
        except asyncio.CancelledError:
            self._log_done(info, invocation_id, started, "Cancelled")
            raise
        except Exception:
            logger.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                info.name, invocation_id, (time.monotonic() - started) * 1000,
            )
            raise
        self._log_done(info, invocation_id, started, "Succeeded")
        return result

    @staticmethod
    def _log_done(info: FunctionInfo, invocation_id: str, started: float, outcome: str) -> None:
        logger.info(
            "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)",
            info.name, outcome, invocation_id, (time.monotonic() - started) * 1000,
        )

    async def _call(self, info: FunctionInfo, kwargs: dict) -> Any:
        if info.is_async:
            awaitable = info.user_function(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            call = functools.partial(ctx.run, self._run_sync, info.user_function, kwargs)
            awaitable = loop.run_in_executor(self.executor, call)
        if self.function_timeout is None:
            return await awaitable
        try:
            async with asyncio.timeout(self.function_timeout) as scope:
                return await awaitable
        except TimeoutError as exc:
            if scope.expired():
                raise FunctionTimeout(f"function exceeded {self.function_timeout}s") from None
            raise exc
