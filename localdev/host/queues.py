"""Queue-trigger listener: the real host's polling, batching, retry and poison semantics.

Per queue-triggered function one :class:`QueueListener`:

* receives up to ``batchSize`` messages per request and runs them concurrently; a new batch
  is fetched once the number of running invocations drops to ``newBatchThreshold`` (so at
  most ``batchSize + newBatchThreshold`` run at once, as documented for the real host);
* polls with exponential backoff from 100 ms up to ``maxPollingInterval`` while the queue is
  empty and goes back to fast polling as soon as a message arrives; a wait ends on a grid of its
  own length (:func:`until_next_poll`), so the listeners waiting the same delay poll together and
  a dozen idle queues wake the host once per interval instead of a dozen times (the real host
  randomizes its backoff instead; either way no wait is longer than the delay);
* holds each message invisible while its invocation runs (a lease, renewed at half-time; the
  real host uses 10 minutes, ``LOCALDEV_QUEUE_LEASE_SECONDS`` overrides it);
* success -> delete; failure -> visible again after ``visibilityTimeout``; a failure when
  ``dequeueCount >= maxDequeueCount`` (or a message received with a dequeue count above it,
  e.g. after crashes) -> the stored text is copied to ``<queue>-poison`` and deleted;
* with ``messageEncoding: base64`` the stored text is base64-decoded to the bytes the function
  sees; text that is not base64 is a failed invocation (retried, then poisoned).

Logs carry message id, queue, dequeue count and outcome; never message content.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage  # func.QueueMessage plus dequeue_count etc.

from .functions import FunctionInfo
from .invocation import FunctionTimeout, Invoker
from .settings import MIN_POLLING_INTERVAL, QueueOptions

logger = logging.getLogger(__name__)

__all__ = ["StorageQueue", "QueueListener", "MessageDecodeError", "decode_body", "default_lease_seconds",
           "until_next_poll"]

DEFAULT_LEASE_SECONDS = 600  # the real host's message visibility while a function runs
POISON_SUFFIX = "-poison"


def default_lease_seconds(environ=None) -> int:
    environ = os.environ if environ is None else environ
    try:
        return max(2, int(environ.get("LOCALDEV_QUEUE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


def until_next_poll(now: float, delay: float) -> float:
    """Seconds from ``now`` (loop time) to the next poll: the last multiple of ``delay`` no later than
    ``now + delay``. Listeners waiting the same delay poll at the same instants; no wait is longer than
    the delay (a listener whose wait began off the grid polls early once, then stays on it)."""
    if delay <= 0:
        return 0.0
    return max(0.0, math.floor((now + delay + 1e-6) / delay) * delay - now)


class MessageDecodeError(ValueError):
    """The stored text does not decode under the configured messageEncoding."""


def decode_body(content: Optional[str], encoding: str) -> bytes:
    """Stored queue text -> the bytes a function sees, per host.json messageEncoding."""
    text = content or ""
    if encoding == "none":
        return text.encode("utf-8")
    compact = "".join(text.split())  # .NET's Convert.FromBase64String ignores whitespace
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise MessageDecodeError("message is not valid base64 (host.json messageEncoding is base64)") from None


class StorageQueue:
    """Thin adapter over an ``azure.storage.queue.aio.QueueClient`` (content as stored text)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = client.queue_name
        self._ensured = False

    async def ensure(self) -> None:
        if self._ensured:
            return
        try:
            await self.client.create_queue()
            logger.info("Created queue %s", self.name)
        except ResourceExistsError:
            pass
        self._ensured = True

    async def receive(self, max_messages: int, visibility_timeout: int) -> list:
        pages = self.client.receive_messages(
            messages_per_page=max_messages, visibility_timeout=visibility_timeout
        ).by_page()
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return []
        return [message async for message in page]

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        await self.client.delete_message(message_id, pop_receipt)

    async def set_visibility(self, message_id: str, pop_receipt: str, seconds: int) -> str:
        updated = await self.client.update_message(
            message_id, pop_receipt=pop_receipt, visibility_timeout=seconds
        )
        return updated.pop_receipt

    async def send(self, content: str) -> None:
        await self.client.send_message(content)

    async def close(self) -> None:
        await self.client.close()


@dataclass
class _Lease:
    message_id: str
    pop_receipt: str


