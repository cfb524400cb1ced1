"""The HTTP clients the adapters reach their upstreams through.

Replies run as asyncio tasks on the ASGI worker's event loop, thousands of them streaming
at once, so a long-lived loop keeps one pooled client for all of its calls. Any other loop
(a management command, a test, `async_to_sync` in a thread) gets a client per call that is
closed when the call ends: a loop that goes away must leave no socket behind.
"""

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from django.conf import settings

# The loops marked long-lived, each with its client once a call needed one.
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient | None] = weakref.WeakKeyDictionary()


def share_client_on(loop: asyncio.AbstractEventLoop) -> None:
    """Mark `loop` as long-lived: calls made while it runs share one pooled client, created at the first."""
    _shared.setdefault(loop, None)


@asynccontextmanager
async def upstream_client() -> AsyncIterator[httpx.AsyncClient]:
    """Yield the running loop's shared client, or else a client of this call's own, closed on exit."""
    loop = asyncio.get_running_loop()
    if loop in _shared:
        client = _shared[loop]
        if client is None:
            client = _shared[loop] = _new_async_client()
        yield client
        return
    async with _new_async_client() as client:
        yield client


async def close_shared_client() -> None:
    """Close the running loop's shared client (at server shutdown) and forget the loop."""
    client = _shared.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def sync_client() -> httpx.Client:
    """A blocking client for code that runs outside any event loop (sync_models); close it after use."""
    return httpx.Client(timeout=upstream_timeout(), follow_redirects=True)


def _new_async_client() -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.AI_MAX_CONNECTIONS, max_keepalive_connections=settings.AI_MAX_KEEPALIVE
    )
    # Redirects are followed (an image URL on a CDN often redirects); httpx drops the
    # Authorization header when one leaves the upstream's origin.
    return httpx.AsyncClient(limits=limits, timeout=upstream_timeout(), follow_redirects=True)


def upstream_timeout() -> httpx.Timeout:
    # The read timeout bounds each wait for the next bytes, not a whole reply: a stream may run for minutes.
    return httpx.Timeout(settings.AI_TIMEOUT, connect=settings.AI_CONNECT_TIMEOUT)
