"""The upstream clients' network layer (chatbots/providers/network.py) against real sockets on 127.0.0.1.

Each scenario runs on asyncio's own loop and on uvloop, the one the server runs replies on.
"""

import asyncio
import ssl
import subprocess

import httpx
import pytest
import uvloop

from chatbots.providers.http import _new_async_client
from chatbots.providers.network import AsyncioBackend, AsyncioStream

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    return LOOPS[request.param]


class Server:
    """An HTTP/1.1 server answering every request with `handle(reader, writer)`; it counts connections."""

    def __init__(self, handle, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handle = handle
        self.ssl_context = ssl_context
        self.connections = 0

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if not await self.handle(reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"


async def hello(reader, writer) -> bool:
    writer.write(HEAD + chunked(b"hello"))
    await writer.drain()
    return True


def test_every_pool_of_the_upstream_clients_reads_through_the_asyncio_backend(monkeypatch):
    # A proxy named in the environment gets a pool of its own: it must read the same way.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = _new_async_client()
    pools = [transport._pool for transport in (client._transport, *client._mounts.values()) if transport]

    assert len(pools) == 2
    assert all(isinstance(pool._network_backend, AsyncioBackend) for pool in pools)


def test_a_streamed_body_arrives_piece_by_piece_and_exact(run):
    async def pieces(reader, writer) -> bool:
        writer.write(HEAD)
        for n in range(20):
            writer.write(chunked(b"piece %d;" % n)[:-5])  # each piece a chunk of its own, the end last
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def scenario():
        async with Server(pieces) as server, _new_async_client() as client, client.stream("GET", server.url) as reply:
            stream = reply.extensions["network_stream"]
            received = [part async for part in reply.aiter_raw()]
        return stream, received

    stream, received = run(scenario())

    assert isinstance(stream, AsyncioStream)
    assert b"".join(received) == b"".join(b"piece %d;" % n for n in range(20))
    assert len(received) > 10  # read as the pieces came, not all at the end


def test_a_reader_that_falls_behind_pauses_the_socket_and_still_gets_every_byte(run):
    body = bytes(range(256)) * 8192  # 2 MiB, written at once

    async def large(reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        return True

    async def scenario():
        async with Server(large) as server, _new_async_client() as client, client.stream("GET", server.url) as response:
            parts = response.aiter_raw()
            first = await anext(parts)
            await asyncio.sleep(0.3)  # the rest arrives meanwhile, more than the backend keeps
            paused = response.extensions["network_stream"]._connection.reading_paused
            rest = [part async for part in parts]
        return paused, first + b"".join(rest)

    paused, received = run(scenario())

    assert paused
    assert received == body


def test_an_idle_connection_is_reused_and_one_the_server_closed_is_replaced(run):
    async def once_then_close(reader, writer) -> bool:
        # Answers keep-alive, then hangs up anyway while the connection sits in the pool.
        writer.write(HEAD + chunked(b"once"))
        await writer.drain()
        return False

    async def scenario():
        async with Server(hello) as keeping, Server(once_then_close) as closing, _new_async_client() as client:
            kept = [(await client.get(keeping.url)).text for _ in range(3)]
            first = (await client.get(closing.url)).text
            await asyncio.sleep(0.1)  # the close reaches the client's idle connection
            second = (await client.get(closing.url)).text
        return kept, keeping.connections, [first, second], closing.connections

    kept, kept_connections, closed, closing_connections = run(scenario())

    assert kept == ["hello"] * 3 and kept_connections == 1
    assert closed == ["once"] * 2 and closing_connections == 2


def test_a_silent_server_is_a_read_timeout(run):
    async def silent(reader, writer) -> bool:
        writer.write(HEAD)
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def scenario():
        async with Server(silent) as server, _new_async_client() as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("GET", server.url, timeout=httpx.Timeout(5, read=0.2)) as response:
                    async for _ in response.aiter_raw():
                        pass
            return loop.time() - started

    assert run(scenario()) < 2


def test_the_read_timeout_counts_from_the_last_piece_not_from_the_first(run):
    async def then_silent(reader, writer) -> bool:
        writer.write(HEAD)
        for n in range(6):  # 0.6 s of pieces, each well within the 0.3 s the client waits
            writer.write(chunked(b"%d" % n)[:-5])
            await writer.drain()
            await asyncio.sleep(0.1)
        await asyncio.sleep(5)
        return False

    async def scenario():
        received = []
        async with Server(then_silent) as server, _new_async_client() as client:
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("GET", server.url, timeout=httpx.Timeout(5, read=0.3)) as response:
                    async for part in response.aiter_raw():
                        received.append(part)
        return b"".join(received)

    assert run(scenario()) == b"012345"


def test_a_body_cut_short_is_an_http_error_and_a_refused_connection_a_connect_error(run, refused_base_url):
    async def cut(reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        return False

    async def scenario():
        async with Server(cut) as server, _new_async_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)
            with pytest.raises(httpx.ConnectError):
                await client.get(refused_base_url)

    run(scenario())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made by Debian's openssl: (cert path, key path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_shakes_hands_on_the_same_connection_and_refuses_an_unknown_certificate(run, certificate):
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))

    async def scenario():
        async with Server(hello, ssl_context=served) as server:
            async with _new_async_client(verify=trusted) as client:
                response = await client.get(server.url)
                again = await client.get(server.url)
                tls = response.extensions["network_stream"].get_extra_info("ssl_object")
            async with _new_async_client() as client:  # the system's authorities only
                with pytest.raises(httpx.ConnectError):
                    await client.get(server.url)
        return response.text, again.text, tls, server.connections

    text, again, tls, connections = run(scenario())

    assert (text, again) == ("hello", "hello")
    assert tls is not None and tls.version().startswith("TLS")
    assert connections == 1  # kept alive for both requests (the refused handshake never got to serve)