class QueueListener:
    """Polls one queue for one function until :meth:`stop`."""

    def __init__(
        self,
        info: FunctionInfo,
        queue: StorageQueue,
        poison: StorageQueue,
        options: QueueOptions,
        invoker: Invoker,
        *,
        lease_seconds: Optional[int] = None,
        min_polling_interval: float = MIN_POLLING_INTERVAL,
        sleep: Optional[Callable[[float], Awaitable[None]]] = None,
    ) -> None:
        """``sleep(seconds)`` waits between polls (default: until the delay passes or stop is
        requested); tests pass their own to see the backoff without waiting for it."""
        self.info = info
        self.queue = queue
        self.poison = poison
        self.options = options
        self.invoker = invoker
        self.lease_seconds = lease_seconds or default_lease_seconds()
        self.min_polling_interval = min(min_polling_interval, options.max_polling_interval)
        self._stopping = asyncio.Event()
        self._sleep = sleep or self._sleep_until_stopped
        self._in_flight: set[asyncio.Task[None]] = set()
        self.stats = {"received": 0, "succeeded": 0, "failed": 0, "poisoned": 0, "max_in_flight": 0,
                      "receive_calls": 0, "max_batch": 0}

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- polling -------------------------------------------------------------------------
    async def run(self) -> None:
        """The polling loop; returns when stop is requested."""
        await self._ensure_queue()
        delay = self.min_polling_interval
        threshold = self.options.new_batch_threshold
        stop_waiter = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if len(self._in_flight) > threshold:
                    await asyncio.wait({*self._in_flight, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await self.queue.receive(self.options.batch_size, self.lease_seconds)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning("Queue %s: receive failed (%s: %s); retrying in %.1fs",
                                   self.queue.name, type(exc).__name__, exc, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, self.options.max_polling_interval)
                    continue
                self.stats["receive_calls"] += 1
                if not messages:
                    await self._sleep(delay)
                    delay = min(delay * 2, self.options.max_polling_interval)
                    continue
                delay = self.min_polling_interval
                self.stats["received"] += len(messages)
                self.stats["max_batch"] = max(self.stats["max_batch"], len(messages))
                for message in messages:
                    task = asyncio.create_task(self._process(message), name=f"queue:{self.queue.name}:{message.id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                self.stats["max_in_flight"] = max(self.stats["max_in_flight"], len(self._in_flight))
        finally:
            stop_waiter.cancel()

    async def _ensure_queue(self) -> None:
        delay = self.min_polling_interval
        while not self._stopping.is_set():
            try:
                await self.queue.ensure()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Queue %s: cannot create/check the queue (%s: %s); retrying",
                               self.queue.name, type(exc).__name__, exc)
                await self._sleep(delay)
                delay = min(delay * 2, self.options.max_polling_interval)

    async def _sleep_until_stopped(self, seconds: float) -> None:
        seconds = until_next_poll(asyncio.get_running_loop().time(), seconds)
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        """Stop fetching new messages (in-flight invocations continue)."""
        self._stopping.set()

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for in-flight invocations, then cancel the rest.

        Returns the number of invocations that had to be cancelled.
        """
        self.stop()
        pending = set(self._in_flight)
        if not pending:
            return 0
        logger.info("Queue %s: waiting up to %.1fs for %d in-flight invocation(s)",
                    self.queue.name, grace, len(pending))
        done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    # -- one message ---------------------------------------------------------------------
    async def _process(self, raw: Any) -> None:
        lease = _Lease(raw.id, raw.pop_receipt)
        dequeue_count = int(raw.dequeue_count or 1)
        max_dequeue = self.options.max_dequeue_count
        settled = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lease, settled))
        try:
            if dequeue_count > max_dequeue:
                # Delivered more often than allowed without a recorded failure (e.g. crashes).
                logger.warning("Queue %s: message %s has dequeue count %d > maxDequeueCount %d",
                               self.queue.name, raw.id, dequeue_count, max_dequeue)
                ok = False
            else:
                ok = await self._invoke(raw, dequeue_count)
        except asyncio.CancelledError:
            settled.set()
            await renewer
            await self._release(lease)
            raise
        except Exception:  # a host bug, not a function failure: never lose the message
            logger.exception("Queue %s: error handling message %s", self.queue.name, raw.id)
            ok = False
        settled.set()
        await renewer
        try:
            await self._settle(raw, lease, dequeue_count, ok)
        except Exception:
            logger.exception("Queue %s: error settling message %s", self.queue.name, raw.id)

    async def _settle(self, raw: Any, lease: _Lease, dequeue_count: int, ok: bool) -> None:
        max_dequeue = self.options.max_dequeue_count
        if ok:
            outcome = "succeeded"
            self.stats["succeeded"] += 1
            try:
                await self.queue.delete(lease.message_id, lease.pop_receipt)
            except Exception as exc:
                logger.warning("Queue %s: message %s succeeded but delete failed (%s); it may be delivered again",
                               self.queue.name, raw.id, type(exc).__name__)
        elif dequeue_count >= max_dequeue:
            outcome = await self._to_poison(raw, lease)
        else:
            self.stats["failed"] += 1
            retry_in = int(self.options.visibility_timeout)
            outcome = f"failed, visible again in {retry_in}s"
            try:
                await self.queue.set_visibility(lease.message_id, lease.pop_receipt, retry_in)
            except Exception as exc:
                logger.warning("Queue %s: could not reset visibility of message %s (%s)",
                               self.queue.name, raw.id, type(exc).__name__)
        logger.info("Queue %s: message %s (dequeue count %d) %s",
                    self.queue.name, raw.id, dequeue_count, outcome)

    async def _invoke(self, raw: Any, dequeue_count: int) -> bool:
        try:
            body = decode_body(raw.content, self.options.message_encoding)
        except MessageDecodeError as exc:
            logger.error("Queue %s: message %s (dequeue count %d) cannot be delivered to 'Functions.%s': %s",
                         self.queue.name, raw.id, dequeue_count, self.info.name, exc)
            return False
        message = QueueMessage(
            id=raw.id,
            body=body,
            pop_receipt=raw.pop_receipt,
            dequeue_count=dequeue_count,
            insertion_time=getattr(raw, "inserted_on", None),
            expiration_time=getattr(raw, "expires_on", None),
            time_next_visible=getattr(raw, "next_visible_on", None),
        )
        try:
            await self.invoker.invoke(
                self.info, message, reason=f"New queue message detected on '{self.queue.name}'.",
                retry_count=dequeue_count - 1, max_retry_count=self.options.max_dequeue_count - 1,
            )
        except (Exception, FunctionTimeout):
            return False  # already logged with its traceback by the invoker
        return True

    async def _to_poison(self, raw: Any, lease: _Lease) -> str:
        try:
            await self.poison.ensure()
            await self.poison.send(raw.content or "")
        except Exception as exc:
            logger.error("Queue %s: could not copy message %s to %s (%s); leaving it for a retry",
                         self.queue.name, raw.id, self.poison.name, type(exc).__name__)
            try:
                await self.queue.set_visibility(lease.message_id, lease.pop_receipt,
                                                int(self.options.visibility_timeout))
            except Exception:
                pass
            self.stats["failed"] += 1
            return "failed (poison copy failed)"
        try:
            await self.queue.delete(lease.message_id, lease.pop_receipt)
        except Exception as exc:
            logger.warning("Queue %s: message %s copied to %s but delete failed (%s)",
                           self.queue.name, raw.id, self.poison.name, type(exc).__name__)
        self.stats["poisoned"] += 1
        logger.warning("Queue %s: message %s moved to poison queue %s after %d attempt(s)",
                       self.queue.name, raw.id, self.poison.name, int(raw.dequeue_count or 1))
        return f"moved to {self.poison.name}"

    async def _renew(self, lease: _Lease, settled: asyncio.Event) -> None:
        interval = max(1.0, self.lease_seconds / 2)
        while True:
            try:
                await asyncio.wait_for(settled.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                lease.pop_receipt = await self.queue.set_visibility(
                    lease.message_id, lease.pop_receipt, self.lease_seconds
                )
            except Exception as exc:
                logger.warning("Queue %s: could not renew the lease of message %s (%s)",
                               self.queue.name, lease.message_id, type(exc).__name__)
                return

    async def _release(self, lease: _Lease) -> None:
        """Interrupted by shutdown: make the message visible again now (at-least-once)."""
        try:
            await asyncio.wait_for(self.queue.set_visibility(lease.message_id, lease.pop_receipt, 0), 5)
            logger.info("Queue %s: message %s interrupted by shutdown; released for redelivery",
                        self.queue.name, lease.message_id)
        except Exception as exc:
            logger.info("Queue %s: message %s interrupted by shutdown; visible again when its lease ends (%s)",
                        self.queue.name, lease.message_id, type(exc).__name__)
