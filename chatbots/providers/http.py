"""The HTTP clients the adapters reach their upstreams through.

Replies run as asyncio tasks on the ASGI worker's event loop, thousands of them streaming
at once, so a long-lived loop keeps one pooled client for all of its calls. Any other loop
(a management command, a test, `async_to_sync` in a thread) gets a client per call that is
closed when the call ends: a loop that goes away must leave no socket behind.
"""

import asyncio
import math
import ssl
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from django.conf import settings

from .network import AsyncioBackend


class _Shards:
    """A long-lived loop's clients: several small pools in place of one large one.

    httpcore looks over every connection of a pool each time a request starts or a
    response is closed, so one pool of a thousand streaming connections costs the loop
    a thousand checks (a system call for each idle one) per reply. Split into shards of
    a few dozen, that is a few dozen; a call takes the shard with the fewest calls in
    flight, so a burst finds the connections the last one left.
    """

    def __init__(self) -> None:
        count = max(1, settings.AI_CLIENT_SHARDS)
        # One TLS context for all of them: loading the CA bundle takes milliseconds, each time.
        verify = httpx.create_ssl_context()
        self.clients = [_new_async_client(shards=count, verify=verify) for _ in range(count)]
        self.in_flight = [0] * count

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        index = min(range(len(self.clients)), key=self.in_flight.__getitem__)
        self.in_flight[index] += 1
        try:
            yield self.clients[index]
        finally:
            self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


# The loops marked long-lived, each with its clients once a call needed one.
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shards | None] = weakref.WeakKeyDictionary()


def share_client_on(loop: asyncio.AbstractEventLoop) -> None:
    """Mark `loop` as long-lived: calls made while it runs share pooled clients, created at the first."""
    _shared.setdefault(loop, None)


@asynccontextmanager
async def upstream_client() -> AsyncIterator[httpx.AsyncClient]:
    """Yield one of the running loop's shared clients, or else a client of this call's own, closed on exit."""
    loop = asyncio.get_running_loop()
    if loop in _shared:
        shards = _shared[loop]
        if shards is None:
            shards = _shared[loop] = _Shards()
        async with shards.client() as client:
            yield client
        return
    async with _new_async_client() as client:
        yield client


async def close_shared_client() -> None:
    """Close the running loop's shared clients (at server shutdown) and forget the loop."""
    shards = _shared.pop(asyncio.get_running_loop(), None)
    if shards is not None:
        await shards.aclose()


def sync_client() -> httpx.Client:
    """A blocking client for code that runs outside any event loop (sync_models); close it after use."""
    return httpx.Client(timeout=upstream_timeout(), follow_redirects=True)


def _new_async_client(*, shards: int = 1, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=math.ceil(settings.AI_MAX_CONNECTIONS / shards),
        max_keepalive_connections=math.ceil(settings.AI_MAX_KEEPALIVE / shards),
    )
    # Redirects are followed (an image URL on a CDN often redirects); httpx drops the
    # Authorization header when one leaves the upstream's origin.
    client = httpx.AsyncClient(limits=limits, timeout=upstream_timeout(), follow_redirects=True, verify=verify)
    # httpx builds httpcore's pools (one more per proxy the environment names) and takes no
    # network backend: it is set on each of them here, before any opens a connection.
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            pool._network_backend = _backend
    return client


# Stateless: one serves every pool.
_backend = AsyncioBackend()


def upstream_timeout() -> httpx.Timeout:
    # The read timeout bounds each wait for the next bytes, not a whole reply: a stream may run for minutes.
    return httpx.Timeout(settings.AI_TIMEOUT, connect=settings.AI_CONNECT_TIMEOUT)
