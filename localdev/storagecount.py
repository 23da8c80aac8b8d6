"""A loopback TCP proxy in front of Azurite that counts the storage requests passing through it.

The benchmarks measure storage operations from outside the responder: the local host is given
the proxy's ports instead of Azurite's, and every HTTP request it sends (each queue poll, each
table read or write, each entity-group transaction counted once) is counted on the way in.
Bytes are forwarded unchanged; requests are delimited by their headers and ``Content-Length``
(or chunked encoding). It runs on its own event loop in a daemon thread::

    with StorageCounter(azurite.ports) as counter:
        conn = counter.connection_string          # give this to the host
        ...
        counter.counts()                          # {"blob": n, "queue": n, "table": n}
        counter.kinds()                           # {"table POST Incidents": n, "queue GET step-x/messages": n, ...}
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import threading
from typing import Any

from localdev.azurite import HOST, AzuritePorts, connection_string_for, free_port

logger = logging.getLogger(__name__)

SERVICES = ("blob", "queue", "table")
_ENTITY_KEYS = re.compile(r"\(.*?\)")  # Incidents(PartitionKey='..',RowKey='..') -> Incidents()


class _RequestCounter:
    """Counts HTTP/1.1 requests in a client-to-server byte stream."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.body_left = 0
        self.chunked = False
        self.count = 0
        self.kinds: collections.Counter[str] = collections.Counter()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.body_left:
                take = min(self.body_left, len(self.buffer))
                del self.buffer[:take]
                self.body_left -= take
                if self.body_left:
                    return
            if self.chunked:
                if not self._skip_chunks():
                    return
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").lower()
            del self.buffer[:end + 4]
            self.count += 1
            self.kinds[_kind(head.split("\r\n", 1)[0])] += 1
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip() == "content-length":
                    length = int(value.strip() or 0)
                elif name.strip() == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
            self.body_left = length

    def _skip_chunks(self) -> bool:
        """Consume whole chunks; True when the chunked body ended (False: need more bytes)."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(self.buffer[:end]).split(b";")[0] or b"0", 16)
            if size == 0:
                trailer = self.buffer.find(b"\r\n\r\n", end)
                if trailer < 0:
                    return False
                del self.buffer[:trailer + 4]
                self.chunked = False
                return True
            if len(self.buffer) < end + 2 + size + 2:
                return False
            del self.buffer[:end + 2 + size + 2]


def _kind(request_line: str) -> str:
    """``"put /devstoreaccount1/step-x/messages/1?popreceipt=.. http/1.1"`` -> ``"put step-x/messages/{id}"``."""
    method, _, rest = request_line.partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    parts = [p for p in path.split("/") if p][1:]  # drop the account
    if len(parts) > 2 and parts[1] == "messages":
        parts = [parts[0], "messages", "{id}"]
    return " ".join([method.upper(), _ENTITY_KEYS.sub("()", "/".join(parts))])


class StorageCounter:
    """Counting proxies for Azurite's blob, queue and table ports."""

    def __init__(self, upstream: AzuritePorts) -> None:
        self.upstream = upstream
        self.ports = AzuritePorts(free_port(), free_port(), free_port())
        self._counts = {name: 0 for name in SERVICES}
        self._kinds: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._lock = threading.Lock()

    @property
    def connection_string(self) -> str:
        return connection_string_for(self.ports)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def kinds(self) -> dict[str, int]:
        """Requests by service, method and resource (lower case; entity keys and message ids left out)."""
        with self._lock:
            return dict(self._kinds)

    def total(self) -> int:
        return sum(self.counts().values())

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    counter: _RequestCounter | None, service: str) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if counter is not None:
                    before = counter.count
                    counter.feed(data)
                    if counter.count != before:
                        with self._lock:
                            self._counts[service] += counter.count - before
                            for kind, n in counter.kinds.items():
                                self._kinds[f"{service} {kind}"] += n
                        counter.kinds.clear()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # already closed
                pass

    def _handler(self, service: str, port: int) -> Any:
        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(self._pipe(client_reader, up_writer, _RequestCounter(), service),
                                 self._pipe(up_reader, client_writer, None, service))
        return handle

    async def _start(self) -> None:
        for service, mine, theirs in zip(SERVICES, self.ports.as_tuple(), self.upstream.as_tuple()):
            self._servers.append(await asyncio.start_server(self._handler(service, theirs), HOST, mine, backlog=1024))

    def start(self) -> "StorageCounter":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="storage-counter", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        logger.info("storage counter on %s -> Azurite %s", self.ports, self.upstream)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            for server in self._servers:
                server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "StorageCounter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
