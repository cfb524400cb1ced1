"""The sockets under the upstream clients: httpcore's network layer written on asyncio's protocols.

httpcore reaches the network through a small backend interface (connect, read, write,
start TLS, close). Its own backend goes through anyio, which opens a cancel scope for
every read: with a thousand replies streaming, each of their pieces paid for a scope,
a deadline and the task lookups that come with them, about a fifth of what reading a
piece costs. This backend is the same interface on an asyncio protocol: bytes the loop
receives are kept until httpcore reads them, and a read that has to wait arms one
timer. It runs on any asyncio loop (uvloop's in the server).
"""

import asyncio
import collections
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
from httpcore._backends.base import SOCKET_OPTION
from httpcore._utils import is_socket_readable

# Past this many bytes received and not yet read, the loop stops reading the socket until
# they are: a slow reader leaves the rest in the kernel's buffers, not in this process.
_READ_LIMIT = 256 * 1024


class _Connection(asyncio.Protocol):
    """One connection's protocol: received bytes in order, and who waits for them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.readable: asyncio.Future | None = None
        self.writable: asyncio.Future | None = None
        # The read timeout: when the waiting read fails, and the one timer that checks it.
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        _wake(self.readable)
        if self.buffered > _READ_LIMIT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.readable)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        _wake(self.readable)
        _wake(self.writable)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def wait_readable(self, timeout: float | None) -> asyncio.Future:
        """A future for the next bytes, failed with TimeoutError if none come within `timeout` seconds.

        A stream waits for every piece, so the timer is not armed and cancelled each time: the
        wait moves the deadline, and the timer, when it fires early, sets itself again for it.
        """
        loop = asyncio.get_running_loop()
        self.readable = loop.create_future()
        if timeout is not None:
            self.deadline = loop.time() + timeout
            if self.timer is None or self.timer.when() > self.deadline:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = loop.call_at(self.deadline, self._check_deadline)
        return self.readable

    def _check_deadline(self) -> None:
        self.timer = None
        readable = self.readable
        if readable is None or readable.done():
            return  # nothing waits: the next wait arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            readable.set_exception(TimeoutError())
        else:
            self.timer = loop.call_at(self.deadline, self._check_deadline)

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        _wake(writable)


def _wake(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        while not connection.chunks:
            if connection.error is not None:
                raise httpcore.ReadError(str(connection.error) or type(connection.error).__name__)
            if connection.eof:
                return b""
            try:
                await connection.wait_readable(timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading from the upstream") from None
            finally:
                connection.readable = None
        data = connection.chunks.popleft()
        if len(data) > max_bytes:
            connection.chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        connection.buffered -= len(data)
        if connection.reading_paused and connection.buffered <= _READ_LIMIT // 4:
            connection.reading_paused = False
            connection.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        transport = connection.transport
        if connection.error is not None or transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        if connection.writable is not None:
            try:
                async with asyncio.timeout(timeout):  # rare: only while the kernel's buffer is full
                    await connection.writable
            except TimeoutError:
                raise httpcore.WriteTimeout("timed out writing to the upstream") from None
            if connection.error is not None:
                raise httpcore.WriteError(str(connection.error))

    async def aclose(self) -> None:
        transport = self._connection.transport
        if transport is not None:
            transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        connection = self._connection
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                connection.transport,
                connection,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        connection.transport = transport
        return self

    def get_extra_info(self, info: str) -> Any:
        connection = self._connection
        transport = connection.transport
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # httpcore asks before reusing an idle connection: bytes or an end already
            # received mean the server closed it (or broke the protocol).
            if connection.chunks or connection.eof or transport.is_closing():
                return True
            return is_socket_readable(transport.get_extra_info("socket"))
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local_addr = (local_address, 0) if local_address else None
        # asyncio sets TCP_NODELAY on the TCP connections it opens.
        connecting = loop.create_connection(_Connection, host, port, local_addr=local_addr)
        return await _connect(connecting, f"{host}:{port}", timeout, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        connecting = asyncio.get_running_loop().create_unix_connection(_Connection, path)
        return await _connect(connecting, path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(connecting, where: str, timeout: float | None, socket_options) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout):
            _, connection = await connecting
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"timed out connecting to {where}") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock = connection.transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(connection)
